"""Copy the test rig's fake activation scripts into the offline nixpkgs stand-in.

Stand-in toplevels must activate exactly like the rig's fake systems (tests/rig/fakesystem.py: the same
``/nix/var/crossnix-fake/activation.log`` lines and behaviour control files), so the deploy tests can deploy
stand-in-built systems. ``tests/test_standin.py`` fails when the copies drift; run
``python -m tests.standin.sync_activation`` from the repository root to refresh them.
"""

from __future__ import annotations

from pathlib import Path

from tests.rig import fakesystem

TARGET = Path(__file__).parent / "nixpkgs" / "nixos" / "modules" / "system" / "activation"
SCRIPTS = {
    "switch-to-configuration.sh": fakesystem._SWITCH_BODY,
    "activate.sh": fakesystem._ACTIVATE_BODY,
    "init.sh": fakesystem._INIT_BODY,
}


def expected() -> dict[Path, str]:
    return {TARGET / name: body for name, body in SCRIPTS.items()}


def main() -> None:
    for path, body in expected().items():
        path.write_text(body)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
