"""Health checks from boards.toml, retried every ``interval`` until ``timeout`` (morph's cmd/http checks).

* ``command``: run on the target through the fresh confirmation login; healthy when it exits 0.
* ``tcp``: a TCP connection from the deployer to the target's address.
* ``http``: a GET from the deployer (a URL, or a path on the target's address, port 80); healthy when the
  status is ``expect_status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from crossnix_tasks.inventory import CommandCheck, HealthCheck, HttpCheck, TcpCheck
from crossnix_tasks.remote import Remote, RemoteError, run_check

Log = Callable[[str], None]


def describe(check: HealthCheck) -> str:
    if isinstance(check, CommandCheck):
        return f"command `{check.command}`"
    if isinstance(check, TcpCheck):
        return f"tcp port {check.tcp}"
    return f"http {check.http} (expect {check.expect_status})"


def budget(checks: Sequence[HealthCheck]) -> float:
    """The longest a set of checks can take (they run concurrently)."""
    return max((check.timeout for check in checks), default=0.0)


async def _once(check: HealthCheck, remote: Remote, host: str, remaining: float) -> tuple[bool, str]:
    if isinstance(check, CommandCheck):
        try:
            result = await run_check(remote, check.command, time_limit=max(remaining, 1.0))
        except RemoteError as exc:
            return False, exc.message
        output = (result.stderr or result.stdout).strip().splitlines()
        return result.exit_status == 0, f"exit status {result.exit_status}" + (f": {output[-1]}" if output else "")
    if isinstance(check, TcpCheck):
        try:
            async with asyncio.timeout(min(max(remaining, 0.5), 10.0)):
                _, writer = await asyncio.open_connection(host, check.tcp)
        except (OSError, TimeoutError) as exc:
            return False, f"{host}:{check.tcp}: {_reason(exc)}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, f"{host}:{check.tcp} accepts connections"
    return await _http(check, host, remaining)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


async def _http(check: HttpCheck, host: str, remaining: float) -> tuple[bool, str]:
    url = check.http if "://" in check.http else f"http://{host}{'' if check.http.startswith('/') else '/'}{check.http}"
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    netloc_host = parts.hostname or host
    try:
        async with asyncio.timeout(min(max(remaining, 0.5), 30.0)):
            reader, writer = await asyncio.open_connection(
                netloc_host, port, ssl=ssl.create_default_context() if secure else None
            )
            request = f"GET {path} HTTP/1.0\r\nHost: {netloc_host}\r\nUser-Agent: crossnix\r\nConnection: close\r\n\r\n"
            writer.write(request.encode("ascii", errors="replace"))
            await writer.drain()
            status_line = (await reader.readline()).decode("latin-1").strip()
            writer.close()
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        return False, f"{url}: {_reason(exc)}"
    fields = status_line.split()
    status = int(fields[1]) if len(fields) >= 2 and fields[1].isdigit() else 0
    return status == check.expect_status, f"{url}: {status_line or 'no answer'}"


async def run_health_check(check: HealthCheck, remote: Remote, host: str, log: Log) -> tuple[bool, str]:
    deadline = time.monotonic() + check.timeout
    attempt = 0
    while True:
        attempt += 1
        ok, detail = await _once(check, remote, host, deadline - time.monotonic())
        log(f"health {describe(check)} attempt {attempt}: {'ok' if ok else 'not yet'} ({detail})")
        if ok:
            return True, detail
        if time.monotonic() + check.interval > deadline:
            return False, f"{describe(check)} still failing after {check.timeout:g} s: {detail}"
        await asyncio.sleep(check.interval)


async def run_health_checks(
    checks: Sequence[HealthCheck], remote: Remote, host: str, log: Log
) -> tuple[bool, list[str]]:
    """Run every check concurrently; returns (all healthy, the failures)."""
    results = await asyncio.gather(*(run_health_check(check, remote, host, log) for check in checks))
    failures = [detail for ok, detail in results if not ok]
    return not failures, failures
