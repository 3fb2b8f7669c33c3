"""boards.toml loading: each error names file, line and key; nothing a user writes produces a traceback."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from crossnix_tasks.errors import ConfigError
from crossnix_tasks.inventory import CommandCheck, HttpCheck, TcpCheck, load_inventory
from crossnix_tasks.plugins import Plugins
from tests.conftest import run_cli_subprocess

VALID = """\
[project]
flake = "."

[defaults]
user = "admin"
tags = ["fleet"]
modules = ["common.nix"]

[defaults.deploy]
parallel = 4
confirm_timeout = 45

[targets.pi-1]
board = "rpi4"
host = "10.0.0.5"
tags = ["pi"]
modules = ["pi.nix"]

[targets.pi-1.deploy]
goal = "boot"

[[targets.pi-1.deploy.health_checks]]
command = "systemctl is-active sshd"

[[targets.pi-1.deploy.health_checks]]
tcp = 22
timeout = 5.0

[targets.pc]
board = "generic-uefi"
system = "aarch64-linux"
host = "pc.example.org"
user = "root"
build = "remote"
build_host = "builder@big.example.org"
"""


def load(tmp_path: Path, plugins: Plugins, text: str) -> object:
    path = tmp_path / "boards.toml"
    path.write_text(textwrap.dedent(text))
    for module in ("common.nix", "pi.nix"):
        (tmp_path / module).write_text("{ }")
    return load_inventory(path, plugins.boards)


def problems(tmp_path: Path, plugins: Plugins, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, plugins, text)
    return info.value.problems


def test_valid_inventory_resolves_defaults(tmp_path: Path, builtin_plugins: Plugins) -> None:
    inventory = load(tmp_path, builtin_plugins, VALID)
    pi = inventory.targets["pi-1"]  # type: ignore[attr-defined]
    assert (pi.user, pi.system, pi.port, pi.build) == ("admin", "aarch64-linux", 22, "cross")
    assert pi.tags == ("fleet", "pi")
    assert [m.name for m in pi.modules] == ["common.nix", "pi.nix"]
    assert (pi.deploy.goal, pi.deploy.parallel, pi.deploy.confirm_timeout) == ("boot", 4, 45)
    assert pi.deploy.health_checks == (CommandCheck(command="systemctl is-active sshd"), TcpCheck(tcp=22, timeout=5.0))
    pc = inventory.targets["pc"]  # type: ignore[attr-defined]
    assert (pc.user, pc.system, pc.build, pc.build_host) == ("root", "aarch64-linux", "remote", "builder@big.example.org")
    assert pc.deploy.goal == "switch"
    assert pi.line == 13


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[targets.a]\nboard = "rpi4"\nhots = "x"\n', ":3: targets.a.hots: unknown key 'hots'; did you mean 'host'?"),
        ('[targets.a]\nboard = "rpi4"\nport = "22"\n', ":3: targets.a.port: Input should be a valid integer"),
        ('[targets.a]\nboard = "rpi4"\nport = 70000\n', ":3: targets.a.port: Input should be less than or equal to 65535"),
        ('[targets.a]\nboard = "rpi5"\n', ":2: targets.a.board: unknown board 'rpi5' (did you mean 'rpi4'?); installed boards: generic-uefi, hifive-unmatched, rpi4"),
        ('[targets.a]\nhost = "a"\n', ":1: targets.a: missing key 'board'"),
        ('[targets.a]\nboard = "rpi4"\nsystem = "riscv64-linux"\n', ":3: targets.a.system: board 'rpi4' supports aarch64-linux, not 'riscv64-linux'"),
        ('[targets.a]\nboard = "rpi4"\nsystem = "arm-linux"\n', ":3: targets.a.system: system 'arm-linux' is not one of"),
        ('[targets.a]\nboard = "rpi4"\nimage_variant = "iso"\n', ":3: targets.a.image_variant: board 'rpi4' (aarch64-linux) has image variants sd-card"),
        ('[targets.a]\nboard = "rpi4"\nbuild = "remote"\n', ":3: targets.a.build: strategy 'remote' needs 'build_host'"),
        ('[targets.a]\nboard = "rpi4"\nbuild = "qemu"\n', ":3: targets.a.build: Input should be 'cross', 'emulated', 'native' or 'remote'"),
        ('[targets.a]\nboard = "rpi4"\nmodules = ["missing.nix"]\n', ":3: targets.a.modules: module 'missing.nix' not found"),
        ('[targets.a]\nboard = "rpi4"\n\n[targets.a.deploy]\ngoal = "reboot"\n', ":5: targets.a.deploy.goal: Input should be 'switch', 'boot', 'test' or 'dry-activate'"),
        ('[targets.a]\nboard = "rpi4"\n\n[targets.a.deploy]\nparalel = 3\n', ":5: targets.a.deploy.paralel: unknown key 'paralel'; did you mean 'parallel'?"),
        ('[defaults]\nusr = "x"\n', ":2: defaults.usr: unknown key 'usr'; did you mean 'user'?"),
        ('[project]\nflak = "."\n', ":2: project.flak: unknown key 'flak'; did you mean 'flake'?"),
        ('[target.a]\nboard = "rpi4"\n', ":1: target: unknown key 'target'; did you mean 'targets'?"),
        ('[targets.a]\nboard = "rpi4"\ntags = ["ok", "not ok"]\n', ":3: targets.a.tags: 'not ok' is not a valid tag"),
        ('[targets.a]\nboard = "rpi4"\nflake = "github:me/infra"\n', "must be 'FLAKE-REF#NAME'"),
        ('[targets.a]\nboard = "rpi4"\n[[targets.a.deploy.health_checks]]\nhttp = "/health"\n[[targets.a.deploy.health_checks]]\ncommand = "true"\nretries = 3\n',
         ":7: targets.a.deploy.health_checks.1.retries: unknown key 'retries'"),
    ],
)
def test_each_error_names_line_and_key(tmp_path: Path, builtin_plugins: Plugins, text: str, expected: str) -> None:
    found = problems(tmp_path, builtin_plugins, text)
    assert any(expected in p for p in found), found
    assert all(p.startswith(str(tmp_path / "boards.toml") + ":") for p in found)


@pytest.mark.parametrize(
    ("host", "line"),
    [("-oProxyCommand=sh", 3), ("a b", 3), ("pi;reboot", 3), ("$(id)", 3), ("x\\ny", 3), ("", 3)],
)
def test_hosts_that_could_be_abused_are_rejected(tmp_path: Path, builtin_plugins: Plugins, host: str, line: int) -> None:
    found = problems(tmp_path, builtin_plugins, f'[targets.a]\nboard = "rpi4"\nhost = "{host}"\n')
    assert any(f":{line}: targets.a.host: " in p and "is not a host name" in p for p in found), found


@pytest.mark.parametrize("name", ['"a b"', '"pi;rm"', '"1pi"', '"pi.x"', '"-x"', '"${x}"', '"pi-"', '"pi_"', '"p' + 'i' * 63 + '"'])
def test_target_names_that_could_be_abused_are_rejected(tmp_path: Path, builtin_plugins: Plugins, name: str) -> None:
    found = problems(tmp_path, builtin_plugins, f'[targets.{name}]\nboard = "rpi4"\n')
    assert any(":1: targets." in p and "a target name must start with a letter" in p for p in found), found


def test_all_problems_are_reported_at_once(tmp_path: Path, builtin_plugins: Plugins) -> None:
    found = problems(
        tmp_path,
        builtin_plugins,
        '[targets.a]\nboard = "rpi4"\nport = 0\n\n[targets.b]\nboard = "nope"\n\n[targets.c]\nboard = "rpi4"\nusr = "x"\n',
    )
    assert len(found) == 2  # a.port and c.usr are schema errors; b's board is checked after the schema
    assert any(":3: targets.a.port" in p for p in found) and any(":10: targets.c.usr" in p for p in found)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[targets.a]\nboard = "rpi4\n', ":2:"),  # unterminated string
        ('[targets.a]\nport = 22a\n', ":2:"),
        ('[targets.a]\nboard "rpi4"\n', ":2:"),
        ('[targets.a]\nboard = "rpi4"\n[targets.a]\nboard = "rpi4"\n', ":3:"),
        ('[targets.a]\nboard = "rpi4"\nboard = "rpi4"\n', ":3:"),  # tomlkit has no position for this one
    ],
)
def test_invalid_toml_names_the_line(tmp_path: Path, builtin_plugins: Plugins, text: str, where: str) -> None:
    [problem] = problems(tmp_path, builtin_plugins, text)
    assert f"boards.toml{where}" in problem and "invalid TOML" in problem


def test_health_check_kinds(tmp_path: Path, builtin_plugins: Plugins) -> None:
    inventory = load(
        tmp_path,
        builtin_plugins,
        '[targets.a]\nboard = "rpi4"\n[targets.a.deploy]\nhealth_checks = [{http = "/ok", expect_status = 204}, {tcp = 80}]\n',
    )
    checks = inventory.targets["a"].deploy.health_checks  # type: ignore[attr-defined]
    assert checks == (HttpCheck(http="/ok", expect_status=204), TcpCheck(tcp=80))


@pytest.mark.parametrize(
    "text",
    [
        '[targets.a]\nboard = "rpi4\n',
        '[targets.a]\nboard = "rpi5"\n',
        "targets = 3\n",
        '[targets]\na = "x"\n',
        '[targets.a]\nboard = "rpi4"\ndeploy = 5\n',
        '[targets.a]\nboard = "rpi4"\n[[targets.a.deploy.health_checks]]\nnothing = 1\n',
        "\x00\x01",
        '[defaults.deploy]\nhealth_checks = "no"\n',
    ],
)
def test_no_traceback_reaches_the_user(tmp_path: Path, text: str) -> None:
    (tmp_path / "boards.toml").write_text(text)
    for task in ("check-config", "targets"):
        result = run_cli_subprocess(task, cwd=tmp_path)
        assert result.returncode == 2, result
        assert "Traceback" not in result.stderr
        assert "boards.toml:" in result.stderr


def test_missing_inventory_says_how_to_start(tmp_path: Path) -> None:
    result = run_cli_subprocess("targets", cwd=tmp_path, env={"CROSSNIX_INVENTORY": ""})
    assert result.returncode == 2
    assert "file not found" in result.stderr and "inv init" in result.stderr


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("host", '"pi.lan\\n"'),  # "$" would match before a trailing newline
        ("host", '"fe80::1%eth0\\nProxyCommand sh"'),  # ipaddress takes any text as an IPv6 scope
        ("host", '"fe80::1%a b"'),
        ("user", '"root\\n"'),
        ("proxy_jump", '"x\\nProxyCommand sh@bastion"'),  # the part before '@' was not checked
        ("proxy_jump", '"a b@bastion"'),
        ("proxy_jump", '"@bastion"'),
        ("proxy_jump", '"bastion:ssh"'),  # a port is a number
        ("proxy_jump", '"bastion:0"'),
        ("proxy_jump", '"ok.lan,-oProxyCommand=sh"'),  # every hop is checked
        ("build_host", '"-oProxyCommand=sh@big"'),
        ("identity_file", '"key\\nProxyCommand sh"'),
        ("identity_file", '"a\\"b"'),
        ("known_hosts", '"kh\\rx"'),
        ("ssh_options", '{ User = "a\\"b" }'),
        ("ssh_options", '{ Host = "*" }'),  # would end the target's Host block
        ("ssh_options", '{ match = "all" }'),
        ("authorized_keys", '["ssh-ed25519 AAAA\\n"]'),
        ("tags", '["pi\\n"]'),
    ],
)
def test_values_that_would_break_ssh_config_or_a_command_line_are_rejected(
    tmp_path: Path, builtin_plugins: Plugins, key: str, value: str
) -> None:
    found = problems(tmp_path, builtin_plugins, f'[targets.a]\nboard = "rpi4"\nbuild = "remote"\n{key} = {value}\n')
    assert any(f"boards.toml:4: targets.a.{key}" in p for p in found), found


def test_target_name_with_a_trailing_newline_is_rejected(tmp_path: Path, builtin_plugins: Plugins) -> None:
    found = problems(tmp_path, builtin_plugins, '[targets."pi\\n"]\nboard = "rpi4"\n')
    assert any(":1: targets." in p and "a target name must start with a letter" in p for p in found), found


def test_safe_user_at_host_values_and_ipv6_scopes_are_accepted(tmp_path: Path, builtin_plugins: Plugins) -> None:
    inventory = load(
        tmp_path,
        builtin_plugins,
        '[targets.a]\nboard = "rpi4"\nhost = "fe80::1%eth0"\nproxy_jump = "john.doe@bastion.lan"\n'
        'identity_file = "my keys/id_ed25519"\nbuild = "remote"\nbuild_host = "Builder_1@big"\n',
    )
    a = inventory.targets["a"]  # type: ignore[attr-defined]
    assert (a.host, a.proxy_jump, a.build_host) == ("fe80::1%eth0", "john.doe@bastion.lan", "Builder_1@big")
    assert a.identity_file == tmp_path / "my keys" / "id_ed25519"


def test_proxy_jump_takes_ports_and_several_hops(tmp_path: Path, builtin_plugins: Plugins) -> None:
    hops = "jump@bastion.lan:2222,inner.lan,10.0.0.1:22"
    inventory = load(tmp_path, builtin_plugins, f'[targets.a]\nboard = "rpi4"\nproxy_jump = "{hops}"\n')
    assert inventory.targets["a"].proxy_jump == hops  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[targets.a]\nboard = "rpi4"\nidentity_file = "~nosuchuser-xyz/key"\n', ":3: targets.a.identity_file: "),
        ('[targets.a]\nboard = "rpi4"\nknown_hosts = "~nosuchuser-xyz/kh"\n', ":3: targets.a.known_hosts: "),
        ('[targets.a]\nboard = "rpi4"\nmodules = ["~nosuchuser-xyz/a.nix"]\n', ":3: targets.a.modules: "),
        ('[targets.a]\nboard = "rpi4"\nmodules = ["a\\u0000.nix"]\n', ":3: targets.a.modules: "),
        ('[targets.a]\nboard = "rpi4"\nmodules = ["' + "m" * 5000 + '"]\n', ":3: targets.a.modules: "),
        ('[project]\nstate_dir = "s\\u0000"\n', ":2: project.state_dir: "),
    ],
)
def test_unusable_paths_are_problems_not_tracebacks(
    tmp_path: Path, builtin_plugins: Plugins, text: str, expected: str
) -> None:
    found = problems(tmp_path, builtin_plugins, text)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # pydantic's union member names ('CommandCheck') are dropped from the key path; names users wrote are not
        ('[targets.Kitchen]\nboard = "rpi4"\nhots = "x"\n', ":3: targets.Kitchen.hots: unknown key 'hots'; did you mean"),
        ('[targets.a]\nboard = "rpi4"\nssh_options = { ServerAliveInterval = 15 }\n',
         ":3: targets.a.ssh_options.ServerAliveInterval: Input should be a valid string"),
    ],
)
def test_capitalised_keys_stay_in_the_error(tmp_path: Path, builtin_plugins: Plugins, text: str, expected: str) -> None:
    found = problems(tmp_path, builtin_plugins, text)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize("value", ["[/x]", "[bold]kitchen"])
def test_error_text_that_looks_like_markup_is_printed_as_written(tmp_path: Path, value: str) -> None:
    """Error messages carry values from boards.toml and "[targets.NAME]": rich must not read them as markup
    (a stray closing tag was a MarkupError traceback, an opening one swallowed text)."""
    (tmp_path / "boards.toml").write_text(f'[targets.a]\nboard = "rpi4"\nhost = "{value}"\nhots = 1\n')
    result = run_cli_subprocess("check-config", cwd=tmp_path)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert f"targets.a.host: '{value}' is not a host name" in result.stderr
    assert "targets.a.hots: unknown key" in result.stderr


def test_warnings_are_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    from crossnix_tasks import ui

    ui.warn("add `host` to [targets.pi] [/x]")
    assert "add `host` to [targets.pi] [/x]" in capsys.readouterr().err
