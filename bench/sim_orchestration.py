#!/usr/bin/env python3
"""crossnix's orchestration overhead on 300+ simulated targets: seconds per target and peak memory.

Every target is an asyncssh server in this process (its own 127.x address and host key, public-key auth,
known_hosts verified); behind the SSH layer the target is a Python model of deploy/target.sh
(tests/simtarget.py), and the copy step is a no-op. What is measured is crossnix itself: SSH connections,
the remote commands of every stage, the per-stage limits, events, log files and the report. The servers
share the process and its CPU, so the figures are an upper bound of the client's own cost.

    python bench/sim_orchestration.py [--targets 320] [--parallel 10 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crossnix_tasks.inventory import DeploySettings  # noqa: E402
from tests.rig.simfleet import SimFleet  # noqa: E402
from tests.simtarget import HANDLERS, initial_state, sim_deployment  # noqa: E402

TOPLEVEL = "/nix/store/00000000000000000000000000000000-nixos-system-sim"


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def one_run(count: int, parallel: int, work: Path) -> None:
    async with SimFleet(count, handlers=HANDLERS, initial_state=initial_state) as sim:
        before = rss_mib()
        deployment = sim_deployment(
            sim, work / f"p{parallel}", TOPLEVEL, settings=DeploySettings(), parallel=parallel,
            log_dir=work / f"p{parallel}" / "logs",
        )
        cpu0 = time.process_time()
        started = time.monotonic()
        report = await deployment.run()
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu0
        ok = sum(1 for t in report.targets if t.result == "ok")
        assert ok == count, f"{count - ok} targets failed"
        print(
            f"{count} targets, --parallel {parallel:<3}: {elapsed:6.2f} s wall, {elapsed / count * 1000:6.1f} ms/target, "
            f"CPU {cpu / count * 1000:5.1f} ms/target (servers included); "
            f"RSS {before:.0f} → {rss_mib():.0f} MiB, process peak {peak_rss_mib():.0f} MiB; "
            f"{sim.stats.connections_total} SSH connections"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=320)
    parser.add_argument("--parallel", type=int, nargs="+", default=[10, 50])
    args = parser.parse_args()
    os.environ.pop("SSH_AUTH_SOCK", None)
    work = Path(tempfile.mkdtemp(prefix="cxsim-", dir="/tmp"))
    print(f"simulated fleet (asyncssh servers in this process), {os.cpu_count()} CPUs")
    for parallel in args.parallel:
        await one_run(args.targets, parallel, work)


if __name__ == "__main__":
    asyncio.run(main())
