"""Tasks of the Nix backend: ``image``, ``build`` and ``init``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from invoke.context import Context
from rich.table import Column, Table
from rich.text import Text

from crossnix_tasks import nix, scaffold, ui
from crossnix_tasks.build import BuiltImage, build_images, build_toplevels, example_target
from crossnix_tasks.errors import CrossnixError, SelectionError
from crossnix_tasks.inventory import Target
from crossnix_tasks.nixview import build_view, human_bytes
from crossnix_tasks.project import Project
from crossnix_tasks.selection import select
from crossnix_tasks.taskutil import crossnix_task

SELECT_HELP = "target NAME, name GLOB or @TAG; repeatable or comma-separated"
STANDIN_NOTE = "built with the offline nixpkgs stand-in (tests/standin), NOT nixpkgs: these are test artefacts"


def _image_targets(project: Project, boards: list[str], targets: list[str]) -> list[Target]:
    if not boards and not targets:
        raise SelectionError("choose what to build: --target NAME (repeatable), or --board BOARD for its example")
    chosen: list[Target] = []
    if targets:
        chosen += select(project.require_inventory(), targets)
    chosen += [example_target(project, board) for board in boards]
    return list({t.name: t for t in chosen}.values())


def _plain(requested: bool) -> bool | None:
    """Plain progress lines when asked, or when stdout is not a terminal; else decided by stderr."""
    return True if requested or not ui.out.is_terminal else None


def _absolute(path: str) -> Path:
    return Path(path).absolute()


def _uses_standin(path: str) -> bool:
    return "offline-standin" in path


@crossnix_task(
    iterable=["board", "target"],
    help={
        "board": "build the board's example configuration (boards.toml [defaults] applied); repeatable",
        "target": "build this target's image (NAME, GLOB or @TAG); repeatable",
        "variant": "image variant (default: the target's image_variant, else the board's default)",
        "out": "directory for the images (default: out/ next to boards.toml); each under out/<target>/",
        "copy": "copy the image files instead of linking them (links keep a GC root in out/.gcroots)",
        "json": "print JSON",
        "plain": "plain progress lines even on a terminal",
    },
)
async def image(
    c: Context,
    project: Project,
    board: list[str] | None = None,
    target: list[str] | None = None,
    variant: str | None = None,
    out: str | None = None,
    copy: bool = False,
    json: bool = False,
    plain: bool = False,
) -> None:
    """Build disk images of targets (or a board's example) and print their path, size and sha256.

    Builds config.system.build.images.<variant> of every selected target in one evaluation and one nix build."""
    chosen = _image_targets(project, board or [], target or [])
    with build_view(ui.err, plain=_plain(plain)) as view:
        built = await build_images(
            project, chosen, variant, _absolute(out) if out else None, view, copy=copy
        )
    if json:
        ui.print_json([_image_json(b) for b in built])
        return
    for item in built:
        _print_image(item)
    if any(_uses_standin(b.store_path) for b in built):
        ui.warn(STANDIN_NOTE)


def _image_json(item: BuiltImage) -> dict[str, object]:
    return {
        "target": item.target,
        "variant": item.variant,
        "path": str(item.placed_path),
        "size": item.size,
        "sha256": item.sha256,
        "store_path": item.store_path,
        "file": str(item.file_path),
        "offline_standin": _uses_standin(item.store_path),
    }


def _print_image(item: BuiltImage) -> None:
    try:
        shown = item.placed_path.relative_to(Path.cwd())
    except ValueError:
        shown = item.placed_path
    ui.out.print(Text(str(shown), style="bold"), soft_wrap=True)  # a path, not markup
    ui.out.print(f"  target  {item.target} ({item.variant})", soft_wrap=True, markup=False)
    ui.out.print(f"  size    {human_bytes(item.size)} ({item.size} bytes)", soft_wrap=True, markup=False)
    ui.out.print(f"  sha256  {item.sha256}", soft_wrap=True, markup=False)
    ui.out.print(f"  file    {item.file_path}", soft_wrap=True, markup=False)


@crossnix_task(
    iterable=["on"],
    help={"on": SELECT_HELP, "all": "build every target", "json": "print JSON", "plain": "plain progress lines"},
)
async def build(
    c: Context, project: Project, on: list[str] | None = None, all: bool = False, json: bool = False,
    plain: bool = False,
) -> None:
    """Build the system toplevels of the selected targets (one evaluation, one nix build)."""
    if not on and not all:
        raise SelectionError("choose the targets: --all, or --on NAME|GLOB|@TAG (repeatable)")
    targets = select(project.require_inventory(), on or [], select_all=all)
    with build_view(ui.err, plain=_plain(plain)) as view:
        toplevels = await build_toplevels(project, targets, view=view)
    if json:
        ui.print_json([{"target": name, "toplevel": path} for name, path in toplevels.items()])
        return
    table = Table("target", "board", "system", "build", Column("toplevel", overflow="fold"))
    for t in targets:
        table.add_row(t.name, t.board, t.system, t.build, toplevels[t.name])
    ui.out.print(table)
    if any(_uses_standin(path) for path in toplevels.values()):
        ui.warn(STANDIN_NOTE)


@crossnix_task(
    iterable=["board", "input"],
    help={
        "board": "a board of the fleet (see `inv boards`); repeatable",
        "dir": "the new project's directory (default: the current one)",
        "nixpkgs": f"nixpkgs flake URL (default: {scaffold.DEFAULT_NIXPKGS})",
        "input": "override or add a flake input: NAME=URL (e.g. nixos-hardware=path:/src/nixos-hardware)",
        "standin": "use the offline nixpkgs stand-in of this crossnix checkout (tests, demos; NOT nixpkgs)",
        "no_lock": "do not run `nix flake lock`",
    },
)
async def init(
    c: Context,
    project: Project,
    board: list[str] | None = None,
    dir: str | None = None,
    nixpkgs: str | None = None,
    input: list[str] | None = None,
    standin: bool = False,
    no_lock: bool = False,
) -> None:
    """Start a project: flake.nix (pinned inputs for the boards), boards.toml, hosts/common.nix, tasks.py."""
    directory = _absolute(dir or ".")
    boards = [project.plugins.board(name) for name in dict.fromkeys(board or [])]
    overrides = scaffold.standin_overrides() if standin else {}
    if nixpkgs:
        overrides["nixpkgs"] = nixpkgs
    overrides.update(scaffold.parse_overrides(input or []))
    written = scaffold.scaffold(directory, boards, overrides)
    for path in written:
        ui.out.print(f"wrote {path}", markup=False, soft_wrap=True)
    if standin:
        ui.warn("flake.nix points nixpkgs and nixos-hardware at the offline nixpkgs stand-in (NOT nixpkgs)")
    if no_lock:
        ui.out.print("next: run `nix flake lock` here, then `inv image --board BOARD`", markup=False)
        return
    try:
        await nix.flake_lock(f"path:{directory}")
    except CrossnixError as exc:
        ui.warn(f"`nix flake lock` failed, run it when the inputs can be fetched:\n{exc.render()}")
        return
    ui.out.print(f"wrote {directory / 'flake.lock'}", markup=False, soft_wrap=True)
    first = boards[0].name
    ui.out.print(
        f"next: `inv image --board {first}`, or set a host in boards.toml and `inv deploy --all`", markup=False
    )


def standin_demo(project: Project) -> None:
    """`inv demo`'s build step: a fresh project on the offline nixpkgs stand-in (NOT nixpkgs) with one target per
    installed board, its system toplevels and its default images, built for real by the local Nix."""
    import asyncio
    import tempfile

    if shutil.which("nix") is None:
        ui.warn("nix is not installed: skipping the build demo (Debian: apt-get install nix-bin)")
        return
    # Nothing the stand-in builds is in a binary cache; offline, asking cache.nixos.org only costs retries.
    os.environ["NIX_CONFIG"] = "\n".join(filter(None, [os.environ.get("NIX_CONFIG", ""), "substituters ="]))
    directory = Path(tempfile.mkdtemp(prefix="crossnix-demo-"))
    boards = sorted(project.plugins.boards.values(), key=lambda b: b.name)
    scaffold.scaffold(directory, boards, scaffold.standin_overrides())
    ui.out.print(f"project: {directory} (flake inputs: the offline nixpkgs stand-in, NOT nixpkgs)", markup=False)
    asyncio.run(_standin_demo(directory))


async def _standin_demo(directory: Path) -> None:
    await nix.flake_lock(f"path:{directory}")
    demo_project = Project(inventory_path=directory / "boards.toml")
    targets = list(demo_project.require_inventory().targets.values())
    with build_view(ui.err, plain=_plain(False)) as view:
        toplevels = await build_toplevels(demo_project, targets, view=view)
        images = await build_images(demo_project, targets, view=view)
    for target in targets:
        ui.out.print(f"{target.name} ({target.board}, {target.system}, {target.build}): {toplevels[target.name]}",
                     markup=False, soft_wrap=True)
    for item in images:
        _print_image(item)
    ui.warn(STANDIN_NOTE)
