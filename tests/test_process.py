"""crossnix_tasks.process: the one place local processes start."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from crossnix_tasks import process
from crossnix_tasks.process import ProcessFailed, ProcessTimeout


async def test_collects_stdout_and_exit_code() -> None:
    done = await process.run(["printf", "%s\\n", "hello", "world"])
    assert done.argv == ("printf", "%s\\n", "hello", "world")
    assert done.returncode == 0
    assert done.stdout == "hello\nworld\n"
    assert done.stdout_bytes == b"hello\nworld\n"


async def test_stdin_and_env_are_passed_exactly(tmp_path: Path) -> None:
    done = await process.run(["cat"], input=b"secret never on argv")
    assert done.stdout == "secret never on argv"
    env = await process.run(["env"], env={"ONLY": "this", "PATH": os.environ["PATH"]}, cwd=tmp_path)
    assert "ONLY=this" in env.stdout.splitlines()
    assert "HOME=" not in env.stdout


async def test_argv_is_never_a_shell_string(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    done = await process.run(["echo", f"; touch {marker}", "$(id)"])
    assert done.stdout == f"; touch {marker} $(id)\n"
    assert not marker.exists()


async def test_stderr_lines_reach_the_callback_as_they_arrive() -> None:
    seen: list[str] = []
    script = "for i in 1 2 3; do echo line$i >&2; done; echo out"
    done = await process.run(["sh", "-c", script], on_stderr_line=seen.append)
    assert seen == ["line1", "line2", "line3"]
    assert done.stderr == "line1\nline2\nline3"
    assert done.stdout == "out\n"


async def test_failure_raises_with_argv_and_stderr_tail() -> None:
    with pytest.raises(ProcessFailed) as info:
        await process.run(["sh", "-c", "echo first >&2; echo boom >&2; exit 3"])
    exc = info.value
    assert exc.returncode == 3
    assert exc.argv == ("sh", "-c", "echo first >&2; echo boom >&2; exit 3")
    assert "exit code 3" in exc.message and "boom" in exc.message
    unchecked = await process.run(["sh", "-c", "exit 4"], check=False)
    assert unchecked.returncode == 4


async def test_missing_program() -> None:
    with pytest.raises(ProcessFailed) as info:
        await process.run(["nix-does-not-exist-here"])
    assert info.value.returncode == 127
    assert info.value.hint and "nix-bin" in info.value.hint


async def test_timeout_stops_the_child() -> None:
    start = time.monotonic()
    with pytest.raises(ProcessTimeout):
        await process.run(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - start < 5


async def test_cancellation_terminates_the_child_and_its_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    # a parent shell and a grandchild: both must go when the task is cancelled (Ctrl-C)
    script = f'sleep 60 & echo $$ $! > {pidfile}; wait'
    task = asyncio.create_task(process.run(["sh", "-c", script]))
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    pids = [int(p) for p in pidfile.read_text().split()]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        alive = [p for p in pids if _alive(p)]
        if not alive:
            break
        await asyncio.sleep(0.05)
    assert not alive, f"still running: {alive}"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


async def test_observe_records_every_process() -> None:
    with process.observe() as started:
        await process.run(["true"])
        await process.run(["echo", "x"])
    await process.run(["true"])
    assert started == [("true",), ("echo", "x")]


async def test_long_stderr_lines_arrive_whole() -> None:
    seen: list[str] = []
    await process.run(["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x >&2; echo >&2; echo after >&2"],
                      on_stderr_line=seen.append)
    assert [len(line) for line in seen] == [200000, 5]


async def test_programs_that_cannot_start_fail_the_same_way_in_the_foreground(tmp_path: Path) -> None:
    not_executable = tmp_path / "script"
    not_executable.write_text("#!/bin/sh\nexit 0\n")
    not_executable.chmod(0o644)
    for start in (process.run, process.run_foreground):
        with pytest.raises(ProcessFailed) as info:
            await start([str(not_executable)])
        assert info.value.returncode == 126 and "cannot execute" in info.value.message
        with pytest.raises(ProcessFailed) as info:
            await start(["nix-not-installed-anywhere"])
        assert info.value.returncode == 127 and "command not found" in info.value.message
        assert "install Nix" in (info.value.hint or "")


async def test_cancelled_while_stopping_a_timed_out_child_still_kills_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "KILL_GRACE", 0.5)
    pidfile = tmp_path / "pid"
    # ignores SIGTERM, so only the SIGKILL after the grace period stops it
    task = asyncio.create_task(process.run(["sh", "-c", f"trap '' TERM; echo $$ > {pidfile}; sleep 30"], timeout=0.3))
    await asyncio.sleep(0.5)  # timed out, waiting out the grace period
    pid = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(60):
        if not _alive(pid):
            break
        await asyncio.sleep(0.05)
    assert not _alive(pid)
