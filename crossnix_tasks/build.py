"""Building system toplevels and images of targets: one evaluation for a selection, one ``nix build`` per build
group (all local targets together; one per set of remote builders; one per build host), parallel inside Nix.

Strategies (boards.toml ``build``): ``cross`` builds everything on this machine for the board;
``emulated`` builds the native configuration here under binfmt (probed first); ``native`` needs a machine
of the board's system; ``remote`` builds on ``build_host`` (derivations copied there, outputs copied back)
or hands Nix its own remote ``builders``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tomlkit

from crossnix_tasks import evaluator, nix, probe
from crossnix_tasks.boards import ImageVariant
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.evaluator import TargetRequest
from crossnix_tasks.inventory import Target, inventory_from_source
from crossnix_tasks.nixview import BuildView, NullView
from crossnix_tasks.project import Project

GCROOTS = ".gcroots"
MANIFEST = ".crossnix-images.json"


@dataclass(frozen=True)
class BuiltImage:
    """An image built for a target: the store path, the image file in it, and where it was placed."""

    target: str
    variant: str
    store_path: str
    file_path: Path
    size: int
    sha256: str
    placed_path: Path


@dataclass(frozen=True)
class PlannedImage:
    target: str
    variant: str
    drv_path: str
    file_path: str  # inside the output (passthru.filePath)


@dataclass(frozen=True)
class Plan:
    """What one evaluation returned: toplevel and image derivations per target."""

    toplevels: Mapping[str, str]
    images: Mapping[str, PlannedImage]


@dataclass(frozen=True)
class BuildGroup:
    """Targets built by one Nix invocation."""

    kind: Literal["local", "builders", "build-host"]
    value: str = ""

    def describe(self) -> str:
        if self.kind == "builders":
            return f"with remote builders {self.value!r}"
        if self.kind == "build-host":
            return f"on {self.value}"
        return "locally"


@dataclass(frozen=True)
class Realised:
    out: str
    root: Path | None = None  # a GC root (symlink) keeping ``out`` alive


def build_group(target: Target) -> BuildGroup:
    if target.build == "remote":
        if target.build_host:
            return BuildGroup("build-host", target.build_host)
        return BuildGroup("builders", target.builders or "")
    return BuildGroup("local")


# Checks before evaluating ---------------------------------------------------------------------------------


async def check_strategies(targets: Iterable[Target], view: BuildView | None = None) -> None:
    """Refuse ``native`` targets of another system; probe every system ``emulated`` targets need."""
    local = probe.local_system()
    targets = list(targets)
    for target in targets:
        if target.build == "native" and target.system != local:
            raise CrossnixError(
                f"target {target.name!r} is {target.system} with build = \"native\", but this machine is {local}",
                hint='use build = "cross", "emulated" (binfmt) or "remote" (build_host or builders) for it',
            )
    systems = sorted({t.system for t in targets if t.build == "emulated" and t.system != local})
    for system in systems:
        (view or NullView()).phase(f"checking that this machine can build {system} (emulated)")
        await probe.require_buildable(system)


def choose_variant(project: Project, target: Target, requested: str | None = None) -> str:
    """The image variant to build: ``requested``, else the target's, else the board's default. Refuses a variant
    the board lacks for the target's system, and a native-only variant for a cross build."""
    board = project.plugins.board(target.board)
    name = requested or target.image_variant or board.default_variant
    available = board.variants_for(target.system)
    variant = next((v for v in available if v.name == name), None)
    if variant is None:
        raise CrossnixError(
            f"board {board.name!r} ({target.system}) has no image variant {name!r}; "
            f"it has: {', '.join(v.name for v in available)}"
        )
    _refuse_native_only(target, board.name, variant)
    return name


def _refuse_native_only(target: Target, board: str, variant: ImageVariant) -> None:
    if variant.native_only and target.build == "cross" and target.system != probe.local_system():
        raise CrossnixError(
            f"image variant {variant.name!r} of board {board!r} cannot be cross-compiled for {target.system} "
            f"(target {target.name!r} has build = \"cross\"): {variant.native_only_reason or 'native builds only'}",
            hint=f'set build = "emulated", "native" or "remote" for {target.name!r}, or pick another variant '
            "(`inv boards` lists them)",
        )


