#!/usr/bin/env python3
"""Wall time to deploy one small closure to N loopback targets: crossnix vs a sequential per-host loop.

The baseline is what `nixos-rebuild switch --target-host` does for each host, one host after the other
(nixos-rebuild-ng's command sequence, with its SSH ControlMaster multiplexing):

    nix copy --to ssh-ng://HOST TOPLEVEL
    ssh HOST test -f TOPLEVEL/nixos-version
    ssh HOST nix-env -p /nix/var/nix/profiles/system --set TOPLEVEL
    ssh HOST test -d /run/systemd/system
    ssh HOST TOPLEVEL/bin/switch-to-configuration switch

crossnix runs its whole pipeline (fleet-key signing, copy, checks, detached activation with magic rollback
armed, verification through a fresh login, confirmation) with its default parallelism. Each side gets its own
N fresh targets (real sshd, private empty /nix each, from crossnix_tasks.localfleet) and the same closure
(a fake NixOS toplevel of 2 store paths). Both run in this process, one after the other; the figures printed
are measured in this run. Needs root, nix-bin, openssh-server.

    python bench/deploy_fleet.py [--targets 50] [--parallel 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crossnix_tasks import ssh  # noqa: E402
from crossnix_tasks.build import SystemsBuilt  # noqa: E402
from crossnix_tasks.deploy.events import EventSink  # noqa: E402
from crossnix_tasks.deploy.pipeline import Deployment, DeployOptions, nix_copy  # noqa: E402
from crossnix_tasks.inventory import DeploySettings, Target  # noqa: E402
from crossnix_tasks.localfleet import LocalFleet, LocalTarget, unavailable_reason  # noqa: E402
from tests.rig.fakesystem import build_fake_system, generate_signing_key, sign_paths  # noqa: E402

NIX_CONFIG = "experimental-features = nix-command flakes\nbuild-users-group =\nsubstituters ="
PROFILE = "/nix/var/nix/profiles/system"


def baseline_ssh_config(fleet: LocalFleet, targets: Sequence[LocalTarget], control_dir: Path) -> Path:
    lines = []
    for t in targets:
        lines += [f"Host {t.name}", "  HostName 127.0.0.1", f"  Port {t.port}", "  User root", ""]
    lines += [
        "Host *",
        f"  IdentityFile {fleet.client_key}",
        "  IdentitiesOnly yes",
        "  IdentityAgent none",
        f"  UserKnownHostsFile {fleet.known_hosts}",
        "  StrictHostKeyChecking yes",
        "  BatchMode yes",
        "  ControlMaster auto",
        f"  ControlPath {control_dir}/%C",
        "  ControlPersist 60",
        "",
    ]
    path = fleet.root / "baseline_ssh_config"
    path.write_text("\n".join(lines))
    return path


def sequential(fleet: LocalFleet, targets: Sequence[LocalTarget], toplevel: str) -> float:
    control = Path(tempfile.mkdtemp(prefix="cxb-", dir="/tmp"))
    config = baseline_ssh_config(fleet, targets, control)
    env = {**os.environ, "NIX_CONFIG": NIX_CONFIG, "NIX_SSHOPTS": f"-F {config}"}
    started = time.monotonic()
    for t in targets:
        steps = [
            ["nix", "copy", "--no-check-sigs", "--to", f"ssh-ng://{t.name}", toplevel],
            ["ssh", "-F", str(config), t.name, "test", "-f", f"{toplevel}/nixos-version"],
            ["ssh", "-F", str(config), t.name, "nix-env", "-p", PROFILE, "--set", toplevel],
            ["ssh", "-F", str(config), t.name, "test", "-d", "/run/systemd/system"],
            ["ssh", "-F", str(config), t.name, f"{toplevel}/bin/switch-to-configuration", "switch"],
        ]
        for argv in steps:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            if done.returncode not in (0, 1) or (done.returncode == 1 and "systemd" not in argv[-1]):
                raise SystemExit(f"baseline step failed on {t.name} (rc {done.returncode}): {argv}\n{done.stderr}{done.stdout}")
    elapsed = time.monotonic() - started
    for t in targets:  # close the multiplexed connections
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", t.name], capture_output=True, check=False)
    return elapsed


async def crossnix(fleet: LocalFleet, targets: Sequence[LocalTarget], toplevel: str, parallel: int,
                   work: Path) -> tuple[float, int]:
    key = generate_signing_key(work / "keys", "crossnix-bench-1")
    settings = DeploySettings()
    inventory = [
        Target(name=t.name, board="generic-uefi", system="x86_64-linux", host=t.host, port=t.port,
               identity_file=fleet.client_key, known_hosts=fleet.known_hosts, deploy=settings)
        for t in targets
    ]

    async def build(selected: Sequence[Target], log: Callable[[str], None]) -> SystemsBuilt:
        return SystemsBuilt({t.name: toplevel for t in selected}, {})

    async def sign(paths: Sequence[str]) -> None:
        await asyncio.to_thread(sign_paths, key, list(paths))

    deployment = Deployment(
        inventory,
        ssh_env=ssh.SshEnv(state_dir=work / ".crossnix", home=work / "home", connect_timeout=30),
        build=build,
        copy=nix_copy,
        options=DeployOptions(parallel=parallel),
        sink=EventSink(work / ".crossnix" / "logs"),
        sign=sign,
    )
    started = time.monotonic()
    report = await deployment.run()
    elapsed = time.monotonic() - started
    ok = sum(1 for t in report.targets if t.result == "ok")
    return elapsed, ok


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=10, help="crossnix --parallel (its default is 10)")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    os.environ["NIX_CONFIG"] = NIX_CONFIG
    os.environ.pop("SSH_AUTH_SOCK", None)
    toplevel = build_fake_system("bench-small", nonce=str(time.time_ns()))
    n = args.targets
    work = Path(tempfile.mkdtemp(prefix="cxbench-", dir="/tmp"))
    async with LocalFleet() as seq_fleet, LocalFleet() as cx_fleet:
        seq_targets = await seq_fleet.start([f"seq{i:03d}" for i in range(n)])
        cx_targets = await cx_fleet.start([f"cx{i:03d}" for i in range(n)])
        print(f"{n} loopback sshd targets per side, closure {toplevel} (2 store paths), {os.cpu_count()} CPUs")
        seq = await asyncio.to_thread(sequential, seq_fleet, seq_targets, toplevel)
        assert all(t.current_system() == toplevel for t in seq_targets), "baseline did not switch every target"
        cx, ok = await crossnix(cx_fleet, cx_targets, toplevel, args.parallel, work)
        assert ok == n and all(t.current_system() == toplevel for t in cx_targets), f"crossnix: {ok}/{n} ok"
    print(f"sequential ssh + nix copy loop : {seq:7.2f} s  ({seq / n:.3f} s/target)")
    print(f"crossnix deploy --parallel {args.parallel:<3} : {cx:7.2f} s  ({cx / n:.3f} s/target)")
    print(f"speed-up (sequential / crossnix): {seq / cx:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
