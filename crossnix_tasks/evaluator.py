"""The data crossnix hands its embedded evaluator (``nixexpr/eval.nix``): targets, boards, platforms, build
strategy, module files and per-target settings, as one JSON spec.

No Nix source is generated: :func:`build_spec` returns plain data, written to a file that ``eval.nix`` reads
with ``builtins.fromJSON``. The modules of a target come, in order, from crossnix (``nixexpr/crossnix.nix`` and
every ``nixexpr/modules/*.nix``), its board, the plugins' ``crossnix_nixos_modules`` hook and boards.toml.

Features pass values to their modules through ``crossnix.settings``: a settings provider is a function
``(project, target) -> dict`` registered with :func:`settings_provider`; list its module in
:data:`SETTINGS_PROVIDERS` so it is loaded even when its task module is not imported.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossnix_tasks import ui
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.inventory import Target
from crossnix_tasks.project import Project

NIXEXPR = Path(__file__).parent / "nixexpr"
EVAL_NIX = NIXEXPR / "eval.nix"
CORE_MODULE = NIXEXPR / "crossnix.nix"
MODULES_DIR = NIXEXPR / "modules"
SPEC_VERSION = 1

SettingsProvider = Callable[[Project, Target], Mapping[str, Any]]

#: The settings providers, one "package.module:function" line per feature; each function takes
#: ``(project, target)`` and returns the keys it contributes to ``crossnix.settings``.
SETTINGS_PROVIDERS: tuple[str, ...] = (
    "crossnix_tasks.firstboot:settings",
    "crossnix_tasks.signing:settings",
)


def _provider(entry: str) -> SettingsProvider:
    module_name, _, function = entry.partition(":")
    provider: SettingsProvider = getattr(importlib.import_module(module_name), function)
    return provider


def settings_for(project: Project, target: Target) -> dict[str, Any]:
    """The ``crossnix.settings`` of ``target``: every provider's contribution, merged. A key two providers
    contribute is an error naming both; values must be JSON."""
    merged: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for entry in SETTINGS_PROVIDERS:
        for key, value in dict(_provider(entry)(project, target)).items():
            if key in merged:
                raise CrossnixError(
                    f"crossnix.settings.{key} of target {target.name!r} is set by both {owners[key]!r} and {entry!r}"
                )
            merged[key] = value
            owners[key] = entry
    try:
        json.dumps(merged)
    except (TypeError, ValueError) as exc:
        raise CrossnixError(f"crossnix.settings of target {target.name!r} is not JSON data: {exc}") from None
    return merged


@dataclass(frozen=True)
class ModuleSource:
    """A module file of a target and where it comes from (``crossnix``, ``board rpi4``, ``plugin``, ...)."""

    path: Path
    origin: str


@dataclass(frozen=True)
class TargetRequest:
    """What to evaluate for one target: its system toplevel and/or one image variant."""

    target: Target
    toplevel: bool = True
    image: str | None = None


@dataclass(frozen=True)
class ProjectFlake:
    """Where the project's flake inputs come from: a flake.lock file, or a flake reference."""

    lock_file: Path | None = None
    flake_ref: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def crossnix_modules() -> list[Path]:
    """crossnix's own modules, added to every target: ``crossnix.nix``, then ``modules/*.nix`` by name."""
    return [CORE_MODULE, *sorted(p for p in MODULES_DIR.glob("*.nix") if p.is_file())]


def module_sources(project: Project, target: Target) -> list[ModuleSource]:
    board = project.plugins.board(target.board)
    sources = [ModuleSource(path, "crossnix") for path in crossnix_modules()]
    sources += [ModuleSource(path, f"board {board.name}") for path in board.modules]
    sources += [ModuleSource(path, "plugin") for path in project.plugins.target_modules(target, board)]
    sources += [ModuleSource(path, "boards.toml") for path in target.modules]
    missing = [f"{s.path} ({s.origin})" for s in sources if not s.path.is_file()]
    if missing:
        raise CrossnixError(f"target {target.name!r}: module files not found: {', '.join(missing)}")
    return sources


