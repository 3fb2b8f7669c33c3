"""Board plugins: built-ins through entry points, third-party distributions, broken plugins, name clashes."""

from __future__ import annotations

import importlib.metadata
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossnix_tasks import Board, ImageVariant, Media, hookimpl, hookspecs
from crossnix_tasks.inventory import Target
from crossnix_tasks.plugins import ENTRY_POINT_GROUP, load_plugins
from tests.conftest import run_cli_subprocess, write_distribution

BUILTINS = {"rpi4", "hifive-unmatched", "generic-uefi"}

THIRD_PARTY_BOARD = """
    from pathlib import Path
    from crossnix_tasks import Board, ImageVariant, Media, hookimpl

    MODULE = Path(__file__).with_name("visionfive2.nix")

    @hookimpl
    def crossnix_boards():
        return [Board(
            name="visionfive2",
            description="StarFive VisionFive 2",
            systems=("riscv64-linux",),
            variants=(ImageVariant("sd-card", "SD card", Media.SD_CARD),),
            default_variant="sd-card",
            modules=(MODULE,),
        )]
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path where tests install distributions."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = set(sys.modules)
    yield site
    for name in set(sys.modules) - before:
        sys.modules.pop(name, None)


def test_builtin_boards_are_registered_through_the_entry_point_group() -> None:
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert set(eps) >= BUILTINS
    assert {eps[name].dist.name for name in BUILTINS if eps[name].dist} == {"crossnix"}
    plugins = load_plugins(entry_points=[eps[name] for name in BUILTINS])
    assert set(plugins.boards) == BUILTINS
    assert not plugins.errors


def test_builtin_board_facts(builtin_plugins) -> None:  # type: ignore[no-untyped-def]
    boards = builtin_plugins.boards
    assert boards["rpi4"].systems == ("aarch64-linux",)
    assert [i.name for i in boards["rpi4"].flake_inputs] == ["nixos-hardware"]
    assert boards["hifive-unmatched"].systems == ("riscv64-linux",)
    assert set(boards["generic-uefi"].systems) == {"x86_64-linux", "aarch64-linux", "riscv64-linux"}
    native_only = {v.name for v in boards["generic-uefi"].variants if v.native_only}
    assert native_only == {"qemu-efi", "raw-efi"}
    for board in boards.values():
        assert board.variant(board.default_variant) is not None
        assert all(module.is_file() for module in board.modules)
        assert set(board.qemu) == set(board.systems)


def test_third_party_distribution_is_listed_by_inv_boards_and_usable_by_a_target(site: Path) -> None:
    write_distribution(site, "crossnix-visionfive", "crossnix_visionfive", {"visionfive2": "crossnix_visionfive"},
                       THIRD_PARTY_BOARD)
    (site / "visionfive2.nix").write_text("{ ... }: { }\n")
    project = site.parent / "project"
    project.mkdir()
    (project / "boards.toml").write_text('[targets.vf]\nboard = "visionfive2"\nhost = "vf.lan"\n')

    boards = run_cli_subprocess("boards", "--json", cwd=project, extra_path=site)
    assert boards.returncode == 0, boards.stderr
    listed = {b["name"]: b for b in json.loads(boards.stdout)}
    assert set(listed) == BUILTINS | {"visionfive2"}
    assert listed["visionfive2"]["distribution"] == "crossnix-visionfive"

    targets = run_cli_subprocess("targets", "--json", cwd=project, extra_path=site)
    assert targets.returncode == 0, targets.stderr
    [target] = json.loads(targets.stdout)
    assert (target["board"], target["system"]) == ("visionfive2", "riscv64-linux")

    plugins = run_cli_subprocess("plugins", "--json", cwd=project, extra_path=site)
    report = json.loads(plugins.stdout)
    mine = next(p for p in report["plugins"] if p["name"] == "visionfive2")
    assert (mine["distribution"], mine["version"], mine["boards"]) == ("crossnix-visionfive", "0.3", ["visionfive2"])
    assert mine["hooks"] == ["crossnix_boards"]


def test_broken_plugin_is_reported_with_its_distribution_and_the_others_keep_working(site: Path) -> None:
    write_distribution(site, "crossnix-broken", "crossnix_broken", {"broken": "crossnix_broken"},
                       "raise RuntimeError('missing dependency foo')\n")
    write_distribution(site, "crossnix-typo", "crossnix_typo", {"typo": "crossnix_typo"},
                       "from crossnix_tasks import hookimpl\n@hookimpl\ndef crossnix_bords():\n    return []\n")
    plugins = load_plugins()
    assert set(plugins.boards) >= BUILTINS
    errors = {e.plugin: e for e in plugins.errors}
    assert errors["broken"].distribution == "crossnix-broken"
    assert "RuntimeError: missing dependency foo" in errors["broken"].error
    assert errors["typo"].distribution == "crossnix-typo"
    assert "crossnix_bords" in errors["typo"].error

    listing = run_cli_subprocess("--list", cwd=site, extra_path=site)
    assert listing.returncode == 0, listing.stderr
    assert "add-target" in listing.stdout
    shown = run_cli_subprocess("plugins", cwd=site, extra_path=site)
    assert shown.returncode == 1
    assert "crossnix-broken" in shown.stderr and "missing dependency foo" in shown.stderr
    assert "Traceback" not in shown.stderr
    boards = run_cli_subprocess("boards", cwd=site, extra_path=site)
    assert boards.returncode == 0 and "rpi4" in boards.stdout
    assert "crossnix-broken" in boards.stderr


def test_two_plugins_claiming_one_board_is_an_error_naming_both(site: Path) -> None:
    clash = THIRD_PARTY_BOARD.replace('"visionfive2"', '"rpi4"')
    write_distribution(site, "crossnix-otherpi", "crossnix_otherpi", {"otherpi": "crossnix_otherpi"}, clash)
    (site / "visionfive2.nix").write_text("{ ... }: { }\n")
    plugins = load_plugins()
    [error] = [e for e in plugins.errors if "otherpi" in e.plugin]
    message = str(error)
    assert "plugin 'rpi4' (crossnix)" in message and "plugin 'otherpi' (crossnix-otherpi)" in message
    assert "rpi4" not in plugins.boards  # ambiguous: neither is used
    assert {"hifive-unmatched", "generic-uefi"} <= set(plugins.boards)


def test_two_distributions_using_one_entry_point_name_are_both_named(site: Path) -> None:
    write_distribution(site, "crossnix-rpi4-fork", "crossnix_rpi4_fork", {"rpi4": "crossnix_rpi4_fork"},
                       THIRD_PARTY_BOARD)
    (site / "visionfive2.nix").write_text("{ ... }: { }\n")
    plugins = load_plugins()
    messages = [str(e) for e in plugins.errors if e.plugin == "rpi4"]
    assert len(messages) == 1
    assert "crossnix-rpi4-fork" in messages[0] and "'crossnix'" in messages[0]


def test_disable_env_blocks_a_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSNIX_DISABLE_PLUGINS", "hifive-unmatched, generic-uefi")
    assert set(load_plugins().boards) == {"rpi4"}


class SitePolicy:
    """A plugin adding a module to every target of one board, as a site policy would."""

    def __init__(self, module: Path) -> None:
        self.module = module

    @hookimpl
    def crossnix_nixos_modules(self, target: Target, board: Board) -> list[Path]:
        return [self.module] if board.name == "rpi4" else []


class ExtraBoard:
    def __init__(self, module: Path) -> None:
        self.module = module

    @hookimpl
    def crossnix_boards(self) -> Board:
        return Board("toy", "toy board", ("x86_64-linux",),
                     (ImageVariant("iso", "iso", Media.ISO),), "iso", (self.module,))


def test_hook_crossnix_boards(tmp_path: Path) -> None:
    module = tmp_path / "toy.nix"
    module.write_text("{ }")
    plugins = load_plugins(extra=[("toy", ExtraBoard(module))])
    assert plugins.boards["toy"].modules == (module,)
    assert plugins.board_owner("toy") == "toy"
    assert "toy" in {info.name for info in plugins.infos()}


def test_hook_crossnix_nixos_modules(tmp_path: Path, builtin_plugins) -> None:  # type: ignore[no-untyped-def]
    policy = tmp_path / "policy.nix"
    policy.write_text("{ }")
    plugins = load_plugins(extra=[("policy", SitePolicy(policy))])
    pi = Target(name="pi", board="rpi4", system="aarch64-linux")
    pc = Target(name="pc", board="generic-uefi", system="x86_64-linux")
    assert plugins.target_modules(pi, plugins.boards["rpi4"]) == [policy]
    assert plugins.target_modules(pc, plugins.boards["generic-uefi"]) == []


def test_every_hook_has_a_test() -> None:
    hooks = [name for name in dir(hookspecs) if name.startswith("crossnix_")]
    tested = {name.removeprefix("test_hook_") for name in globals() if name.startswith("test_hook_")}
    assert hooks and set(hooks) <= tested, f"hooks without a test_hook_<name>: {set(hooks) - tested}"


def test_board_validation_rejects_an_inconsistent_board(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="default variant 'usb' is not one of its variants"):
        Board("x", "x", ("x86_64-linux",), (ImageVariant("iso", "iso", Media.ISO),), "usb", ())
    with pytest.raises(ValueError, match="module files missing"):
        Board("x", "x", ("x86_64-linux",), (ImageVariant("iso", "iso", Media.ISO),), "iso", (tmp_path / "no.nix",))


class _Answers:
    def __init__(self, answer: object) -> None:
        self.answer = answer

    @hookimpl
    def crossnix_nixos_modules(self, board: Board) -> object:  # a subset of the hook's arguments
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_hook_crossnix_nixos_modules_order_and_broken_answers(tmp_path: Path) -> None:
    from crossnix_tasks.errors import CrossnixError

    first, second = tmp_path / "first.nix", tmp_path / "second.nix"
    pi = Target(name="pi", board="rpi4", system="aarch64-linux")
    plugins = load_plugins(extra=[("a", _Answers([first])), ("b", _Answers(None)), ("c", _Answers((str(second),)))])
    assert plugins.target_modules(pi, plugins.boards["rpi4"]) == [first, second]  # registration order
    for answer, message in [
        (RuntimeError("site policy bug"), "plugin 'broken' ((registered directly)): crossnix_nixos_modules() "
                                          "failed: RuntimeError: site policy bug"),
        ("policy.nix", "must return a list of module paths, not 'policy.nix'"),  # not split into letters
        ([1], "must return a list of module paths"),
    ]:
        plugins = load_plugins(extra=[("broken", _Answers(answer))])
        with pytest.raises(CrossnixError) as e:
            plugins.target_modules(pi, plugins.boards["rpi4"])
        assert message in e.value.message
