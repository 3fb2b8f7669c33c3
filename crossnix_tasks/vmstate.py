"""Where a running ``inv vm`` can be reached: the contract between ``inv vm`` and ``inv deploy --vm``.

``inv vm --target NAME`` forwards a loopback port to the guest's SSH port and, while QEMU runs, keeps
``<state_dir>/vms/NAME.json``::

    {"target": "NAME", "host": "127.0.0.1", "port": 40022, "pid": 12345, "image": "/nix/store/...", "started": 1.7e9}

``pid`` is the crossnix process running QEMU; the file is removed when the VM stops, and a file whose process
is gone is stale and ignored. Consumers call :func:`vm_target`, which returns the inventory target with its
address replaced (host 127.0.0.1, the forwarded port, no jump host) so every SSH setting still comes from
boards.toml. When crossnix pinned the target's host key (first-boot images), ``inv vm`` also lists the key under
``[127.0.0.1]:PORT`` in ``<state_dir>/known_hosts`` for as long as the VM runs, so the check stays strict.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.inventory import Target

LOOPBACK = "127.0.0.1"
# ssh_options that would send the connection somewhere else than the VM's forwarded port
_ADDRESS_OPTIONS = frozenset({"hostname", "port", "proxyjump", "proxycommand"})


@dataclass(frozen=True)
class VmState:
    target: str
    host: str
    port: int
    pid: int
    image: str = ""
    started: float = 0.0


def vms_dir(state_dir: Path) -> Path:
    return state_dir / "vms"


def state_file(state_dir: Path, name: str) -> Path:
    return vms_dir(state_dir) / f"{name}.json"


def write_state(state_dir: Path, state: VmState) -> Path:
    path = state_file(state_dir, state.target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(state), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def remove_state(state_dir: Path, name: str) -> None:
    state_file(state_dir, name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(state_dir: Path, name: str) -> VmState | None:
    """The running VM of ``name``, or None (no file, unreadable, or its process has exited)."""
    try:
        data = json.loads(state_file(state_dir, name).read_text(encoding="utf-8"))
        state = VmState(
            target=str(data["target"]),
            host=str(data["host"]),
            port=int(data["port"]),
            pid=int(data["pid"]),
            image=str(data.get("image", "")),
            started=float(data.get("started", 0.0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if _alive(state.pid) else None


def new_state(name: str, port: int, image: Path | None) -> VmState:
    return VmState(
        target=name, host=LOOPBACK, port=port, pid=os.getpid(), image=str(image or ""), started=time.time()
    )


def vm_target(target: Target, state_dir: Path) -> Target:
    """``target`` as ``inv deploy --on NAME --vm`` reaches it: the forwarded port of its running ``inv vm``."""
    state = read_state(state_dir, target.name)
    if state is None:
        raise CrossnixError(
            f"no VM of {target.name} is running (no live {state_file(state_dir, target.name)})",
            hint=f"start one in another terminal: inv vm --target {target.name}",
        )
    options = {k: v for k, v in target.ssh_options.items() if k.lower() not in _ADDRESS_OPTIONS}
    return dataclasses.replace(target, host=state.host, port=state.port, proxy_jump=None, ssh_options=options)