def example_target(project: Project, board_name: str) -> Target:
    """``example-<board>``: a target of ``board_name`` with boards.toml's [defaults] applied (for ``--board``)."""
    board = project.plugins.board(board_name)
    inventory = project.require_inventory()
    name = f"example-{board.name}"
    if name in inventory.targets:
        return inventory.targets[name]
    document = tomlkit.parse(inventory.path.read_text(encoding="utf-8"))
    table = tomlkit.table()
    table.add("board", board.name)
    targets = document.setdefault("targets", tomlkit.table(is_super_table=True))
    targets.add(name, table)
    extended = inventory_from_source(inventory.path, tomlkit.dumps(document), project.plugins.boards)
    return extended.targets[name]


# Evaluating and building ----------------------------------------------------------------------------------


async def evaluate(project: Project, requests: Sequence[TargetRequest], *, view: BuildView | None = None) -> Plan:
    """One ``nix eval`` of crossnix's evaluator for every request: toplevel and image derivations."""
    view = view or NullView()
    spec = evaluator.build_spec(project, requests, build_system=probe.local_system())
    names = [r.target.name for r in requests]
    view.phase(f"evaluating {_count(len(names), 'target')}: {_names(names)}")
    with evaluator.spec_file(spec) as path:
        data = await nix.eval_json(evaluator.EVAL_NIX, "plan", argstr={"specFile": str(path)}, on_event=view.nix_event)
    toplevels = {name: entry["toplevel"] for name, entry in data.items() if "toplevel" in entry}
    images = {
        name: PlannedImage(name, spec["targets"][name]["want"]["image"], entry["image"]["drvPath"],
                           entry["image"]["filePath"])
        for name, entry in data.items()
        if "image" in entry
    }
    return Plan(toplevels, images)


async def realise(
    wanted: Mapping[BuildGroup, Sequence[str]], *, view: BuildView | None = None, roots: Path | None = None
) -> dict[str, Realised]:
    """Build the derivations of every group (groups run side by side); with ``roots``, keep each output alive
    through a GC root in that directory. Returns drv path -> output."""
    view = view or NullView()
    jobs = [
        _realise_group(group, list(dict.fromkeys(drvs)), view, roots, index)
        for index, (group, drvs) in enumerate(wanted.items())
        if drvs
    ]
    realised: dict[str, Realised] = {}
    # Every group runs to its end before a failure is raised, so what did build is in the store.
    parts = await asyncio.gather(*jobs, return_exceptions=True)
    for part in parts:
        if isinstance(part, BaseException):
            raise part
        realised.update(part)
    return realised


async def _realise_group(
    group: BuildGroup, drvs: list[str], view: BuildView, roots: Path | None, index: int
) -> dict[str, Realised]:
    view.phase(f"building {_count(len(drvs), 'derivation')} {group.describe()}")
    out_link = roots / f"g{index}" if roots is not None and group.kind != "build-host" else None
    if out_link is not None:
        out_link.parent.mkdir(parents=True, exist_ok=True)
    if group.kind == "build-host":
        results = await _build_on_host(group.value, drvs, view)
    else:
        builders = group.value if group.kind == "builders" else None
        # Nix offers every build to the builders first; with no local slots (build = "remote") it also never
        # falls back to building here while they are busy.
        results = await nix.build(
            drvs, builders=builders, max_jobs="0" if builders else "auto", out_link=out_link, on_event=view.nix_event
        )
    links = _links_by_target(out_link.parent) if out_link is not None else {}
    realised = {}
    for number, result in enumerate(results):
        root = links.get(result.out)
        if roots is not None and root is None:
            root = roots / f"h{index}-{number}"
            root.parent.mkdir(parents=True, exist_ok=True)
            await nix.add_root(result.out, root)
        realised[result.drv_path] = Realised(result.out, root)
    return realised


