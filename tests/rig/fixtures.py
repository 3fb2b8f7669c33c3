"""pytest plugin exposing the crossnix test rig.

Enable it for the whole suite from the ROOT-level ``tests/conftest.py``::

    pytest_plugins = ["tests.rig.fixtures"]

(``tests`` must be importable: PYTHONPATH=<repo> or ``pythonpath = ["."]``
in [tool.pytest.ini_options]).

Fixtures
--------
rig_fleet          function  fresh :class:`Fleet` (real sshd targets), stopped after the test
rig_session_fleet  session   one shared Fleet; use unique target names per test
rig_fake_system    session   ``build_fake_system`` (callable -> host store path)
rig_signing_key    session   a Nix signing key (:class:`SigningKey`)
rig_sim_fleet      function  async factory: ``await rig_sim_fleet(200, handlers=...)``

Tests using real-fleet fixtures are skipped (not failed) when the machine
cannot run the rig (not root, sshd/nix/unshare missing).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from .fakesystem import SigningKey, build_fake_system, generate_signing_key
from .fleet import Fleet, rig_unavailable_reason
from .simfleet import SimFleet

__all__ = [
    "rig_fake_system",
    "rig_fleet",
    "rig_session_fleet",
    "rig_signing_key",
    "rig_sim_fleet",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "rig: uses the real loopback fleet (root, sshd, nix, namespaces)")
    config.addinivalue_line("markers", "slow: takes more than ~1 s")


def _require_rig() -> None:
    reason = rig_unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def rig_fleet() -> Iterator[Fleet]:
    _require_rig()
    fleet = Fleet()
    try:
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture(scope="session")
def rig_session_fleet() -> Iterator[Fleet]:
    _require_rig()
    fleet = Fleet()
    try:
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture(scope="session")
def rig_fake_system() -> Callable[..., str]:
    _require_rig()
    return build_fake_system


@pytest.fixture(scope="session")
def rig_signing_key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    _require_rig()
    d: Path = tmp_path_factory.mktemp("rig-keys")
    return generate_signing_key(d, "crossnix-rig-test-1")


@pytest_asyncio.fixture
async def rig_sim_fleet() -> AsyncIterator[Callable[..., Awaitable[SimFleet]]]:
    fleets: list[SimFleet] = []

    async def make(targets: Any = 10, **kw: Any) -> SimFleet:
        sim = SimFleet(targets, **kw)
        fleets.append(sim)
        return await sim.start()

    try:
        yield make
    finally:
        for sim in fleets:
            await sim.close()
