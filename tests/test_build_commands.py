"""crossnix_tasks.build with process.run replaced: the exact Nix command lines for a selection, per strategy."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from crossnix_tasks import build, evaluator, probe
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.project import Project
from tests.nixfixtures import FakeRun

EVAL_NIX = str(evaluator.EVAL_NIX)
PROBE_NIX = str(probe.PROBE_NIX)


def drv(name: str) -> str:
    return f"/nix/store/{'d' * 32}-{name}.drv"


def out(drv_path: str) -> str:
    return drv_path.removesuffix(".drv").replace("/" + "d" * 32, "/" + "o" * 32)


def fake_plan(argv: tuple[str, ...]) -> str:
    spec = json.loads(Path(argv[argv.index("specFile") + 1]).read_text())
    plan = {}
    for name, target in spec["targets"].items():
        entry: dict[str, object] = {}
        if target["want"]["toplevel"]:
            entry["toplevel"] = drv(f"nixos-system-{name}")
        if target["want"]["image"]:
            variant = target["want"]["image"]
            entry["image"] = {"drvPath": drv(f"image-{name}-{variant}"), "filePath": f"img/{name}.img", "name": "x"}
        plan[name] = entry
    return json.dumps(plan)


def fake_build(argv: tuple[str, ...]) -> str:
    drvs = [a for a in argv if a.endswith(".drv")]
    return json.dumps([{"drvPath": d, "outputs": {"out": out(d)}} for d in drvs])


@pytest.fixture
def project(tmp_path: Path) -> Project:
    (tmp_path / "flake.nix").write_text("{ outputs = _: { }; }")
    (tmp_path / "flake.lock").write_text("{}")
    (tmp_path / "boards.toml").write_text(textwrap.dedent("""
        [defaults]
        build = "cross"

        [targets.pi-a]
        board = "rpi4"
        [targets.pi-b]
        board = "rpi4"
        [targets.nas]
        board = "generic-uefi"
        system = "x86_64-linux"
        [targets.emu]
        board = "rpi4"
        build = "emulated"
        [targets.far]
        board = "hifive-unmatched"
        build = "remote"
        build_host = "builder@big-box"
        [targets.farm]
        board = "rpi4"
        build = "remote"
        builders = "ssh://arm-builder aarch64-linux"
        """))
    return Project(inventory_path=tmp_path / "boards.toml")


def targets(project: Project, *names: str) -> list:
    return [project.inventory.targets[n] for n in names]


def eval_argv() -> tuple[str, ...]:
    return ("nix", "eval", "--json", "--impure", "--log-format", "internal-json", "-f", EVAL_NIX, "--argstr", "specFile")


BUILD = ("nix", "build", "--json", "--log-format", "internal-json", "--no-link", "--max-jobs", "auto", "--keep-going")


async def test_one_eval_and_one_build_for_the_selection(project: Project, fake_run: FakeRun) -> None:
    fake_run.answer(["nix", "eval"], fake_plan)
    fake_run.answer(["nix", "build"], fake_build)
    result = await build.build_toplevels(project, targets(project, "pi-a", "pi-b", "nas"))
    assert result == {n: out(drv(f"nixos-system-{n}")) for n in ("pi-a", "pi-b", "nas")}
    assert len(fake_run.calls) == 2
    assert fake_run.calls[0][:-2] == eval_argv() and fake_run.calls[0][-1] == "plan"
    assert fake_run.calls[1] == (*BUILD, drv("nixos-system-pi-a"), drv("nixos-system-pi-b"), drv("nixos-system-nas"))


async def test_process_count_does_not_grow_with_the_selection(project: Project, fake_run: FakeRun) -> None:
    fake_run.answer(["nix", "eval"], fake_plan)
    fake_run.answer(["nix", "build"], fake_build)
    await build.build_toplevels(project, targets(project, "pi-a"))
    one = len(fake_run.calls)
    fake_run.calls.clear()
    await build.build_toplevels(project, targets(project, "pi-a", "pi-b", "nas"))
    assert len(fake_run.calls) == one == 2


async def test_emulated_targets_are_probed_first(project: Project, fake_run: FakeRun, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "_cache", {})
    monkeypatch.setattr(probe, "local_system", lambda: "x86_64-linux")
    fake_run.answer(["nix", "eval"], fake_plan)
    fake_run.answer(["nix", "build"], fake_build)
    await build.build_toplevels(project, targets(project, "emu", "pi-a"))
    probe_call = fake_run.calls[0]
    assert probe_call[:8] == ("nix", "build", "--no-link", "--json", "--log-format", "internal-json", "-f", PROBE_NIX)
    assert probe_call[8:11] == ("--argstr", "system", "aarch64-linux")
    assert [c[1] for c in fake_run.calls] == ["build", "eval", "build"]
    assert fake_run.calls[2] == (*BUILD, drv("nixos-system-emu"), drv("nixos-system-pi-a"))


async def test_remote_strategies(project: Project, fake_run: FakeRun) -> None:
    fake_run.answer(["nix", "eval"], fake_plan)
    fake_run.answer(["nix", "build"], fake_build)
    result = await build.build_toplevels(project, targets(project, "pi-a", "far", "farm"))
    assert result["far"] == out(drv("nixos-system-far"))
    calls = fake_run.calls
    assert calls[0][1] == "eval"
    rest = sorted(calls[1:])
    far, farm = drv("nixos-system-far"), drv("nixos-system-farm")
    assert rest == sorted([
        (*BUILD, drv("nixos-system-pi-a")),
        ("nix", "build", "--json", "--log-format", "internal-json", "--no-link", "--max-jobs", "0", "--keep-going",
         "--builders", "ssh://arm-builder aarch64-linux", farm),
        ("nix", "copy", "--log-format", "internal-json", "--to", "ssh-ng://builder@big-box", "--derivation", far),
        ("nix", "build", "--json", "--log-format", "internal-json", "--no-link", "--max-jobs", "auto", "--keep-going",
         "--store", "ssh-ng://builder@big-box", far),
        ("nix", "copy", "--log-format", "internal-json", "--from", "ssh-ng://builder@big-box", "--no-check-sigs", out(far)),
    ])
    # the build host's steps run in order
    host_calls = [c for c in calls if any("big-box" in a for a in c)]
    assert [c[1] for c in host_calls] == ["copy", "build", "copy"]


async def test_images_in_one_build_with_gc_roots(project: Project, fake_run: FakeRun) -> None:
    fake_run.answer(["nix", "eval"], fake_plan)
    fake_run.answer(["nix", "build"], fake_build)
    with pytest.raises(CrossnixError, match=r"no img/pi-a\.img"):  # the fake outputs do not exist
        await build.build_images(project, targets(project, "pi-a", "nas"))
    build_call = fake_run.calls[1]
    assert build_call[:5] == ("nix", "build", "--json", "--log-format", "internal-json")
    assert build_call[5] == "--out-link" and "/out/.gcroots/" in build_call[6] and build_call[6].endswith("/g0")
    assert build_call[-2:] == (drv("image-pi-a-sd-card"), drv("image-nas-efi-disk"))


def test_variant_choice_and_refusals(project: Project) -> None:
    nas = project.inventory.targets["nas"]
    assert build.choose_variant(project, nas) == "efi-disk"
    assert build.choose_variant(project, nas, "qemu-efi") == "qemu-efi"  # x86_64 here: native
    with pytest.raises(CrossnixError, match="has no image variant 'sd-card'; it has: efi-disk, iso, qemu-efi, raw-efi"):
        build.choose_variant(project, nas, "sd-card")


def test_native_only_variant_refused_for_cross(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "local_system", lambda: "aarch64-linux")
    nas = project.inventory.targets["nas"]  # x86_64 target, cross from an aarch64 machine
    with pytest.raises(CrossnixError) as info:
        build.choose_variant(project, nas, "raw-efi")
    assert "cannot be cross-compiled for x86_64-linux" in info.value.message
    assert "make-disk-image.nix" in info.value.message  # the board's native_only_reason
    assert info.value.hint and 'build = "emulated"' in info.value.hint


async def test_native_on_another_system_is_refused(project: Project, fake_run: FakeRun) -> None:
    target = project.inventory.targets["pi-a"]
    from dataclasses import replace

    with pytest.raises(CrossnixError, match='build = "native", but this machine is'):
        await build.build_toplevels(project, [replace(target, build="native")])
    assert fake_run.calls == []


def test_example_target_takes_the_defaults(project: Project) -> None:
    example = build.example_target(project, "hifive-unmatched")
    assert (example.name, example.board, example.system, example.build) == (
        "example-hifive-unmatched", "hifive-unmatched", "riscv64-linux", "cross"
    )
    with pytest.raises(CrossnixError, match="unknown board"):
        build.example_target(project, "rpi5")
