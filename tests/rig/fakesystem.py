"""Fake NixOS system toplevels built with the host's REAL Nix (no nixpkgs).

A fake toplevel looks enough like ``config.system.build.toplevel`` for a
deploy tool: ``nixos-version``, ``system``, ``kernel``, ``initrd``,
``kernel-params``, ``init``, ``activate``, ``bin/switch-to-configuration`` and
an ``sw`` symlink to a shared second store path (so closures have 2 paths).

``bin/switch-to-configuration GOAL`` (a /bin/sh script, run INSIDE a target):

* validates GOAL (switch|boot|test|dry-activate, else usage + exit 1);
* appends ``"<label> <goal> <epoch.nanoseconds>"`` to
  ``/nix/var/crossnix-fake/activation.log`` (private to each rig target,
  because every target has its own /nix);
* picks its behaviour: the control file
  ``/nix/var/crossnix-fake/behaviour.<label>`` if present, else
  ``/nix/var/crossnix-fake/behaviour``, else the behaviour baked in at build
  time.  A control file holds ``ok``, ``fail`` or ``hang [SECONDS]``;
* ``fail``: prints an error and exits 1 (nothing else changes);
  ``hang``: sleeps (default 3600 s) -- for timeout tests;
  ``slow [SECONDS]``: sleeps (default 2 s), then carries on like ``ok``;
* ``ok``: for switch/boot it points ``/nix/var/crossnix-fake/boot-default``
  at the toplevel (the fake "boot loader"); for switch/test it runs
  ``$toplevel/activate``, which atomically points ``/run/current-system`` at
  the toplevel, like NixOS activation does.  dry-activate changes nothing.

All values reach the builder as derivation attributes (environment
variables) read from a JSON spec file; no value is ever spliced into Nix or
shell source text.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "FAKE_STATE_DIR",
    "NIX_CONFIG",
    "Behaviour",
    "FakeSystemSpec",
    "SigningKey",
    "build_fake_system",
    "build_fake_systems",
    "fake_system_expr",
    "generate_signing_key",
    "host_nix_env",
    "sign_paths",
    "write_fake_flake",
]

Behaviour = Literal["ok", "fail", "hang", "slow"]
BEHAVIOURS: tuple[str, ...] = ("ok", "fail", "hang", "slow")

#: Directory (inside a target) holding the fake activation log/control files.
FAKE_STATE_DIR = "/nix/var/crossnix-fake"

#: Host Nix settings for the rig: no daemon, no binary caches, flakes on.
NIX_CONFIG = "\n".join(
    [
        "experimental-features = nix-command flakes",
        "build-users-group =",
        "substituters =",
        "sandbox = false",
    ]
)

NIX = "/usr/bin/nix"
_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_NONCE_RE = re.compile(r"[A-Za-z0-9._+-]{0,64}")


def host_nix_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for running the host's ``nix`` in tests (substituters empty)."""
    env = dict(os.environ)
    env["NIX_CONFIG"] = NIX_CONFIG
    env.pop("NIX_REMOTE", None)
    env.setdefault("NO_COLOR", "1")
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True)
class FakeSystemSpec:
    """One fake toplevel. ``nonce`` changes the store path but not the name."""

    label: str
    behaviour: Behaviour = "ok"
    size_kb: int = 0
    nonce: str = ""

    def __post_init__(self) -> None:
        if not _LABEL_RE.fullmatch(self.label):
            raise ValueError(f"invalid fake system label {self.label!r}")
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {BEHAVIOURS}, not {self.behaviour!r}")
        if not 0 <= self.size_kb <= 1024 * 1024:
            raise ValueError("size_kb must be in 0..1048576")
        if not _NONCE_RE.fullmatch(self.nonce):
            raise ValueError(f"invalid nonce {self.nonce!r}")


# --------------------------------------------------------------------------
# Script texts. They are data (JSON) for the derivation, never Nix source.
# The builder prepends a header "toplevel=... label=... baked=..." (store
# path, validated label and enum value: no quoting hazards).
# --------------------------------------------------------------------------

