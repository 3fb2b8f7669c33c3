#!/usr/bin/env python3
"""crossnix's evaluation + build overhead against calling `nix build` directly on the same installables.

For N = 1, 10, 50 targets (a mix of the three boards, all cross-compiled) of a project on the offline nixpkgs
stand-in (tests/standin, NOT nixpkgs), side by side in one run:

  crossnix  `build_toplevels(project, targets)`: builds the JSON spec in Python, one `nix eval` of eval.nix
            for the selection, one `nix build` of the derivations.
  direct    `nix build --no-link --json --impure -f eval.nix --argstr specFile SPEC targets.<t>.toplevel ...`
            on the same spec (prepared beforehand, not timed): the same installables in a single Nix process.

"warm": everything already built (pure evaluation and bookkeeping overhead; median of --repeat runs).
"cold": fresh target names, so every toplevel (and its etc) really builds; the shared kernel, initrd, ...
are in the store from the warm-up. Also prints the number of Nix processes crossnix started for the
selection, which must not grow with N.

    python bench/build_overhead.py [--sizes 1,10,50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crossnix_tasks import build, evaluator, probe, process  # noqa: E402
from crossnix_tasks.evaluator import TargetRequest  # noqa: E402
from crossnix_tasks.inventory import Target  # noqa: E402
from crossnix_tasks.project import Project  # noqa: E402
from tests.nixfixtures import NIX_TEST_CONFIG, lock_project, write_standin_project  # noqa: E402

BOARDS = [("rpi4", None), ("generic-uefi", "x86_64-linux"), ("hifive-unmatched", None), ("generic-uefi", "aarch64-linux")]


def boards_toml(prefix: str, n: int) -> str:
    lines = ["[defaults]", 'build = "cross"', 'modules = ["hosts/common.nix"]', ""]
    for i in range(n):
        board, system = BOARDS[i % len(BOARDS)]
        lines += [f"[targets.{prefix}{i}]", f'board = "{board}"']
        if system:
            lines.append(f'system = "{system}"')
        lines.append("")
    return "\n".join(lines)


async def project_with(directory: Path, n: int, prefix: str) -> Project:
    write_standin_project(directory, boards_toml(prefix, n))
    await lock_project(directory)
    return Project(inventory_path=directory / "boards.toml")


async def crossnix_build(project: Project, targets: list[Target]) -> tuple[float, int]:
    with process.observe() as started:
        start = time.perf_counter()
        await build.build_toplevels(project, targets)
        elapsed = time.perf_counter() - start
    return elapsed, sum(1 for argv in started if Path(argv[0]).name.startswith("nix"))


def direct_build(project: Project, targets: list[Target], spec_dir: Path) -> float:
    spec = evaluator.build_spec(project, [TargetRequest(t) for t in targets], build_system=probe.local_system())
    spec_path = spec_dir / f"spec-{secrets.token_hex(4)}.json"
    spec_path.write_text(__import__("json").dumps(spec))
    argv = ["nix", "build", "--no-link", "--json", "--impure", "-f", str(evaluator.EVAL_NIX),
            "--argstr", "specFile", str(spec_path), "--max-jobs", "auto", *(f"targets.{t.name}.toplevel" for t in targets)]
    start = time.perf_counter()
    subprocess.run(argv, env={**os.environ, "NIX_CONFIG": NIX_TEST_CONFIG}, check=True, capture_output=True)
    return time.perf_counter() - start


async def measure(n: int, repeat: int, work: Path) -> dict[str, float]:
    warm = await project_with(work / f"warm{n}", n, "w")
    targets = list(warm.inventory.targets.values())
    await build.build_toplevels(warm, targets)  # warm-up: everything built
    crossnix_warm, processes = [], 0
    direct_warm = []
    for _ in range(repeat):
        elapsed, processes = await crossnix_build(warm, targets)
        crossnix_warm.append(elapsed)
        direct_warm.append(direct_build(warm, targets, work))
    run = secrets.token_hex(2)
    cold_c = await project_with(work / f"cold-c{n}", n, f"c{run}x")
    cold_d = await project_with(work / f"cold-d{n}", n, f"d{run}x")
    crossnix_cold, _ = await crossnix_build(cold_c, list(cold_c.inventory.targets.values()))
    direct_cold = direct_build(cold_d, list(cold_d.inventory.targets.values()), work)
    return {
        "crossnix_warm": statistics.median(crossnix_warm),
        "direct_warm": statistics.median(direct_warm),
        "crossnix_cold": crossnix_cold,
        "direct_cold": direct_cold,
        "processes": processes,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ["NIX_CONFIG"] = NIX_TEST_CONFIG
    sizes = [int(s) for s in args.sizes.split(",")]
    print("offline nixpkgs stand-in (tests/standin, NOT nixpkgs); times in seconds, measured in this run")
    header = f"{'N':>3}  {'crossnix warm':>13} {'direct warm':>11} {'ratio':>6}  {'crossnix cold':>13} {'direct cold':>11} {'ratio':>6}  nix processes"
    print(header)
    with tempfile.TemporaryDirectory(prefix="crossnix-bench-") as tmp:
        for n in sizes:
            r = await measure(n, args.repeat, Path(tmp))
            print(
                f"{n:>3}  {r['crossnix_warm']:>13.2f} {r['direct_warm']:>11.2f} {r['crossnix_warm'] / r['direct_warm']:>6.2f}"
                f"  {r['crossnix_cold']:>13.2f} {r['direct_cold']:>11.2f} {r['crossnix_cold'] / r['direct_cold']:>6.2f}"
                f"  {int(r['processes']):>13}",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
