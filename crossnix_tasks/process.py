"""The one place crossnix starts local processes.

Every local command (``nix``, ``nix-store``, ``unshare``...) goes through :func:`run`: an argv list, never a
shell string, so nothing a user typed is ever interpreted by a shell. Tests pin exact command lines by
monkeypatching :func:`run` (or watching it with :func:`observe`); the benchmark counts processes the same way.

Cancellation (Ctrl-C in ``asyncio.run`` cancels the main task) terminates the child and its process group:
SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from crossnix_tasks.errors import CrossnixError

log = logging.getLogger("crossnix.process")

#: Lines of stderr kept in :attr:`Completed.stderr` when ``on_stderr_line`` sees the whole stream.
STDERR_TAIL_LINES = 400
#: Lines of stderr shown in a :class:`ProcessFailed` message.
FAILURE_TAIL_LINES = 20
#: Longest stderr line read as one line (Nix's JSON log lines can carry long evaluation traces).
STREAM_LIMIT = 1 << 20
#: Seconds between SIGTERM and SIGKILL when a child is stopped.
KILL_GRACE = 5.0

Observer = Callable[[tuple[str, ...]], None]
_observers: list[Observer] = []


@dataclass(frozen=True)
class Completed:
    """A finished process. ``stderr`` is the whole stream, or its tail when a line callback consumed it."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes = b""  # the raw bytes, for binary output


class ProcessFailed(CrossnixError):
    """A process exited non-zero (with ``check=True``), timed out, or could not be started."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stderr: str = "",
        *,
        stdout: str = "",
        message: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout
        if message is None:
            status = "timed out" if returncode is None else f"failed with exit code {returncode}"
            message = f"`{display_argv(argv)}` {status}"
            tail = stderr_tail(stderr)
            if tail:
                message += "\n" + tail
        super().__init__(message, hint=hint)


class ProcessTimeout(ProcessFailed):
    """The process ran longer than its ``timeout`` and was stopped."""


def display_argv(argv: Sequence[str], limit: int = 12) -> str:
    """A short, readable rendering of an argv for messages (not for execution)."""
    shown = [a if a and not any(c.isspace() for c in a) else repr(a) for a in argv[:limit]]
    if len(argv) > limit:
        shown.append(f"... (+{len(argv) - limit} arguments)")
    return " ".join(shown)


def stderr_tail(stderr: str, lines: int = FAILURE_TAIL_LINES) -> str:
    kept = [line for line in stderr.splitlines() if line.strip()][-lines:]
    return "\n".join("  " + line for line in kept)


@contextlib.contextmanager
def observe() -> Iterator[list[tuple[str, ...]]]:
    """Record the argv of every process started inside the block (tests, benchmarks)."""
    started: list[tuple[str, ...]] = []
    _observers.append(started.append)
    try:
        yield started
    finally:
        _observers.remove(started.append)


async def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    input: bytes | None = None,
    on_stderr_line: Callable[[str], None] | None = None,
    check: bool = True,
    timeout: float | None = None,  # noqa: ASYNC109 - part of the documented interface; applied with asyncio.timeout
) -> Completed:
    """Run ``argv`` (no shell) and wait for it.

    ``env`` replaces the environment when given (build it from ``os.environ`` to extend it). stdout is
    collected (``stdout`` decoded as UTF-8, ``stdout_bytes`` raw); stderr is decoded line by line and handed
    to ``on_stderr_line`` as it arrives.
    ``check`` raises :class:`ProcessFailed` on a non-zero exit; ``timeout`` raises :class:`ProcessTimeout`.
    """
    args = _starting(argv)
    with _exec_errors(args):
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,  # our own process group: stopping it stops nix's children too
            limit=STREAM_LIMIT,
        )

    stderr_lines: deque[str] = deque(maxlen=STDERR_TAIL_LINES if on_stderr_line else None)
    try:
        async with asyncio.timeout(timeout):
            stdout, _ = await asyncio.gather(
                _feed_and_read(proc, input),
                _read_stderr(proc, stderr_lines, on_stderr_line),
            )
            returncode = await proc.wait()
    except TimeoutError:
        await asyncio.shield(_terminate(proc))  # a Ctrl-C now must not skip the SIGKILL
        raise ProcessTimeout(args, None, "\n".join(stderr_lines)) from None
    except BaseException:  # cancellation (Ctrl-C), or a failing stderr callback
        await asyncio.shield(_terminate(proc))
        raise
    done = Completed(args, returncode, stdout.decode("utf-8", errors="replace"), "\n".join(stderr_lines), stdout)
    if check and returncode != 0:
        raise ProcessFailed(args, returncode, done.stderr, stdout=done.stdout)
    return done


async def _feed_and_read(proc: asyncio.subprocess.Process, input: bytes | None) -> bytes:
    if input is not None and proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(input)
            await proc.stdin.drain()
        proc.stdin.close()
    assert proc.stdout is not None
    return await proc.stdout.read()


async def _read_stderr(
    proc: asyncio.subprocess.Process, lines: deque[str], callback: Callable[[str], None] | None
) -> None:
    assert proc.stderr is not None
    while True:
        try:
            raw = await proc.stderr.readline()
        except ValueError:  # a line longer than STREAM_LIMIT was dropped by the reader; go on with the next
            continue
        if not raw:
            return
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        lines.append(line)
        if callback is not None:
            callback(line)


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the child's process group, SIGKILL it if it does not exit within :data:`KILL_GRACE`."""
    if proc.returncode is not None:
        return
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(KILL_GRACE):
            await proc.wait()
    except TimeoutError:
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()


def _starting(argv: Sequence[str], what: str = "") -> tuple[str, ...]:
    """Every process crossnix starts passes here: observers (tests pin argv) and the debug log see it."""
    args = tuple(str(a) for a in argv)
    if not args:
        raise ValueError("empty argv")
    for observer in list(_observers):
        observer(args)
    log.debug("run %s%s", what, display_argv(args, limit=64))
    return args


@contextlib.contextmanager
def _exec_errors(args: tuple[str, ...]) -> Iterator[None]:
    """A program that is missing or cannot be executed as a :class:`ProcessFailed` (exit codes as a shell's)."""
    try:
        yield
    except FileNotFoundError:
        raise ProcessFailed(
            args, 127, message=f"{args[0]}: command not found", hint=_missing_hint(args[0])
        ) from None
    except PermissionError as exc:
        raise ProcessFailed(args, 126, message=f"{args[0]}: cannot execute: {exc}") from None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # start_new_session=True: the group id is the child's pid


def _missing_hint(program: str) -> str | None:
    if Path(program).name.startswith("nix"):
        return "install Nix (Debian: `apt-get install nix-bin`), or put it on PATH"
    return None


async def run_foreground(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> int:
    """Run ``argv`` attached to this terminal (stdin, stdout and stderr inherited) and return its exit status.

    For programs the user talks to (``inv vm``'s serial console). Unlike :func:`run` the child stays in the
    terminal's foreground process group, or reading the terminal would stop it (SIGTTIN); cancellation still
    terminates it.
    """
    args = _starting(argv, "(foreground) ")
    with _exec_errors(args):
        proc = await asyncio.create_subprocess_exec(*args, env=dict(env) if env is not None else None)
    try:
        return await proc.wait()
    except BaseException:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await asyncio.shield(proc.wait())
        raise