# The scripts live once, in the offline nixpkgs stand-in, so stand-in toplevels and the rig's fake systems
# activate identically (same activation.log lines, same behaviour control files).
_ACTIVATION_DIR = Path(__file__).resolve().parent.parent / "standin/nixpkgs/nixos/modules/system/activation"
_SWITCH_BODY = (_ACTIVATION_DIR / "switch-to-configuration.sh").read_text()
_ACTIVATE_BODY = (_ACTIVATION_DIR / "activate.sh").read_text()
_INIT_BODY = (_ACTIVATION_DIR / "init.sh").read_text()

_SW_BUILDER = r"""
set -eu
mkdir -p "$out/bin"
printf '#!/bin/sh\necho crossnix-fake-tool\n' > "$out/bin/crossnix-fake-tool"
chmod 555 "$out/bin/crossnix-fake-tool"
"""

_TOPLEVEL_BUILDER = r"""
set -eu
mkdir -p "$out/bin"
hdr() { printf '#!/bin/sh\n# crossnix test rig: FAKE NixOS system %s\ntoplevel=%s\nlabel=%s\nbaked=%s\n' "$label" "$out" "$label" "$behaviour"; }
{ hdr; printf '%s\n' "$switchBody"; } > "$out/bin/switch-to-configuration"
{ hdr; printf '%s\n' "$activateBody"; } > "$out/activate"
{ hdr; printf '%s\n' "$initBody"; } > "$out/init"
chmod 555 "$out/bin/switch-to-configuration" "$out/activate" "$out/init"
printf '%s\n' "$version" > "$out/nixos-version"
printf '%s' "$system" > "$out/system"
printf 'crossnix fake kernel for %s\n' "$label" > "$out/kernel"
printf 'crossnix fake initrd for %s\n' "$label" > "$out/initrd"
printf 'init=%s/init\n' "$out" > "$out/kernel-params"
printf '%s\n' "$label" > "$out/crossnix-fake-label"
ln -s "$sw" "$out/sw"
if [ "$sizeKb" -gt 0 ]; then head -c "$((sizeKb * 1024))" /dev/zero > "$out/filler"; fi
"""

_NIX_EXPR = r"""
# crossnix test rig: fake NixOS toplevels, no nixpkgs. All data from JSON.
{ specFile }:
let
  spec = builtins.fromJSON (builtins.readFile specFile);
  base = name: extra: derivation ({
    inherit name;
    system = spec.system;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
  } // extra);
  sw = base "crossnix-fake-sw" { args = [ "-c" spec.swBuilder ]; };
  mk = s: base "nixos-system-${s.label}-fake" {
    args = [ "-c" spec.toplevelBuilder ];
    inherit sw;
    inherit (s) label behaviour nonce;
    sizeKb = toString s.size_kb;
    version = "25.05.19700101.fake-${s.label}";
    inherit (spec) switchBody activateBody initBody;
  };
in
  builtins.listToAttrs (map (s: { name = s.label; value = mk s; }) spec.systems)
"""

_FLAKE = r"""
{
  description = "crossnix test rig: fake NixOS configurations (no nixpkgs, offline)";
  outputs = { self }:
    let
      spec = builtins.fromJSON (builtins.readFile ./spec.json);
      tops = import ./fake-systems.nix { specFile = ./spec.json; };
    in {
      nixosConfigurations = builtins.mapAttrs (label: top: {
        config = {
          system.build.toplevel = top;
          networking.hostName = label;
          nixpkgs.hostPlatform.system = spec.system;
        };
      }) tops;
    };
}
"""


def _spec_json(specs: Sequence[FakeSystemSpec], system: str) -> str:
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError("labels in one batch must be unique")
    return json.dumps(
        {
            "system": system,
            "swBuilder": _SW_BUILDER,
            "toplevelBuilder": _TOPLEVEL_BUILDER,
            "switchBody": _SWITCH_BODY,
            "activateBody": _ACTIVATE_BODY,
            "initBody": _INIT_BODY,
            "systems": [
                {"label": s.label, "behaviour": s.behaviour, "size_kb": s.size_kb, "nonce": s.nonce}
                for s in specs
            ],
        },
        indent=1,
    )


def fake_system_expr() -> str:
    """The Nix expression text (a function ``{ specFile }: { <label> = drv; }``)."""
    return _NIX_EXPR


