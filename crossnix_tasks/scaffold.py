"""``inv init``: a new project directory with flake.nix, boards.toml, hosts/common.nix and tasks.py.

flake.nix pins nixpkgs and every flake input the chosen boards declare (``Board.flake_inputs``); crossnix reads
the pinned inputs from flake.lock (``nix flake lock`` runs right away, and works offline for ``path:`` inputs).
flake.nix is the one Nix file crossnix writes from text, because flake inputs must be literals: every value in
it is checked against a strict pattern and written as an escaped Nix string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import tomlkit

from crossnix_tasks.boards import Board
from crossnix_tasks.errors import CrossnixError

DEFAULT_NIXPKGS = "github:NixOS/nixpkgs/nixos-26.05"
STANDIN = Path(__file__).resolve().parent.parent / "tests" / "standin"
_INPUT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# scheme:rest or an absolute path; no whitespace, quotes, backslashes or `$` (nothing Nix could interpolate)
_FLAKE_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|/)[^\s\"'\\$`]*$")

FILES = ("flake.nix", "boards.toml", "hosts/common.nix", "tasks.py", ".gitignore")


@dataclass(frozen=True)
class InputSpec:
    name: str
    url: str
    follows_nixpkgs: bool = False
    used_by: tuple[str, ...] = ()


def nix_string(value: str) -> str:
    """``value`` as a Nix string literal (escapes ``\\``, ``"`` and ``${``)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def check_input(name: str, url: str) -> None:
    if not _INPUT_NAME.match(name):
        raise CrossnixError(f"flake input name {name!r} must be letters, digits, '-' and '_'")
    if not _FLAKE_URL.match(url):
        raise CrossnixError(
            f"flake input {name}: {url!r} is not a flake URL (like github:NixOS/nixpkgs/nixos-25.05 or path:/abs/dir)"
        )


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """``NAME=URL`` arguments of ``--input``."""
    overrides = {}
    for pair in pairs:
        name, sep, url = pair.partition("=")
        if not sep:
            raise CrossnixError(f"--input {pair!r}: expected NAME=URL")
        check_input(name, url)
        overrides[name] = url
    return overrides


def standin_overrides() -> dict[str, str]:
    """Inputs pointing at the offline nixpkgs stand-in of this source checkout (tests/standin)."""
    if not (STANDIN / "nixpkgs" / "flake.nix").is_file():
        raise CrossnixError(
            "the offline nixpkgs stand-in is only in a source checkout of crossnix (tests/standin)",
            hint="use --nixpkgs URL / --input NAME=URL instead",
        )
    return {"nixpkgs": f"path:{STANDIN / 'nixpkgs'}", "nixos-hardware": f"path:{STANDIN / 'nixos-hardware'}"}


def flake_inputs(boards: Sequence[Board], overrides: Mapping[str, str]) -> list[InputSpec]:
    """nixpkgs, then every input the boards need (deduplicated), then extra ``overrides``."""
    inputs: dict[str, InputSpec] = {"nixpkgs": InputSpec("nixpkgs", overrides.get("nixpkgs", DEFAULT_NIXPKGS))}
    for board in boards:
        for declared in board.flake_inputs:
            known = inputs.get(declared.name)
            used_by = (*(known.used_by if known else ()), board.name)
            url = overrides.get(declared.name, declared.url)
            inputs[declared.name] = InputSpec(declared.name, url, declared.follows_nixpkgs, used_by)
    for name, url in overrides.items():
        inputs.setdefault(name, InputSpec(name, url))
    for spec in inputs.values():
        check_input(spec.name, spec.url)
    return list(inputs.values())


def render_flake(inputs: Sequence[InputSpec]) -> str:
    lines = [
        "# The project flake of a crossnix fleet: it pins nixpkgs and the inputs the boards need.",
        "# crossnix evaluates the targets of boards.toml with these inputs (module argument `inputs`),",
        "# read from flake.lock: after changing an input, run `nix flake lock` (or `nix flake update`).",
        "{",
        '  description = "crossnix fleet";',
        "",
        "  inputs = {",
    ]
    for spec in inputs:
        comment = f"  # board{'s' if len(spec.used_by) > 1 else ''} {', '.join(spec.used_by)}" if spec.used_by else ""
        lines.append(f"    {spec.name}.url = {nix_string(spec.url)};{comment}")
        if spec.follows_nixpkgs:
            lines.append(f'    {spec.name}.inputs.nixpkgs.follows = "nixpkgs";')
    lines += [
        "  };",
        "",
        "  # crossnix needs no outputs; add your own (packages, dev shells, ...) here.",
        "  outputs = inputs: { };",
        "}",
        "",
    ]
    return "\n".join(lines)


def render_boards_toml(boards: Sequence[Board]) -> str:
    document = tomlkit.document()
    document.add(tomlkit.comment("crossnix inventory: the machines of this fleet."))
    document.add(tomlkit.comment('Reference: crossnix README, "boards.toml reference". Check it: `inv check-config`.'))
    document.add(tomlkit.nl())
    project = tomlkit.table()
    project.add("flake", ".")
    project["flake"].comment("flake.nix + flake.lock here supply nixpkgs and the boards' inputs")
    document.add("project", project)
    defaults = tomlkit.table()
    defaults.add("user", "root")
    defaults.add("build", "cross")
    defaults["build"].comment("cross | emulated | native | remote")
    defaults.add("modules", ["hosts/common.nix"])
    defaults.add("authorized_keys", tomlkit.array())
    defaults["authorized_keys"].comment("SSH public keys baked into images for the first login")
    document.add("defaults", defaults)
    targets = tomlkit.table(is_super_table=True)
    for board in boards:
        table = tomlkit.table()
        table.add(tomlkit.comment(board.description))
        table.add("board", board.name)
        table.add(tomlkit.comment(f'host = "{board.name}-1.lan"   # set it to deploy with `inv deploy`'))
        targets.add(f"{board.name}-1", table)
    document.add("targets", targets)
    return tomlkit.dumps(document)


COMMON_NIX = """\
# Shared by every target of boards.toml ([defaults] modules): a plain NixOS module.
{ lib, ... }:
{
  services.openssh.enable = true;
  services.openssh.settings.PasswordAuthentication = false;
  time.timeZone = lib.mkDefault "UTC";
  # The release these machines were first installed with; keep it when you update nixpkgs.
  system.stateVersion = "26.05";
}
"""

TASKS_PY = '''\
"""`inv --list` here runs crossnix's tasks against ./boards.toml."""

from crossnix_tasks import ns

__all__ = ["ns"]
'''

GITIGNORE = """\
# built images and GC roots (inv image), crossnix's state (keys, known_hosts, logs)
/out/
/.crossnix/
result*
"""


def scaffold(directory: Path, boards: Sequence[Board], overrides: Mapping[str, str]) -> list[Path]:
    """Write the project files into ``directory``; refuses to overwrite any of them."""
    if not boards:
        raise CrossnixError("init needs at least one --board", hint="`inv boards` lists the installed boards")
    existing = [name for name in FILES if (directory / name).exists()]
    if existing:
        raise CrossnixError(
            f"{directory} already has {', '.join(existing)}",
            hint="run `inv init` in an empty directory (`inv add-target` adds targets to an existing project)",
        )
    contents = {
        "flake.nix": render_flake(flake_inputs(boards, overrides)),
        "boards.toml": render_boards_toml(boards),
        "hosts/common.nix": COMMON_NIX,
        "tasks.py": TASKS_PY,
        ".gitignore": GITIGNORE,
    }
    written = []
    for name, text in contents.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
