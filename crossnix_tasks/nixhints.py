"""Known Nix failures and what to do about them, matched on Nix's error text."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


def binfmt_fix(system: str) -> str:
    """How to let this machine build ``system`` derivations under emulation."""
    return (
        f"on NixOS add `boot.binfmt.emulatedSystems = [ \"{system}\" ];` to this machine's configuration and "
        f"switch; elsewhere install qemu-user-static (binfmt_misc registration with the F flag) and add "
        f"`extra-platforms = {system}` to /etc/nix/nix.conf (then restart nix-daemon)"
    )


@dataclass(frozen=True)
class KnownError:
    name: str
    pattern: re.Pattern[str]
    hint: Callable[[re.Match[str]], str]


def _platform(match: re.Match[str]) -> str:
    system = match.group(1)
    return (
        f"this machine cannot build {system} derivations. Use `build = \"cross\"` for the target, "
        f"`build = \"remote\"` with a {system} build host or `builders`, or enable emulation: {binfmt_fix(system)}"
    )


def _exec_format(_: re.Match[str]) -> str:
    return (
        "Nix accepted the platform (extra-platforms) but the kernel cannot run its binaries: register "
        "qemu-user-static with binfmt_misc (flag F), or on NixOS use `boot.binfmt.emulatedSystems`"
    )


def _flake_input(match: re.Match[str]) -> str:
    name = next((g for g in match.groups() if g), "the input")
    return (
        f"add `inputs.{name}.url = \"...\";` to the flake.nix next to boards.toml (`inv init` writes the URLs "
        "the boards need), then run `nix flake lock`"
    )


def _images(_: re.Match[str]) -> str:
    return (
        "`config.system.build.images` is only defined when no image builder is imported directly: move imports "
        "of sd-image*.nix, iso-image.nix, disk-image.nix or repart.nix into `image.modules.<variant>` "
        "(nixpkgs nixos/modules/image/images.nix)"
    )


def _signature(_: re.Match[str]) -> str:
    return (
        "the receiving store only accepts signed paths: sign them with a key it trusts (crossnix signs with "
        "the fleet key when deploying), add the signing key to its `trusted-public-keys`, or make the copying "
        "user one of its `trusted-users`"
    )


def _lock(_: re.Match[str]) -> str:
    return "flake.nix changed since flake.lock was written: run `nix flake lock` next to boards.toml"


KNOWN_ERRORS: tuple[KnownError, ...] = (
    KnownError(
        "platform-mismatch",
        re.compile(r"a '([\w.-]+)' with features \{[^}]*\} is required to build '[^']+', but I am a"),
        _platform,
    ),
    KnownError("exec-format", re.compile(r"Exec format error"), _exec_format),
    KnownError(
        "missing-flake-input",
        re.compile(
            r"needs the flake input \"([\w.-]+)\"|flake input '([\w.-]+)' is missing"
            r"|attribute '(nixpkgs|nixos-hardware)' missing"
        ),
        _flake_input,
    ),
    KnownError(
        "images-missing",
        re.compile(
            r"option `system\.build\.images' is used but not defined|attribute 'images' missing"
            r"|imports an image builder directly"
        ),
        _images,
    ),
    KnownError("unsigned", re.compile(r"lacks a (valid )?signature"), _signature),
    KnownError("lock-outdated", re.compile(r"requires lock file changes"), _lock),
)


def hint_for(text: str) -> str | None:
    """The hints of every known error found in ``text``, or None."""
    hints = []
    for known in KNOWN_ERRORS:
        match = known.pattern.search(text)
        if match:
            hints.append(known.hint(match))
    return "\n".join(hints) if hints else None


def known_error_names(text: str) -> list[str]:
    return [known.name for known in KNOWN_ERRORS if known.pattern.search(text)]