def write_fake_flake(
    directory: Path, specs: Sequence[FakeSystemSpec], *, system: str = "x86_64-linux"
) -> Path:
    """Write an offline flake with ``nixosConfigurations.<label>`` stand-ins.

    ``nixosConfigurations.<label>.config.system.build.toplevel`` is the fake
    toplevel.  Reference it as ``path:<dir>`` (the directory may sit inside a
    git work tree, see test-rig.md section 2).  Returns ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spec.json").write_text(_spec_json(specs, system))
    (directory / "fake-systems.nix").write_text(_NIX_EXPR)
    (directory / "flake.nix").write_text(_FLAKE)
    return directory


_cache: dict[tuple[FakeSystemSpec, str], str] = {}
_cache_lock = threading.Lock()


def build_fake_systems(
    specs: Iterable[FakeSystemSpec], *, system: str = "x86_64-linux", timeout: float = 120.0
) -> list[str]:
    """Build several fake toplevels in ONE host ``nix build``; return store paths in order.

    Results are cached per process (and Nix itself no-ops on valid paths).
    """
    wanted = list(specs)
    with _cache_lock:
        missing = [s for s in dict.fromkeys(wanted) if (s, system) not in _cache]
    if missing:
        with tempfile.TemporaryDirectory(prefix="cxr-fs-") as tmp:
            spec_file = Path(tmp) / "spec.json"
            expr_file = Path(tmp) / "fake-systems.nix"
            spec_file.write_text(_spec_json(missing, system))
            expr_file.write_text(_NIX_EXPR)
            argv = [NIX, "build", "--no-link", "--json", "--max-jobs", "auto", "-f", str(expr_file),
                    "--argstr", "specFile", str(spec_file)]
            argv += [s.label for s in missing]
            proc = subprocess.run(argv, env=host_nix_env(), capture_output=True, text=True, check=False,
                                  timeout=timeout, cwd="/", stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                raise RuntimeError(f"building fake systems failed (rc={proc.returncode}):\n{proc.stderr}")
            # Nix 2.8 does NOT print results in installable order: map by output name.
            by_name: dict[str, str] = {}
            for r in json.loads(proc.stdout):
                out = str(r["outputs"]["out"])
                by_name[out.split("-", 1)[1]] = out
            with _cache_lock:
                for s in missing:
                    name = f"nixos-system-{s.label}-fake"
                    if name not in by_name:
                        raise RuntimeError(f"nix build did not report {name}: {proc.stdout!r}")
                    _cache[(s, system)] = by_name[name]
    with _cache_lock:
        return [_cache[(s, system)] for s in wanted]


def build_fake_system(
    label: str,
    *,
    behaviour: Behaviour = "ok",
    size_kb: int = 0,
    nonce: str = "",
    system: str = "x86_64-linux",
) -> str:
    """Build one fake toplevel into the HOST store and return its store path."""
    return build_fake_systems(
        [FakeSystemSpec(label, behaviour=behaviour, size_kb=size_kb, nonce=nonce)], system=system
    )[0]


# --------------------------------------------------------------------------
# Signing helpers (the host store is persistent: signatures accumulate, so
# tests that need an UNSIGNED path should build a unique label or nonce).
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    name: str
    secret_file: Path
    public_key: str  # "name:base64", the value for trusted-public-keys


def generate_signing_key(directory: Path, name: str = "crossnix-rig-1") -> SigningKey:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ValueError(f"invalid key name {name!r}")
    directory.mkdir(parents=True, exist_ok=True)
    env = host_nix_env()
    sec = subprocess.run([NIX, "key", "generate-secret", "--key-name", name], env=env,
                         capture_output=True, text=True, check=True, timeout=30)
    secret_file = directory / f"{name}.sec"
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(sec.stdout)
    pub = subprocess.run([NIX, "key", "convert-secret-to-public"], input=sec.stdout, env=env,
                         capture_output=True, text=True, check=True, timeout=30)
    return SigningKey(name=name, secret_file=secret_file, public_key=pub.stdout.strip())


def sign_paths(key: SigningKey, paths: Iterable[str], *, recursive: bool = True) -> None:
    """Sign host store paths (and their closures if ``recursive``) with ``key``."""
    argv = [NIX, "store", "sign", "-k", str(key.secret_file)]
    if recursive:
        argv.append("-r")
    argv += list(paths)
    subprocess.run(argv, env=host_nix_env(), capture_output=True, text=True, check=True, timeout=60)
