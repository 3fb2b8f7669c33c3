"""crossnix_tasks.nix: exact command lines (process.run replaced) and the same functions against real Nix 2.8."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from crossnix_tasks import nix, process
from crossnix_tasks.nix import NixError
from tests.nixfixtures import FakeRun

BUILD_JSON = json.dumps([{"drvPath": "/nix/store/aaa-a.drv", "outputs": {"out": "/nix/store/bbb-a"}}])


async def test_eval_json_argv(fake_run: FakeRun) -> None:
    fake_run.answer(["nix", "eval"], '{"x": 1}')
    value = await nix.eval_json(Path("/e/eval.nix"), "plan", argstr={"specFile": "/tmp/spec.json"})
    assert value == {"x": 1}
    assert fake_run.calls == [
        (
            "nix", "eval", "--json", "--impure", "--log-format", "internal-json", "-f", "/e/eval.nix",
            "--argstr", "specFile", "/tmp/spec.json", "plan",
        )
    ]
    env = fake_run.envs[0]
    assert env is not None and "extra-experimental-features = nix-command flakes" in env["NIX_CONFIG"]


async def test_build_argv(fake_run: FakeRun) -> None:
    fake_run.answer(["nix", "build"], BUILD_JSON)
    results = await nix.build(["/nix/store/aaa-a.drv", "/nix/store/ccc-c.drv"])
    assert results == [nix.BuildResult("/nix/store/aaa-a.drv", {"out": "/nix/store/bbb-a"})]
    assert results[0].out == "/nix/store/bbb-a"
    await nix.build(["/nix/store/aaa-a.drv"], store="ssh-ng://builder", out_link=Path("/o/r"), keep_going=False)
    await nix.build(["/nix/store/aaa-a.drv"], builders="ssh://big aarch64-linux", max_jobs="0")
    assert fake_run.calls == [
        ("nix", "build", "--json", "--log-format", "internal-json", "--no-link", "--max-jobs", "auto", "--keep-going",
         "/nix/store/aaa-a.drv", "/nix/store/ccc-c.drv"),
        ("nix", "build", "--json", "--log-format", "internal-json", "--out-link", "/o/r", "--max-jobs", "auto",
         "--store", "ssh-ng://builder", "/nix/store/aaa-a.drv"),
        ("nix", "build", "--json", "--log-format", "internal-json", "--no-link", "--max-jobs", "0", "--keep-going",
         "--builders", "ssh://big aarch64-linux", "/nix/store/aaa-a.drv"),
    ]
    assert await nix.build([]) == []
    assert len(fake_run.calls) == 3


@pytest.mark.parametrize(("version", "installable"), [
    ("nix (Nix) 2.8.0", "/nix/store/aaa-a.drv"),
    ("nix (Nix) 2.12.1", "/nix/store/aaa-a.drv"),
    ("nix (Nix) 2.13.0", "/nix/store/aaa-a.drv^*"),  # a bare .drv became the file itself after 2.13
    ("nix (Nix) 2.28.3", "/nix/store/aaa-a.drv^*"),
    ("nix (Lix, like Nix) 2.91.1", "/nix/store/aaa-a.drv^*"),
    ("", "/nix/store/aaa-a.drv"),
])
async def test_build_asks_for_the_outputs_of_a_drv_on_any_nix(
    fake_run: FakeRun, monkeypatch: pytest.MonkeyPatch, version: str, installable: str
) -> None:
    monkeypatch.setattr(nix, "_drv_outputs_suffix", None)
    fake_run.answer(["nix", "--version"], version)
    fake_run.answer(["nix", "build"], BUILD_JSON)
    await nix.build(["/nix/store/aaa-a.drv", "/nix/store/x-already-built"])
    await nix.build(["/nix/store/aaa-a.drv"])
    assert fake_run.calls[0] == ("nix", "--version")
    assert [call[-2:] for call in fake_run.calls[1:2]] == [(installable, "/nix/store/x-already-built")]
    assert fake_run.calls[2][-1] == installable
    assert len(fake_run.calls) == 3  # the version is asked once


async def test_real_nix_version_picks_the_installable_syntax(real_nix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nix, "_drv_outputs_suffix", None)
    version = nix.parse_version((await process.run(["nix", "--version"])).stdout)
    assert version is not None
    assert await nix.drv_outputs_suffix() == ("^*" if version >= (2, 13) else "")


async def test_copy_argv_and_sshopts(fake_run: FakeRun) -> None:
    await nix.copy(["/nix/store/x-a"], to="ssh-ng://pi", substitute_on_destination=True, ssh_opts="-F /k/ssh_config")
    await nix.copy(["/nix/store/x-a"], from_="ssh-ng://b", no_check_sigs=True)
    await nix.copy(["/nix/store/y.drv"], to="ssh-ng://b", derivation=True)
    assert fake_run.calls == [
        ("nix", "copy", "--log-format", "internal-json", "--to", "ssh-ng://pi", "--substitute-on-destination",
         "/nix/store/x-a"),
        ("nix", "copy", "--log-format", "internal-json", "--from", "ssh-ng://b", "--no-check-sigs", "/nix/store/x-a"),
        ("nix", "copy", "--log-format", "internal-json", "--to", "ssh-ng://b", "--derivation", "/nix/store/y.drv"),
    ]
    first_env = fake_run.envs[0]
    assert first_env is not None and first_env["NIX_SSHOPTS"] == "-F /k/ssh_config"
    with pytest.raises(ValueError):
        await nix.copy(["/nix/store/x-a"])


async def test_store_and_key_argv(fake_run: FakeRun) -> None:
    fake_run.answer(["nix", "path-info"], "[]")
    fake_run.answer(["nix", "key", "generate-secret"], "k1:SECRET\n")
    fake_run.answer(["nix", "key", "convert-secret-to-public"], "k1:PUBLIC\n")
    fake_run.answer(["nix", "show-derivation"], "{}")
    fake_run.answer(["nix", "show-config"], '{"system": {"value": "x86_64-linux"}, "max-jobs": {"value": 1}}')
    await nix.path_info(["/nix/store/x-a"], store="ssh-ng://pi", recursive=True, closure_size=True)
    await nix.store_sign(["/nix/store/x-a"], Path("/k/fleet.sec"))
    assert await nix.key_generate_secret("fleet-1") == "k1:SECRET"
    assert await nix.key_public("k1:SECRET") == "k1:PUBLIC"
    assert await nix.show_config() == {"system": "x86_64-linux", "max-jobs": 1}
    await nix.flake_lock("path:/p")
    await nix.show_derivation(["/nix/store/y-a.drv"])
    await nix.add_root("/nix/store/x-a", Path("/o/.gcroots/a"))
    assert fake_run.calls == [
        ("nix", "path-info", "--json", "-r", "-s", "-S", "--store", "ssh-ng://pi", "/nix/store/x-a"),
        ("nix", "store", "sign", "-k", "/k/fleet.sec", "-r", "/nix/store/x-a"),
        ("nix", "key", "generate-secret", "--key-name", "fleet-1"),
        ("nix", "key", "convert-secret-to-public"),
        ("nix", "show-config", "--json"),
        ("nix", "flake", "lock", "--log-format", "internal-json", "path:/p"),
        ("nix", "show-derivation", "/nix/store/y-a.drv"),
        ("nix-store", "--realise", "/nix/store/x-a", "--add-root", "/o/.gcroots/a", "--indirect"),
    ]
    # the secret travels on stdin only
    assert fake_run.inputs[3] == b"k1:SECRET\n"
    assert all("SECRET" not in arg for call in fake_run.calls for arg in call)


async def test_probe_argv(fake_run: FakeRun) -> None:
    await nix.probe_build(Path("/e/probe.nix"), system="aarch64-linux", probe_dir=Path("/tmp/p"), nonce="7")
    assert fake_run.calls == [
        ("nix", "build", "--no-link", "--json", "--log-format", "internal-json", "-f", "/e/probe.nix",
         "--argstr", "system", "aarch64-linux", "--argstr", "probeDir", "/tmp/p", "--argstr", "nonce", "7"),
    ]


def test_nix_env_keeps_the_users_config() -> None:
    env = nix.nix_env({"NIX_SSHOPTS": "-p 22"}, base={"NIX_CONFIG": "substituters =\nbuilders = ", "HOME": "/h"})
    assert env["NIX_CONFIG"].splitlines() == ["substituters =", "builders = ", "extra-experimental-features = nix-command flakes"]
    assert env["HOME"] == "/h" and env["NIX_SSHOPTS"] == "-p 22"


# Real Nix --------------------------------------------------------------------------------------------------

DRVS = """
{ salt }:
let
  d = name: script: derivation { inherit name salt; system = builtins.currentSystem; builder = "/bin/sh";
    PATH = "/usr/bin:/bin"; args = [ "-c" script ]; };
