"""crossnix test rig: real loopback sshd targets with private Nix stores, fake
NixOS toplevels built with real Nix, and a simulated asyncssh fleet.

See tests/rig/README.md.  pytest fixtures: ``pytest_plugins = ["tests.rig.fixtures"]``.
"""

from .fakesystem import (
    FAKE_STATE_DIR,
    Behaviour,
    FakeSystemSpec,
    SigningKey,
    build_fake_system,
    build_fake_systems,
    fake_system_expr,
    generate_signing_key,
    host_nix_env,
    sign_paths,
    write_fake_flake,
)
from .fleet import (
    ActivationRecord,
    Fleet,
    Generation,
    RigError,
    Target,
    TargetKind,
    iter_processes_in,
    rig_unavailable_reason,
)
from .simfleet import BASIC_COMMANDS, SimCommand, SimFleet, SimReply, SimRequest, SimStats, SimTarget

__all__ = [
    "BASIC_COMMANDS",
    "FAKE_STATE_DIR",
    "ActivationRecord",
    "Behaviour",
    "FakeSystemSpec",
    "Fleet",
    "Generation",
    "RigError",
    "SigningKey",
    "SimCommand",
    "SimFleet",
    "SimReply",
    "SimRequest",
    "SimStats",
    "SimTarget",
    "Target",
    "TargetKind",
    "build_fake_system",
    "build_fake_systems",
    "fake_system_expr",
    "generate_signing_key",
    "host_nix_env",
    "iter_processes_in",
    "rig_unavailable_reason",
    "sign_paths",
    "write_fake_flake",
]
