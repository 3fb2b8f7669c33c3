"""`inv image`, `inv build` through the task layer, on a project using the offline nixpkgs stand-in (NOT nixpkgs)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.nixfixtures import lock_project, write_standin_project

pytestmark = pytest.mark.usefixtures("real_nix")

TOML = """
[defaults]
modules = ["hosts/common.nix"]

[targets.pi]
board = "rpi4"
tags = ["home"]

[targets.box]
board = "generic-uefi"
system = "x86_64-linux"
tags = ["home"]
"""


@pytest.fixture
def fleet(project_dir: Path) -> Path:
    write_standin_project(project_dir, TOML)
    asyncio.run(lock_project(project_dir))
    return project_dir


def test_image_task_json(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("image", "--board", "hifive-unmatched", "--target", "pi", "--json") == 0
    captured = capsys.readouterr()
    images = json.loads(captured.out)
    assert [(i["target"], i["variant"]) for i in images] == [("pi", "sd-card"), ("example-hifive-unmatched", "sd-card")]
    for image in images:
        assert Path(image["path"]).parent == fleet / "out" / image["target"]
        assert len(image["sha256"]) == 64 and image["size"] > 0 and image["offline_standin"] is True
    assert "evaluating 2 targets" in captured.err  # plain progress: stdout is not a terminal


def test_image_task_human_output_and_out_dir(fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("image", "--target", "box", "--variant", "iso", "--out", str(tmp_path / "imgs"), "--copy") == 0
    captured = capsys.readouterr()
    placed = next((tmp_path / "imgs" / "box").glob("*.iso"))
    assert not placed.is_symlink()
    assert f"{placed.relative_to(Path.cwd())}\n" in captured.out
    assert "  sha256  " in captured.out and "  size    " in captured.out
    assert "NOT nixpkgs" in captured.err


def test_build_task(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("build", "--on", "@home", "--json") == 0
    built = json.loads(capsys.readouterr().out)
    assert [b["target"] for b in built] == ["pi", "box"]
    assert all(Path(b["toplevel"], "bin", "switch-to-configuration").exists() for b in built)


def test_selection_is_required(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("build") == 2
    assert run_cli("image") == 2
    assert "--target NAME" in capsys.readouterr().err
    assert run_cli("image", "--target", "box", "--variant", "sd-card") == 1
    assert "has no image variant 'sd-card'" in capsys.readouterr().err


def test_image_paths_are_printed_as_text_not_markup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from crossnix_tasks import ui
    from crossnix_tasks.build import BuiltImage
    from crossnix_tasks.commands import build as commands

    stream = io.StringIO()
    monkeypatch.setattr(ui, "out", Console(file=stream, width=200))
    placed = tmp_path / "out[/tmp]" / "[red]pi" / "nixos.img.zst"
    commands._print_image(BuiltImage("pi", "sd-card", "/nix/store/x", Path("/nix/store/x/i.img"), 3, "ab", placed))
    assert str(placed) in stream.getvalue()