def project_flake(project: Project) -> ProjectFlake:
    """The project flake of boards.toml's ``[project] flake`` (default: the directory of boards.toml)."""
    ref = project.inventory.flake
    directory = (project.root / ref.removeprefix("path:")).resolve() if _is_local(ref) else None
    if directory is None:
        return ProjectFlake(flake_ref=ref)
    lock, nix_file = directory / "flake.lock", directory / "flake.nix"
    if not lock.is_file():
        if nix_file.is_file():
            raise CrossnixError(
                f"{nix_file} has no flake.lock next to it",
                hint=f"run `nix flake lock path:{directory}` (crossnix reads the pinned inputs from flake.lock)",
            )
        return ProjectFlake()
    warnings: tuple[str, ...] = ()
    if nix_file.is_file() and nix_file.stat().st_mtime > lock.stat().st_mtime + 1:
        warnings = (f"{nix_file} is newer than flake.lock; run `nix flake lock` if you changed its inputs",)
    return ProjectFlake(lock_file=lock, warnings=warnings)


def _is_local(ref: str) -> bool:
    return ref.startswith((".", "/")) or ref.startswith("path:")


def flake_target(project: Project, target: Target) -> dict[str, str] | None:
    """``flake = "REF#NAME"`` of a target as ``{ref, name}``; relative paths are relative to boards.toml."""
    if target.flake is None:
        return None
    ref, _, name = target.flake.rpartition("#")
    if ref.startswith("."):
        ref = str((project.root / ref).resolve())
    if _copies_state(project, ref):
        ui.warn(
            f"target {target.name!r}: Nix copies all of {ref.removeprefix('path:')} into the store to read flake "
            f"{ref!r}, including crossnix's state ({project.inventory.state_dir}) and out/: keep the flake in a git "
            "repository (untracked and ignored files stay out) or in another directory"
        )
    return {"ref": ref, "name": name}


def _copies_state(project: Project, ref: str) -> bool:
    """Would reading flake ``ref`` copy a directory holding crossnix's state dir into the store?"""
    if not ref.startswith(("/", "path:")):
        return False
    local = Path(ref.removeprefix("path:")).resolve()
    whole = ref.startswith("path:") or not _in_git(local)
    return whole and local.is_dir() and project.inventory.state_dir.resolve().is_relative_to(local)


def _in_git(directory: Path) -> bool:
    return any((parent / ".git").exists() for parent in (directory.resolve(), *directory.resolve().parents))


def target_spec(project: Project, request: TargetRequest, *, build_system: str) -> dict[str, Any]:
    target = request.target
    board = project.plugins.board(target.board)
    variant = request.image or target.image_variant or board.default_variant
    return {
        "modules": [str(s.path) for s in module_sources(project, target)],
        "flake": flake_target(project, target),
        "crossnix": {
            "targetName": target.name,
            "board": board.name,
            "system": target.system,
            "buildSystem": build_system,
            "strategy": target.build,
            "variant": variant,
            "settings": settings_for(project, target),
        },
        "want": {"toplevel": request.toplevel, "image": request.image},
    }


def build_spec(project: Project, requests: Sequence[TargetRequest], *, build_system: str) -> dict[str, Any]:
    """The evaluator's input for ``requests`` (one entry per target)."""
    names = [r.target.name for r in requests]
    if len(set(names)) != len(names):
        raise CrossnixError(f"a target appears twice in one evaluation: {names}")
    flake = project_flake(project)
    for warning in flake.warnings:
        ui.warn(warning)
    if flake.lock_file is None and flake.flake_ref is None and any(r.target.flake is None for r in requests):
        raise CrossnixError(
            f"no flake.nix next to {project.inventory_path}: crossnix takes nixpkgs and the boards' inputs from it",
            hint="run `inv init --board BOARD` in a new directory, or set [project] flake in boards.toml",
        )
    return {
        "version": SPEC_VERSION,
        "project": {
            "lockFile": str(flake.lock_file) if flake.lock_file else None,
            "flakeRef": flake.flake_ref,
        },
        "targets": {r.target.name: target_spec(project, r, build_system=build_system) for r in requests},
    }


@contextmanager
def spec_file(spec: Mapping[str, Any]) -> Iterator[Path]:
    """The spec written to a private temporary file (mode 0600), removed afterwards."""
    fd, name = tempfile.mkstemp(prefix="crossnix-spec-", suffix=".json")
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(spec, handle, indent=1, sort_keys=True)
        yield path
    finally:
        path.unlink(missing_ok=True)
