"""Health checks: TCP and HTTP probes from the deployer, retried until their timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from crossnix_tasks.deploy import health
from crossnix_tasks.inventory import HttpCheck, TcpCheck


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[int, list[str]]]:
    requests: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode()
        requests.append(line.strip())
        status = "200 OK" if " /healthz " in line else "503 Service Unavailable"
        writer.write(f"HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], requests
    finally:
        server.close()
        await server.wait_closed()


async def test_http_and_tcp_checks(http_server: tuple[int, list[str]]) -> None:
    port, requests = http_server
    lines: list[str] = []
    remote = None  # only command checks use the fresh login
    ok, detail = await health.run_health_check(
        HttpCheck(http=f"http://127.0.0.1:{port}/healthz"), remote, "127.0.0.1", lines.append  # type: ignore[arg-type]
    )
    assert ok and "200 OK" in detail and requests == ["GET /healthz HTTP/1.0"]
    ok, detail = await health.run_health_check(
        HttpCheck(http=f"http://127.0.0.1:{port}/broken", timeout=0.5, interval=0.2), remote, "127.0.0.1",  # type: ignore[arg-type]
        lines.append,
    )
    assert not ok and "503" in detail and len(requests) >= 3  # retried until the timeout
    ok, _ = await health.run_health_check(TcpCheck(tcp=port), remote, "127.0.0.1", lines.append)  # type: ignore[arg-type]
    assert ok
    closed = TcpCheck(tcp=1, timeout=0.3, interval=0.1)
    ok, detail = await health.run_health_check(closed, remote, "127.0.0.1", lines.append)  # type: ignore[arg-type]
    assert not ok and "connection refused" in detail
    assert health.budget([closed, HttpCheck(http="/", timeout=7)]) == 7
