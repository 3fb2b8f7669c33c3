"""The inventory tasks as a user runs them: add-target keeps every byte, selection, listings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, run_cli_subprocess

COMMENTED = """\
# Fleet of the Smith household.   (trailing spaces kept)

[project]
flake = "."  # the flake next to this file

# ---- defaults ----
[defaults]
user = "root"     # everyone is root here
tags = [
  "home",   # all of them
]

[targets.kitchen]   # the Pi above the fridge
board = "rpi4"
host = "kitchen.lan"
tags = ["pi"]

# the old laptop

[targets.laptop]
board = "generic-uefi"
system = "x86_64-linux"
host = "10.0.0.9"
# no tags yet
"""


def test_add_target_keeps_every_original_byte(project_dir: Path) -> None:
    inventory = project_dir / "boards.toml"
    inventory.write_text(COMMENTED)
    code = run_cli("add-target", "garage", "--board", "hifive-unmatched", "--host", "garage.lan",
                   "--tag", "riscv", "--tag", "lab", "--port", "2222")
    assert code == 0
    after = inventory.read_text()
    assert after.startswith(COMMENTED)
    added = after[len(COMMENTED):]
    assert added == (
        '\n[targets.garage]\nboard = "hifive-unmatched"\nhost = "garage.lan"\nport = 2222\n'
        'tags = ["riscv", "lab"]\n'
    )


def test_add_target_to_a_missing_file_creates_it(project_dir: Path) -> None:
    assert run_cli("add-target", "pi", "--board", "rpi4", "--host", "pi.lan") == 0
    assert (project_dir / "boards.toml").read_text() == '[targets.pi]\nboard = "rpi4"\nhost = "pi.lan"\n'


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add-target", "kitchen", "--board", "rpi4"], "target 'kitchen' already exists"),
        (["add-target", "x", "--board", "rpi5"], "unknown board 'rpi5'; installed boards: generic-uefi, hifive-unmatched, rpi4"),
        (["add-target", "x", "--board", "rpi4", "--host", "-oProxyCommand=id"], "targets.x.host"),
        (["add-target", "bad name", "--board", "rpi4"], "a target name must start with a letter"),
        (["add-target", "x", "--board", "rpi4", "--variant", "iso"], "has image variants sd-card"),
        (["add-target", "x", "--board", "generic-uefi", "--system", "mips-linux"], "system 'mips-linux' is not one of"),
    ],
)
def test_add_target_refuses_bad_input_and_changes_nothing(
    project_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    inventory = project_dir / "boards.toml"
    inventory.write_text(COMMENTED)
    assert run_cli(*argv) != 0
    assert message in capsys.readouterr().err
    assert inventory.read_text() == COMMENTED
    assert sorted(p.name for p in project_dir.iterdir()) == ["boards.toml"]


def test_targets_selection(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project_dir / "boards.toml").write_text(COMMENTED)
    assert run_cli("targets", "--json", "--on", "@pi") == 0
    assert [t["name"] for t in json.loads(capsys.readouterr().out)] == ["kitchen"]
    assert run_cli("targets", "--json", "--on", "lap*", "--on", "kitchen") == 0
    assert [t["name"] for t in json.loads(capsys.readouterr().out)] == ["kitchen", "laptop"]
    assert run_cli("targets", "--json", "--on", "kitchen,laptop") == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert run_cli("targets", "--on", "@home") == 0
    assert "kitchen" in capsys.readouterr().out
    assert run_cli("targets", "--on", "kitchn") == 2
    assert "no target matches 'kitchn'; did you mean 'kitchen'?" in capsys.readouterr().err
    assert run_cli("targets", "--on", "@p") == 2
    assert "no target has tag '@p'" in capsys.readouterr().err


def test_check_config_and_boards(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project_dir / "boards.toml").write_text(COMMENTED)
    assert run_cli("check-config") == 0
    assert "2 target(s), all valid" in capsys.readouterr().out
    assert run_cli("boards", "--json") == 0
    boards = {b["name"]: b for b in json.loads(capsys.readouterr().out)}
    assert boards["generic-uefi"]["default_variant"] == "efi-disk"
    assert {v["name"]: v["native_only"] for v in boards["generic-uefi"]["variants"]}["qemu-efi"] is True
    assert run_cli("boards", "--verbose") == 0
    assert "hifive-unmatched" in capsys.readouterr().out


def test_shipped_boards_toml_is_valid(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("CROSSNIX_INVENTORY", str(repo / "boards.toml"))
    assert run_cli("targets", "--json") == 0
    shipped = json.loads(capsys.readouterr().out)
    assert sorted(t["board"] for t in shipped) == ["generic-uefi", "hifive-unmatched", "rpi4"]


def test_every_task_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    from crossnix_tasks.collection import ns

    for name, task_object in ns.tasks.items():
        assert task_object.__doc__, f"task {name} has no docstring"
        assert run_cli(name, "--help") == 0
        assert "Usage:" in capsys.readouterr().out


def test_add_target_to_a_file_that_is_not_toml_names_the_line(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = project_dir / "boards.toml"
    inventory.write_text('[targets.a\nboard = "rpi4"\n')
    assert run_cli("add-target", "b", "--board", "rpi4") == 2
    err = capsys.readouterr().err
    assert "boards.toml:1:11: invalid TOML" in err and "Traceback" not in err
    assert inventory.read_text() == '[targets.a\nboard = "rpi4"\n'


def test_an_os_error_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "boards.toml"
    result = run_cli_subprocess(
        "add-target", "pi", "--board", "rpi4", cwd=tmp_path, env={"CROSSNIX_INVENTORY": str(missing)}
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: No such file or directory: ") and str(missing.parent) in result.stderr