in {
  good = d "crossnix-test-good" "echo hello; mkdir $out";
  bad = d "crossnix-test-bad" "echo compiling; echo 'fatal: no space left' >&2; exit 2";
  value = { a = 1; b = [ "x" ]; };
}
"""


async def test_real_eval_and_build(real_nix: str, tmp_path: Path) -> None:
    file = tmp_path / "drvs.nix"
    file.write_text(DRVS)
    salt = f"{tmp_path}-{time.time_ns()}"
    assert await nix.eval_json(file, "value", argstr={"salt": salt}) == {"a": 1, "b": ["x"]}
    drv = await nix.eval_json(file, "good.drvPath", argstr={"salt": salt})
    events = []
    results = await nix.build([drv], on_event=events.append)
    assert results[0].drv_path == drv and results[0].out.startswith("/nix/store/")
    assert any(getattr(e, "fields", None) == ("hello",) for e in events)


async def test_real_build_failure_shows_the_log_tail(real_nix: str, tmp_path: Path) -> None:
    file = tmp_path / "drvs.nix"
    file.write_text(DRVS)
    drv = await nix.eval_json(file, "bad.drvPath", argstr={"salt": f"{tmp_path}-{time.time_ns()}"})
    with pytest.raises(NixError) as info:
        await nix.build([drv])
    message = info.value.message
    assert "failed with exit code 2" in message
    assert "last lines of the build of crossnix-test-bad" in message
    assert "| fatal: no space left" in message


async def test_real_eval_error(real_nix: str, tmp_path: Path) -> None:
    file = tmp_path / "e.nix"
    file.write_text('{ x = throw "crossnix: flake input \'nixpkgs\' is missing"; }')
    with pytest.raises(NixError) as info:
        await nix.eval_json(file, "x")
    assert "flake input 'nixpkgs' is missing" in info.value.message
    assert info.value.known == ["missing-flake-input"]


async def test_real_keys_and_config(real_nix: str) -> None:
    secret = await nix.key_generate_secret("crossnix-test-1")
    public = await nix.key_public(secret)
    assert secret.startswith("crossnix-test-1:") and public.startswith("crossnix-test-1:") and secret != public
    config = await nix.show_config()
    assert config["system"] in ("x86_64-linux", "aarch64-linux")
