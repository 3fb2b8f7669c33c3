from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossnix_tasks.cli import program
from crossnix_tasks.plugins import Plugins, load_plugins

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.rig.fixtures", "tests.nixfixtures"]


@pytest.fixture(scope="session")
def builtin_plugins() -> Plugins:
    plugins = load_plugins()
    assert not plugins.errors, plugins.errors
    return plugins


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty project directory that tasks run in (cwd and CROSSNIX_INVENTORY point at it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CROSSNIX_INVENTORY", str(tmp_path / "boards.toml"))
    yield tmp_path


def run_cli(*argv: str) -> int:
    """Run crossnix's Program in-process; returns the exit code."""
    try:
        program.run(["crossnix", *argv], exit=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def run_cli_subprocess(
    *argv: str, cwd: Path, extra_path: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m crossnix_tasks` as a user would, in a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    if extra_path is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), full_env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "crossnix_tasks", *argv],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def write_distribution(site: Path, dist: str, module: str, entry_points: dict[str, str], code: str) -> None:
    """Install a distribution the way pip lays it out: a module plus NAME-VERSION.dist-info with entry points."""
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    lines = ["[crossnix.boards]", *(f"{name} = {target}" for name, target in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    (info / "RECORD").write_text("")