async def _build_on_host(host: str, drvs: list[str], view: BuildView) -> list[nix.BuildResult]:
    """Copy the derivations to ``host``, build them there, copy the outputs back (as nixos-rebuild does with
    ``--build-host``; the build host is trusted to have built them, hence ``--no-check-sigs`` on the way back)."""
    store = f"ssh-ng://{host}"
    view.phase(f"copying {_count(len(drvs), 'derivation')} to {host}")
    await nix.copy(drvs, to=store, derivation=True, on_event=view.nix_event)
    results = await nix.build(drvs, store=store, on_event=view.nix_event)
    view.phase(f"copying the results back from {host}")
    outputs = [path for r in results for path in r.outputs.values()]
    await nix.copy(outputs, from_=store, no_check_sigs=True, on_event=view.nix_event)
    return results


def _links_by_target(directory: Path) -> dict[str, Path]:
    found = {}
    for link in directory.iterdir():
        if link.is_symlink():
            found[os.readlink(link)] = link
    return found


def _groups(targets: Iterable[Target], drv_of: Mapping[str, str]) -> dict[BuildGroup, list[str]]:
    groups: dict[BuildGroup, list[str]] = {}
    for target in targets:
        if target.name in drv_of:
            groups.setdefault(build_group(target), []).append(drv_of[target.name])
    return groups


async def build_toplevels(
    project: Project, targets: Sequence[Target], *, view: BuildView | None = None
) -> dict[str, str]:
    """Build the system toplevels of ``targets``: one evaluation, one ``nix build`` per build group.
    Returns target name -> toplevel store path (in the local store)."""
    targets = list(targets)
    if not targets:
        return {}
    await check_strategies(targets, view)
    plan = await evaluate(project, [TargetRequest(t) for t in targets], view=view)
    realised = await realise(_groups(targets, plan.toplevels), view=view)
    return {t.name: realised[plan.toplevels[t.name]].out for t in targets}


@dataclass(frozen=True)
class SystemsBuilt:
    """Systems built for a selection, and the targets whose system could not be evaluated or built."""

    toplevels: Mapping[str, str]
    failures: Mapping[str, str]  # target name -> Nix's error


async def build_each_toplevel(
    project: Project, targets: Sequence[Target], *, view: BuildView | None = None
) -> SystemsBuilt:
    """Like :func:`build_toplevels`, but one target's broken configuration or failed build fails only that
    target (``inv deploy``: a failed target never stops the others).

    All is shared as usual; only when the shared evaluation fails is each target evaluated alone, to tell the
    broken ones from the rest, and after a failed build (Nix keeps going) the systems that were built are kept.
    """
    targets = list(targets)
    if not targets:
        return SystemsBuilt({}, {})
    await check_strategies(targets, view)
    failures: dict[str, str] = {}
    try:
        drvs = dict((await evaluate(project, [TargetRequest(t) for t in targets], view=view)).toplevels)
    except nix.NixError:
        drvs = {}
        for target in targets:
            try:
                drvs.update((await evaluate(project, [TargetRequest(target)], view=view)).toplevels)
            except nix.NixError as exc:
                failures[target.name] = _what_nix_said(exc)
    try:
        realised = await realise(_groups(targets, drvs), view=view)
        return SystemsBuilt({name: realised[drv].out for name, drv in drvs.items()}, failures)
    except nix.NixError as exc:
        built = await _built_outputs(list(drvs.values()))
        for name, drv in drvs.items():
            if drv not in built:
                failures[name] = _what_nix_said(exc)
        return SystemsBuilt({name: built[drv] for name, drv in drvs.items() if drv in built}, failures)


def _what_nix_said(error: nix.NixError) -> str:
    # The first line of a NixError names the command; a target's failure starts with Nix's own words.
    lines = error.message.splitlines()
    return "\n".join(lines[1:] + lines[:1]) if len(lines) > 1 else error.message


async def _built_outputs(drvs: Sequence[str]) -> dict[str, str]:
    """drv -> its ``out`` path, for the derivations whose output is in the local store."""
    if not drvs:
        return {}
    derivations = await nix.show_derivation(sorted(set(drvs)))
    outputs = {drv: str(info["outputs"]["out"]["path"]) for drv, info in derivations.items()}
    present = await asyncio.to_thread(lambda: {drv for drv, out in outputs.items() if os.path.exists(out)})
    return {drv: outputs[drv] for drv in present}


