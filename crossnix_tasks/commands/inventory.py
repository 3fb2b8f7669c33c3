"""Tasks that read and edit the inventory: boards, targets, plugins, add-target, check-config."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from invoke.context import Context
from rich.markup import escape
from rich.table import Table

from crossnix_tasks import ui
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.inventory import Target, inventory_from_source
from crossnix_tasks.project import Project
from crossnix_tasks.selection import select
from crossnix_tasks.taskutil import crossnix_task
from crossnix_tasks.tomledit import replace_validated, with_target

SELECT_HELP = "target NAME, name GLOB or @TAG; repeatable or comma-separated (default: all)"


def _warn_plugin_errors(project: Project) -> None:
    errors = project.plugins.errors
    if errors:
        ui.warn(f"{len(errors)} plugin problem(s); run `inv plugins` for details: " + "; ".join(map(str, errors)))


@crossnix_task(help={"json": "print JSON", "verbose": "also print each board's notes"})
def boards(c: Context, project: Project, json: bool = False, verbose: bool = False) -> None:
    """List the installed boards: systems, image variants, modules, flake inputs and the plugin providing them."""
    plugins = project.plugins
    if json:
        ui.print_json(
            [
                {
                    "name": b.name,
                    "description": b.description,
                    "systems": list(b.systems),
                    "default_variant": b.default_variant,
                    "variants": [
                        {
                            "name": v.name,
                            "media": v.media.value,
                            "native_only": v.native_only,
                            "systems": list(v.systems) or list(b.systems),
                            "description": v.description,
                        }
                        for v in b.variants
                    ],
                    "modules": [str(m) for m in b.modules],
                    "flake_inputs": [asdict(i) for i in b.flake_inputs],
                    "plugin": plugins.board_owner(b.name),
                    "distribution": plugins.distribution(plugins.board_owner(b.name)),
                    "notes": list(b.notes),
                }
                for b in sorted(plugins.boards.values(), key=lambda b: b.name)
            ]
        )
        _warn_plugin_errors(project)
        return
    table = Table("board", "systems", "image variants (* default, † native builds only)", "inputs", "plugin")
    for board in sorted(plugins.boards.values(), key=lambda b: b.name):
        variants = ", ".join(
            v.name + ("*" if v.name == board.default_variant else "") + ("†" if v.native_only else "")
            for v in board.variants
        )
        owner = plugins.board_owner(board.name)
        table.add_row(
            f"{board.name}\n[dim]{board.description}[/dim]",
            "\n".join(board.systems),
            variants,
            ", ".join(i.name for i in board.flake_inputs) or "-",
            f"{owner} ({plugins.distribution(owner)})",
        )
    ui.out.print(table)
    if verbose:
        for board in sorted(plugins.boards.values(), key=lambda b: b.name):
            for note in board.notes:
                ui.out.print(f"[bold]{board.name}[/bold]: {escape(note)}", soft_wrap=True)
    _warn_plugin_errors(project)


def target_json(target: Target) -> dict[str, Any]:
    data = asdict(target)
    data["deploy"]["health_checks"] = [check.model_dump() for check in target.deploy.health_checks]
    return {key: (str(value) if hasattr(value, "__fspath__") else value) for key, value in data.items()} | {
        "modules": [str(m) for m in target.modules]
    }


@crossnix_task(iterable=["on"], help={"on": SELECT_HELP, "json": "print JSON"})
def targets(c: Context, project: Project, on: list[str] | None = None, json: bool = False) -> None:
    """List the targets of boards.toml (board, system, host, tags, build strategy, image variant)."""
    inventory = project.require_inventory()
    chosen = select(inventory, on or [])
    if json:
        ui.print_json([target_json(t) for t in chosen])
        return
    table = Table("target", "board", "system", "host", "tags", "build", "image")
    for t in chosen:
        board = project.plugins.boards[t.board]
        table.add_row(
            t.name,
            t.board,
            t.system,
            t.address,
            " ".join("@" + tag for tag in t.tags),
            t.build + (f" on {t.build_host}" if t.build_host else ""),
            t.image_variant or f"{board.default_variant} (default)",
        )
    ui.out.print(table)


@crossnix_task(help={"json": "print JSON"})
def plugins(c: Context, project: Project, json: bool = False) -> None:
    """List loaded plugins (distribution, version, hooks, boards) and plugins that failed to load."""
    infos = project.plugins.infos()
    errors = project.plugins.errors
    if json:
        ui.print_json({"plugins": [asdict(i) for i in infos], "errors": [asdict(e) for e in errors]})
    else:
        table = Table("plugin", "distribution", "version", "hooks", "boards")
        for info in infos:
            table.add_row(info.name, info.distribution, info.version, "\n".join(info.hooks), ", ".join(info.boards))
        ui.out.print(table)
        for error in errors:
            ui.err.print(f"[red]failed:[/red] {escape(str(error))}", markup=True, soft_wrap=True)
    if errors:
        raise CrossnixError(f"{len(errors)} plugin(s) could not be used")


@crossnix_task(
    iterable=["tag"],
    auto_shortflags=False,
    help={
        "name": "target name (letters, digits, '-', '_')",
        "board": "board name (see `inv boards`); required",
        "host": "SSH host name or address",
        "system": "Nix system, for boards supporting several",
        "port": "SSH port",
        "user": "SSH user (non-root users deploy through sudo)",
        "tag": "tag for `--on @TAG`; repeatable",
        "variant": "image variant (default: the board's)",
        "build": "build strategy: cross | emulated | native | remote",
        "build_host": "machine to build on, for --build remote",
    },
)
def add_target(
    c: Context,
    project: Project,
    name: str,
    board: str | None = None,
    host: str | None = None,
    system: str | None = None,
    port: str | None = None,
    user: str | None = None,
    tag: list[str] | None = None,
    variant: str | None = None,
    build: str | None = None,
    build_host: str | None = None,
) -> None:
    """Add [targets.NAME] to boards.toml, keeping every comment and the layout of the file."""
    if not board:
        raise CrossnixError("add-target needs --board", hint="`inv boards` lists the installed boards")
    path = project.inventory_path
    values: dict[str, Any] = {
        key: value
        for key, value in {
            "board": board,
            "system": system,
            "host": host,
            "port": _port(port),
            "user": user,
            "tags": tag or None,
            "image_variant": variant,
            "build": build,
            "build_host": build_host,
        }.items()
        if value is not None
    }
    project.plugins.board(board)  # unknown board: say which are installed
    source = path.read_text(encoding="utf-8") if path.exists() else ""
    # validated before the real file changes, so a bad value loses nothing
    replace_validated(
        path,
        with_target(path, source, name, values),
        lambda text: inventory_from_source(path, text, project.plugins.boards),
    )
    ui.out.print(f"added target {name!r} ({board}) to {path}", markup=False)


def _port(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise CrossnixError(f"--port {value!r} is not a number")
    return int(value)


@crossnix_task()
def check_config(c: Context, project: Project) -> None:
    """Validate boards.toml and the plugins; print every problem with its file, line and key."""
    inventory = project.require_inventory()
    _warn_plugin_errors(project)
    ui.out.print(f"{inventory.path}: {len(inventory.targets)} target(s), all valid", markup=False)

