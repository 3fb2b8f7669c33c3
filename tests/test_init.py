"""`inv init`: the scaffolded project, its flake.nix, and locking it offline (stand-in inputs, path: refs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossnix_tasks import scaffold
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.inventory import inventory_from_source
from crossnix_tasks.plugins import Plugins
from tests.conftest import run_cli
from tests.nixfixtures import STANDIN


def test_flake_pins_nixpkgs_and_each_boards_inputs(builtin_plugins: Plugins) -> None:
    boards = [builtin_plugins.boards[n] for n in ("rpi4", "generic-uefi", "hifive-unmatched")]
    inputs = scaffold.flake_inputs(boards, {})
    assert [(i.name, i.url, i.used_by) for i in inputs] == [
        ("nixpkgs", scaffold.DEFAULT_NIXPKGS, ()),
        ("nixos-hardware", "github:NixOS/nixos-hardware", ("rpi4",)),
    ]
    text = scaffold.render_flake(inputs)
    assert f'    nixpkgs.url = "{scaffold.DEFAULT_NIXPKGS}";' in text
    assert '    nixos-hardware.url = "github:NixOS/nixos-hardware";  # board rpi4' in text
    assert "outputs = inputs: { };" in text


def test_follows_and_overrides(builtin_plugins: Plugins) -> None:
    from dataclasses import replace

    from crossnix_tasks.boards import FlakeInput

    board = replace(builtin_plugins.boards["rpi4"], flake_inputs=(FlakeInput("hw", "github:x/hw"),))
    inputs = scaffold.flake_inputs([board], {"nixpkgs": "path:/src/nixpkgs", "extra": "github:me/extra"})
    text = scaffold.render_flake(inputs)
    assert 'nixpkgs.url = "path:/src/nixpkgs";' in text
    assert 'hw.inputs.nixpkgs.follows = "nixpkgs";' in text
    assert 'extra.url = "github:me/extra";' in text


@pytest.mark.parametrize("pair", ["x=github:a/b${builtins.abort 1}", 'x=github:a"b', "x=not a url", "1x=github:a/b", "nourl"])
def test_input_values_are_validated(pair: str) -> None:
    with pytest.raises(CrossnixError):
        scaffold.parse_overrides([pair])


def test_nix_string_escapes() -> None:
    assert scaffold.nix_string('a"b\\c${d}') == '"a\\"b\\\\c\\${d}"'


def test_scaffold_writes_a_valid_project(tmp_path: Path, builtin_plugins: Plugins) -> None:
    boards = [builtin_plugins.boards["rpi4"], builtin_plugins.boards["generic-uefi"]]
    written = scaffold.scaffold(tmp_path, boards, {})
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(scaffold.FILES)
    source = (tmp_path / "boards.toml").read_text()
    inventory = inventory_from_source(tmp_path / "boards.toml", source, builtin_plugins.boards)
    assert {n: t.board for n, t in inventory.targets.items()} == {"rpi4-1": "rpi4", "generic-uefi-1": "generic-uefi"}
    assert inventory.targets["rpi4-1"].modules == ((tmp_path / "hosts" / "common.nix").resolve(),)
    assert (tmp_path / "tasks.py").read_text().count("from crossnix_tasks import ns") == 1
    assert "/out/" in (tmp_path / ".gitignore").read_text()
    with pytest.raises(CrossnixError, match=r"already has flake\.nix, boards\.toml"):
        scaffold.scaffold(tmp_path, boards, {})
    with pytest.raises(CrossnixError, match="at least one --board"):
        scaffold.scaffold(tmp_path / "other", [], {})


def test_init_task_locks_the_standin_offline(real_nix: str, project_dir: Path) -> None:
    assert run_cli("init", "--board", "rpi4", "--standin") == 0
    lock = json.loads((project_dir / "flake.lock").read_text())
    nodes = lock["nodes"]
    assert nodes["nixpkgs"]["locked"] | {"lastModified": 0, "narHash": ""} == {
        "type": "path", "path": str(STANDIN / "nixpkgs"), "lastModified": 0, "narHash": ""
    }
    assert nodes["nixos-hardware"]["locked"]["path"] == str(STANDIN / "nixos-hardware")
    assert run_cli("check-config") == 0


def test_init_task_with_explicit_inputs(real_nix: str, project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(
        "init", "--board", "generic-uefi", "--nixpkgs", f"path:{STANDIN / 'nixpkgs'}",
        "--input", f"tools=path:{STANDIN / 'nixos-hardware'}",
    )
    assert code == 0
    flake = (project_dir / "flake.nix").read_text()
    assert f'tools.url = "path:{STANDIN / "nixos-hardware"}";' in flake
    assert "tools" in json.loads((project_dir / "flake.lock").read_text())["nodes"]
    assert run_cli("init", "--board", "generic-uefi") == 1
    assert "already has" in capsys.readouterr().err


def test_init_without_network_keeps_the_files(real_nix: str, project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # an unreachable input: the files are written, locking is left for later with a warning
    assert run_cli("init", "--board", "generic-uefi", "--nixpkgs", "path:/nonexistent/crossnix-nixpkgs") == 0
    assert (project_dir / "flake.nix").exists() and not (project_dir / "flake.lock").exists()
    assert "nix flake lock` failed" in capsys.readouterr().err