async def build_images(
    project: Project,
    targets: Sequence[Target],
    variant: str | None = None,
    out_dir: Path | None = None,
    view: BuildView | None = None,
    *,
    copy: bool = False,
) -> list[BuiltImage]:
    """Build one image per target (``variant``, else each target's or its board's default) in one evaluation
    and one build, then place each under ``out_dir/<target>/`` (default ``out/`` next to boards.toml): a
    symlink through a GC root in ``out_dir/.gcroots``, or a copy with ``copy=True``."""
    view = view or NullView()
    targets = list(targets)
    if not targets:
        return []
    variants = {t.name: choose_variant(project, t, variant) for t in targets}
    await check_strategies(targets, view)
    requests = [TargetRequest(t, toplevel=False, image=variants[t.name]) for t in targets]
    plan = await evaluate(project, requests, view=view)
    out = (out_dir or project.root / "out").absolute()
    roots = None if copy else out / GCROOTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
    drvs = {name: image.drv_path for name, image in plan.images.items()}
    realised = await realise(_groups(targets, drvs), view=view, roots=roots)
    view.phase(f"placing {_count(len(targets), 'image')} under {out}")
    built = [
        await place_image(plan.images[t.name], realised[plan.images[t.name].drv_path], out / t.name, copy=copy)
        for t in targets
    ]
    prune_roots(out)
    return built


# Placing images -------------------------------------------------------------------------------------------


async def place_image(image: PlannedImage, realised: Realised, directory: Path, *, copy: bool) -> BuiltImage:
    """Put the image file under ``directory`` (atomically), replacing the previous file of the same variant."""
    return await asyncio.to_thread(_place, image, realised, directory, copy)


def _place(image: PlannedImage, realised: Realised, directory: Path, copy: bool) -> BuiltImage:
    source = Path(realised.out) / image.file_path
    if not source.is_file():
        raise CrossnixError(f"target {image.target!r}: the image output {realised.out} has no {image.file_path}")
    size, digest = _size_and_sha256(source)
    directory.mkdir(parents=True, exist_ok=True)
    placed = directory / source.name
    scratch = directory / f".{source.name}.tmp"
    scratch.unlink(missing_ok=True)
    if copy:
        shutil.copyfile(source, scratch)
        scratch.chmod(0o644)
    elif realised.root is not None:
        scratch.symlink_to(os.path.relpath(realised.root / image.file_path, directory))
    else:
        scratch.symlink_to(source)
    os.replace(scratch, placed)
    _remember(directory, image.variant, placed.name)
    return BuiltImage(image.target, image.variant, realised.out, source, size, digest, placed)


def _size_and_sha256(path: Path) -> tuple[int, str]:
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return path.stat().st_size, digest


def _remember(directory: Path, variant: str, name: str) -> None:
    manifest = directory / MANIFEST
    try:
        placed = json.loads(manifest.read_text())
    except (OSError, ValueError):
        placed = {}
    previous = placed.get(variant)
    if previous and previous != name and "/" not in previous:
        (directory / previous).unlink(missing_ok=True)
    placed[variant] = name
    manifest.write_text(json.dumps(placed, indent=1, sort_keys=True) + "\n")


def prune_roots(out: Path) -> None:
    """Remove GC-root directories under ``out/.gcroots`` that no placed image links through any more."""
    roots = out / GCROOTS
    if not roots.is_dir():
        return
    used = set()
    for directory in out.iterdir():
        if directory.name == GCROOTS or not directory.is_dir():
            continue
        for entry in directory.iterdir():
            if entry.is_symlink():
                target = Path(os.path.normpath(directory / os.readlink(entry)))
                if target.is_relative_to(roots):
                    used.add(target.relative_to(roots).parts[0])
    for candidate in roots.iterdir():
        if candidate.name not in used and candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit})" if len(names) > limit else "")
