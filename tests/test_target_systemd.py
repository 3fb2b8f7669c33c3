"""deploy/target.sh on a target that runs systemd: the switch runs as a transient `systemd-run` service and the
magic rollback is a `systemd-run --on-active=` timer. The rig has no systemd, so this runs the script inside a
rig target with stand-in `systemd-run`/`systemctl` first on PATH: they record their arguments and start the
command (detached, after the timer delay) the way systemd would; the unit commands are pinned here."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest

from crossnix_tasks import remote as rc
from tests.rig.fakesystem import FakeSystemSpec, build_fake_systems
from tests.rig.fleet import Fleet

pytestmark = [pytest.mark.rig, pytest.mark.usefixtures("real_nix")]

FAKE_SYSTEMD_RUN = r"""#!/bin/sh
# stand-in systemd-run: record the arguments, run the command detached (after --on-active=Ns).
log=/tmp/fakesd/calls; mkdir -p /tmp/fakesd
printf 'systemd-run' >> "$log"; for a in "$@"; do printf ' %s' "$(printf '%s' "$a" | head -c 60 | tr '\n' ' ')" >> "$log"; done; echo >> "$log"
unit=""; delay=0
while [ $# -gt 0 ]; do
  case "$1" in
    --unit=*) unit=${1#--unit=} ;;
    --on-active=*) delay=${1#--on-active=}; delay=${delay%s} ;;
    --) shift; break ;;
  esac
  shift
done
setsid sh -c 'sleep "$1"; shift; exec "$@"' fake-unit "$delay" "$@" </dev/null >/dev/null 2>&1 &
echo $! > "/tmp/fakesd/$unit.pid"
"""

FAKE_SYSTEMCTL = r"""#!/bin/sh
# stand-in systemctl: record; "stop UNIT.timer" kills a timer that has not fired yet.
mkdir -p /tmp/fakesd; echo "systemctl $*" >> /tmp/fakesd/calls
"""


def install_fakes(fleet: Fleet, name: str) -> str:
    bin_dir = fleet.host_path(name, "/tmp/fakebin")
    bin_dir.mkdir(parents=True)
    for tool, text in (("systemd-run", FAKE_SYSTEMD_RUN), ("systemctl", FAKE_SYSTEMCTL)):
        (bin_dir / tool).write_text(text)
        (bin_dir / tool).chmod(0o755)
    return "/tmp/fakebin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def calls(fleet: Fleet, name: str) -> list[str]:
    path = fleet.host_path(name, "/tmp/fakesd/calls")
    return path.read_text().splitlines() if path.exists() else []


def current_gen(fleet: Fleet, name: str) -> str | None:
    gens = [g for g in fleet.profile_generations(name) if g.current]
    return gens[0].path if gens else None


def wait_for(check: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return bool(check())  # type: ignore[operator]


def test_systemd_units_for_switch_and_rollback_timer(rig_fleet: Fleet, tmp_path: Path) -> None:
    base, new = build_fake_systems([FakeSystemSpec("sd-base"), FakeSystemSpec("sd-new")])
    rig_fleet.start("sd")
    rig_fleet.preinstall("sd", base)
    rig_fleet.seed("sd", [new])
    path = install_fakes(rig_fleet, "sd")
    plan = rc.Activation(state_dir="/run/crossnix/r1", toplevel=new, goal="switch", confirm_timeout=2,
                         activation_timeout=30, magic_rollback=True, auto_rollback=True, systemd=True,
                         unit="crossnix-r1")
    done = rig_fleet.run_in("sd", rc.begin_argv(plan), env={"PATH": path})
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: rig_fleet.current_system("sd") == new, 10)
    recorded = calls(rig_fleet, "sd")
    assert recorded[0].startswith(
        "systemd-run --unit=crossnix-r1-rollback --on-active=2s --collect --quiet --setenv=PATH="
    ) and recorded[0].endswith(" watchdog /run/crossnix/r1"), recorded[0]
    assert " -- /bin/sh -c eval \"$1\" crossnix # crossnix target-side helper " in recorded[0]
    assert recorded[1].startswith(
        "systemd-run --unit=crossnix-r1-switch --collect --quiet --service-type=exec -E LOCALE_ARCHIVE "
        "-E NIXOS_INSTALL_BOOTLOADER -E NIXOS_NO_CHECK --setenv=PATH="
    ) and recorded[1].endswith(" run /run/crossnix/r1")
    # Nobody confirms: the timer's watchdog restores the previous generation.
    assert wait_for(lambda: current_gen(rig_fleet, "sd") == base and rig_fleet.current_system("sd") == base, 15)
    report = rig_fleet.run_in("sd", rc.script_argv("report", "/run/crossnix/r1")).stdout
    assert "outcome rolled-back" in report

    # A confirmed activation stops the timer unit.
    plan2 = rc.Activation(**{**plan.__dict__, "state_dir": "/run/crossnix/r2", "unit": "crossnix-r2"})
    assert rig_fleet.run_in("sd", rc.begin_argv(plan2), env={"PATH": path}).returncode == 0
    assert wait_for(lambda: "status 0" in rig_fleet.run_in("sd", rc.script_argv("report", "/run/crossnix/r2")).stdout, 10)
    decided = rig_fleet.run_in("sd", rc.script_argv("decide", "/run/crossnix/r2", "confirmed", "test"), env={"PATH": path})
    assert decided.returncode == 0 and "outcome confirmed" in decided.stdout
    assert "systemctl stop crossnix-r2-rollback.timer" in calls(rig_fleet, "sd")
    time.sleep(3.5)  # past the timer: the watchdog it would start sees the decision and does nothing
    assert current_gen(rig_fleet, "sd") == new and rig_fleet.current_system("sd") == new
    assert shlex.split(decided.stdout.splitlines()[-1])[0] == "profile"
