"""crossnix_tasks.evaluator: the JSON spec handed to eval.nix (modules, platforms, settings), and eval.nix itself."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from crossnix_tasks import evaluator
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.evaluator import TargetRequest
from crossnix_tasks.inventory import Target
from crossnix_tasks.plugins import load_plugins
from crossnix_tasks.project import Project

BOARDS = Path(__file__).resolve().parent.parent / "plugins" / "crossnix_boards" / "nix"


class SitePolicy:
    def __init__(self, module: Path) -> None:
        self.module = module

    def crossnix_nixos_modules(self, target: Target, board: object) -> list[Path]:
        return [self.module] if "policy" in target.tags else []


from crossnix_tasks.hookspecs import hookimpl  # noqa: E402

SitePolicy.crossnix_nixos_modules = hookimpl(SitePolicy.crossnix_nixos_modules)  # type: ignore[method-assign]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    (tmp_path / "flake.nix").write_text("{ outputs = _: { }; }")
    (tmp_path / "flake.lock").write_text("{}")
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "common.nix").write_text("{ }")
    (tmp_path / "policy.nix").write_text("{ }")
    (tmp_path / "boards.toml").write_text(textwrap.dedent("""
        [defaults]
        modules = ["hosts/common.nix"]

        [targets.pi]
        board = "rpi4"
        tags = ["policy"]
        build = "emulated"

        [targets.infra]
        board = "generic-uefi"
        system = "aarch64-linux"
        flake = "./infra#box"
        image_variant = "iso"
        """))
    plugins = load_plugins(extra=[("site-policy", SitePolicy(tmp_path / "policy.nix"))])
    return Project(inventory_path=tmp_path / "boards.toml", plugins=plugins)


def test_spec_of_a_target(project: Project, tmp_path: Path) -> None:
    pi = project.inventory.targets["pi"]
    spec = evaluator.build_spec(project, [TargetRequest(pi, image="sd-card")], build_system="x86_64-linux")
    assert spec["version"] == 1
    assert spec["project"] == {"lockFile": str(tmp_path / "flake.lock"), "flakeRef": None}
    target = spec["targets"]["pi"]
    assert target["modules"] == [
        str(evaluator.CORE_MODULE),
        *(str(p) for p in sorted(evaluator.MODULES_DIR.glob("*.nix"))),
        str(BOARDS / "rpi4.nix"),
        str(tmp_path / "policy.nix"),
        str((tmp_path / "hosts" / "common.nix").resolve()),
    ]
    assert target["flake"] is None
    crossnix = dict(target["crossnix"])
    crossnix.pop("settings")
    assert crossnix == {
        "targetName": "pi", "board": "rpi4", "system": "aarch64-linux", "buildSystem": "x86_64-linux",
        "strategy": "emulated", "variant": "sd-card",
    }
    assert target["want"] == {"toplevel": True, "image": "sd-card"}
    json.dumps(spec)  # data only


def test_flake_targets_resolve_relative_refs(project: Project, tmp_path: Path) -> None:
    infra = project.inventory.targets["infra"]
    spec = evaluator.build_spec(project, [TargetRequest(infra, toplevel=False)], build_system="x86_64-linux")
    target = spec["targets"]["infra"]
    assert target["flake"] == {"ref": str(tmp_path / "infra"), "name": "box"}
    assert target["crossnix"]["variant"] == "iso"  # the target's image_variant
    assert str(BOARDS / "generic-uefi.nix") in target["modules"]


def first_provider(project: Project, target: Target) -> dict[str, Any]:
    return {"first": {"name": target.name}}


def second_provider(project: Project, target: Target) -> dict[str, Any]:
    return {"second": [1, 2]}


def clashing_provider(project: Project, target: Target) -> dict[str, Any]:
    return {"first": 1}


def non_json_provider(project: Project, target: Target) -> dict[str, Any]:
    return {"path": Path("/x")}


def test_settings_providers_merge_and_conflict(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    pi = project.inventory.targets["pi"]
    here = "tests.test_evaluator:"
    monkeypatch.setattr(evaluator, "SETTINGS_PROVIDERS", (here + "first_provider", here + "second_provider"))
    assert evaluator.settings_for(project, pi) == {"first": {"name": "pi"}, "second": [1, 2]}

    monkeypatch.setattr(evaluator, "SETTINGS_PROVIDERS", (here + "first_provider", here + "clashing_provider"))
    with pytest.raises(CrossnixError, match=r"set by both 'tests\.test_evaluator:first_provider' and 'tests\.test_evaluator:clashing_provider'"):
        evaluator.settings_for(project, pi)

    monkeypatch.setattr(evaluator, "SETTINGS_PROVIDERS", (here + "non_json_provider",))
    with pytest.raises(CrossnixError, match="not JSON data"):
        evaluator.settings_for(project, pi)


def test_missing_lock_and_missing_flake(project: Project, tmp_path: Path) -> None:
    pi = project.inventory.targets["pi"]
    (tmp_path / "flake.lock").unlink()
    with pytest.raises(CrossnixError) as info:
        evaluator.build_spec(project, [TargetRequest(pi)], build_system="x86_64-linux")
    assert "has no flake.lock" in info.value.message and "nix flake lock" in (info.value.hint or "")
    (tmp_path / "flake.nix").unlink()
    with pytest.raises(CrossnixError, match=r"no flake\.nix next to"):
        evaluator.build_spec(project, [TargetRequest(pi)], build_system="x86_64-linux")


def test_spec_file_is_private_and_removed() -> None:
    with evaluator.spec_file({"a": 1}) as path:
        assert json.loads(path.read_text()) == {"a": 1}
        assert path.stat().st_mode & 0o077 == 0
    assert not path.exists()


def test_eval_nix_is_package_data() -> None:
    for name in ("eval.nix", "crossnix.nix", "probe.nix", "modules/README.md"):
        assert (evaluator.NIXEXPR / name).is_file(), name


# eval.nix itself, with real Nix ----------------------------------------------------------------------------


async def eval_spec(spec: dict[str, Any], attr: str, tmp_path: Path) -> Any:
    from crossnix_tasks import nix

    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    return await nix.eval_json(evaluator.EVAL_NIX, attr, argstr={"specFile": str(spec_path)})


def bare_target(name: str) -> dict[str, Any]:
    return {
        "modules": [], "flake": None, "want": {"toplevel": True, "image": None},
        "crossnix": {"targetName": name, "board": "b", "system": "x86_64-linux", "buildSystem": "x86_64-linux",
                     "strategy": "cross", "variant": "v", "settings": {}},
    }


async def test_missing_nixpkgs_of_a_flake_ref_project_is_named(real_nix: str, tmp_path: Path) -> None:
    # [project] flake = "<ref>": lockFile is null in the spec, which must not end in "cannot coerce null"
    from crossnix_tasks.nix import NixError

    (tmp_path / "fl").mkdir()
    (tmp_path / "fl" / "flake.nix").write_text("{ outputs = _: { }; }")
    ref = f"path:{tmp_path / 'fl'}"
    spec = {"version": 1, "project": {"lockFile": None, "flakeRef": ref}, "targets": {"t": bare_target("t")}}
    with pytest.raises(NixError) as info:
        await eval_spec(spec, "plan", tmp_path)
    assert f"crossnix: flake input 'nixpkgs' is missing from {ref}" in info.value.message
    assert "cannot coerce" not in info.value.message
    assert info.value.known == ["missing-flake-input"]


def flake_dir(path: Path, outputs: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "flake.nix").write_text("{ outputs = { self, ... }: " + outputs + "; }")
    return path


async def test_lock_inputs_are_read_like_nix_call_flake(real_nix: str, tmp_path: Path) -> None:
    """Relative ``path:`` inputs (Nix 2.8 locks them without a parent, newer Nix with ``parent``) lie inside
    their parent flake, and an input's outPath is its flake's directory (``?dir=``), as in Nix's call-flake.nix."""
    project = tmp_path / "project"
    flake_dir(project, "{ }")
    flake_dir(project / "sub", '{ where = "${self}"; marker = builtins.readFile ./marker; }')
    (project / "sub" / "marker").write_text("sub")
    flake_dir(project / "sub" / "deeper", '{ marker = builtins.readFile ./marker; }')
    (project / "sub" / "deeper" / "marker").write_text("deeper")
    tree = tmp_path / "tree"
    flake_dir(tree / "inner", '{ where = "${self}"; marker = builtins.readFile ./marker; }')
    (tree / "inner" / "marker").write_text("inner")
    lock = {
        "version": 7,
        "root": "root",
        "nodes": {
            "root": {"inputs": {"sub": "sub", "inner": "inner", "deeper": "deeper"}},
            "sub": {"locked": {"type": "path", "path": "./sub"}, "original": {"type": "path", "path": "./sub"}},
            "deeper": {"locked": {"type": "path", "path": "./deeper"}, "parent": ["sub"],
                       "original": {"type": "path", "path": "./deeper"}},
            "inner": {"locked": {"type": "path", "path": str(tree), "dir": "inner"},
                      "original": {"type": "path", "path": str(tree), "dir": "inner"}},
        },
    }
    (project / "flake.lock").write_text(json.dumps(lock))
    spec = {"version": 1, "project": {"lockFile": str(project / "flake.lock"), "flakeRef": None}, "targets": {}}
    got = {
        attr: await eval_spec(spec, f"projectInputs.{attr}", tmp_path)
        for attr in ("sub.marker", "sub.where", "sub.outPath", "deeper.marker", "deeper.outPath",
                     "inner.marker", "inner.where", "inner.outPath", "inner.sourceInfo.outPath")
    }
    check_call_flake_layout(got)


def check_call_flake_layout(got: dict[str, Any]) -> None:
    assert (got["sub.marker"], got["deeper.marker"], got["inner.marker"]) == ("sub", "deeper", "inner")
    assert got["sub.where"] == got["sub.outPath"]
    assert os.path.normpath(got["deeper.outPath"]) == got["sub.outPath"] + "/deeper"
    # with ?dir=, self and outPath are the flake's directory, sourceInfo the whole tree
    assert got["inner.where"] == got["inner.outPath"] == got["inner.sourceInfo.outPath"] + "/inner"
    # only the relative input's own directory was copied, never the project directory
    assert not Path(got["sub.outPath"], "flake.lock").exists()
