"""The offline nixpkgs stand-in's own tests (tests/standin/, NOT nixpkgs): its module system, platforms,
toplevel and image interface, evaluated and built with the real Nix 2.8 of this machine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.nixfixtures import NIX_TEST_CONFIG
from tests.rig import fakesystem

STANDIN = Path(__file__).parent / "standin"
BOARDS = Path(__file__).resolve().parent.parent / "plugins" / "crossnix_boards" / "nix"

pytestmark = pytest.mark.usefixtures("real_nix")


def nix_eval(tmp_path: Path, expr: str, attr: str) -> Any:
    file = tmp_path / "expr.nix"
    file.write_text(expr.replace("@STANDIN@", str(STANDIN)).replace("@BOARDS@", str(BOARDS)))
    done = subprocess.run(
        ["nix", "eval", "--json", "-f", str(file), attr],
        capture_output=True, text=True, check=False, env={"NIX_CONFIG": NIX_TEST_CONFIG, "PATH": "/usr/bin:/bin"},
    )
    if done.returncode != 0:
        raise AssertionError(done.stderr)
    return json.loads(done.stdout)


def nix_eval_error(tmp_path: Path, expr: str, attr: str) -> str:
    try:
        nix_eval(tmp_path, expr, attr)
    except AssertionError as exc:
        return str(exc)
    raise AssertionError("evaluation succeeded")


MODULES = """
let
  lib = import @STANDIN@/nixpkgs/lib;
  strip = lib.mapAttrs (_: v: removeAttrs v [ "_module" ]);
  eval = modules: removeAttrs (lib.evalModules { inherit modules; }).config [ "_module" ];
  decl = { lib, ... }: {
    options.s = lib.mkOption { type = lib.types.str; default = "default"; };
    options.l = lib.mkOption { type = lib.types.lines; default = ""; };
    options.fs = lib.mkOption { type = lib.types.attrsOf (lib.types.submodule { }); default = { }; };
    options.v = lib.mkOption { type = lib.types.attrsOf lib.types.deferredModule; default = { }; };
  };
in {
  priorities = eval [ decl { s = lib.mkDefault "mkDefault"; } { s = lib.mkForce "mkForce"; } { s = "plain"; } ];
  defaultWins = eval [ decl { s = lib.mkOverride 1200 "weak"; } ];
  lines = eval [ decl { l = "a"; } { l = lib.mkBefore "first"; } ({ config, lib, ... }: { l = lib.mkIf (config.s == "default") "c"; }) ];
  freeform = let c = eval [ { a.b = [ 1 ]; a.c = lib.mkIf false 9; } { a.b = [ 2 ]; a.d = lib.mkMerge [ { x = 1; } { y = 2; } ]; } ];
    in { inherit (c.a) b d; lazyName = c.a ? c; };
  attrsOfPriority = strip (eval [ decl { fs."/".device = "disk"; fs."/boot".device = "esp"; } { fs = lib.mkImageMediaOverride { "/".device = "tmpfs"; }; } ]).fs;
  perAttrPriority = strip (eval [ decl { fs."/".options = lib.mkDefault [ "a" ]; } { fs."/".options = [ "b" ]; } ]).fs;
  optionsArg = eval [ decl ({ options, lib, ... }: { config = lib.mkMerge [ { x = options ? s; } (lib.optionalAttrs (options ? nope) { y = 1; }) ]; }) ];
  deferred = let v = (eval [ decl { v.m = { a = 1; }; } { v.m = lib.mkForce { b = 2; }; } ]).v.m; in eval [ v ];
  dedup = eval [ ./imported.nix ./imported.nix { imports = [ ./imported.nix ]; } ];
  extended = let base = lib.evalModules { modules = [ decl { s = "base"; } ]; }; in
    { base = base.config.s; ext = (base.extendModules { modules = [ { s = lib.mkForce "extended"; } ]; }).config.s; };
}
"""


def test_module_system(tmp_path: Path) -> None:
    (tmp_path / "imported.nix").write_text("{ list = [ \"once\" ]; }")
    result = nix_eval(tmp_path, MODULES, "")
    assert result["priorities"]["s"] == "mkForce"
    assert result["defaultWins"]["s"] == "weak"
    assert result["lines"]["l"] == "first\na\nc"
    # freeform sets are lazy like NixOS' freeformType lazyAttrsOf: a false mkIf keeps the name
    assert result["freeform"] == {"b": [1, 2], "d": {"x": 1, "y": 2}, "lazyName": True}
    # priorities of an attrsOf option apply to the whole set (NixOS semantics): /boot is gone
    assert result["attrsOfPriority"] == {"/": {"device": "tmpfs"}}
    assert result["perAttrPriority"] == {"/": {"options": ["b"]}}
    assert result["optionsArg"]["x"] is True and "y" not in result["optionsArg"]
    assert result["deferred"] == {"b": 2}
    assert result["dedup"]["list"] == ["once"]
    assert result["extended"] == {"base": "base", "ext": "extended"}


def test_conflicting_definitions_say_standin(tmp_path: Path) -> None:
    expr = """
    let lib = import @STANDIN@/nixpkgs/lib; in
    (lib.evalModules { modules = [ { x = "a"; } { x = "b"; } ]; }).config
    """
    error = nix_eval_error(tmp_path, expr, "x")
    assert "The option `x' has conflicting definition values" in error
    assert "offline nixpkgs stand-in" in error


SYSTEM = """
let
  nixpkgs = builtins.getFlake "path:@STANDIN@/nixpkgs";
  hw = builtins.getFlake "path:@STANDIN@/nixos-hardware";
  mk = board: host: build: extra: nixpkgs.lib.nixosSystem {
    modules = [ (@BOARDS@ + "/${board}.nix")
      ({ lib, ... }: { nixpkgs.hostPlatform = lib.mkOverride 90 host; nixpkgs.buildPlatform = lib.mkOverride 90 build;
                       networking.hostName = "standin-test"; }) ] ++ extra;
    specialArgs.inputs = { nixos-hardware = hw; inherit nixpkgs; };
  };
  cross = mk "rpi4" "aarch64-linux" "x86_64-linux" [ ];
  native = mk "rpi4" "aarch64-linux" "aarch64-linux" [ ];
  direct = mk "generic-uefi" "x86_64-linux" "x86_64-linux" [ ({ modulesPath, ... }: { imports = [ "${modulesPath}/image/repart.nix" ]; }) ];
  pinned = mk "generic-uefi" "x86_64-linux" "x86_64-linux" [ { nixpkgs.pkgs = import @STANDIN@/nixpkgs { localSystem = "aarch64-linux"; }; } ];
in {
  cross = { inherit (cross.config.system.build.toplevel) system; inherit (cross.config.system.build.kernel) standinHostPlatform;
            build = cross.config.nixpkgs.buildPlatform.system; host = cross.config.nixpkgs.hostPlatform.system;
            kernel = cross.config.boot.kernelPackages.kernel.version; uboot = cross.config.hardware.raspberry-pi.firmware.uboot.enable;
            variants = builtins.attrNames cross.config.system.build.images;
            filePath = cross.config.system.build.images.sd-card.passthru.filePath;
            variantHost = cross.config.system.build.images.sd-card.passthru.config.nixpkgs.hostPlatform.system; };
  native = { inherit (native.config.system.build.toplevel) system; };
  pinned = pinned.config.system.build.kernel.standinHostPlatform;
  directImages = direct.config.system.build.images;
}
"""


def test_platforms_are_honoured(tmp_path: Path) -> None:
    cross = nix_eval(tmp_path, SYSTEM, "cross")
    # a cross configuration builds on the build platform, for the host platform
    assert cross["system"] == "x86_64-linux" and cross["standinHostPlatform"] == "aarch64-linux"
    assert (cross["build"], cross["host"]) == ("x86_64-linux", "aarch64-linux")
    # rpi4.nix's plain pkgs.linuxPackages beats nixos-hardware's mkDefault vendor kernel
    assert cross["kernel"] == "6.6.60" and cross["uboot"] is True
    assert cross["variants"] == ["iso", "qemu-efi", "raw-efi", "sd-card"]
    assert cross["filePath"] == "sd-image/nixos-image-sd-card-26.05.00000000.offline-standin-aarch64-linux.img.zst"
    assert cross["variantHost"] == "aarch64-linux"
    assert nix_eval(tmp_path, SYSTEM, "native") == {"system": "aarch64-linux"}
    # nixpkgs.pkgs silently wins over hostPlatform, as in nixpkgs
    assert nix_eval(tmp_path, SYSTEM, "pinned") == "aarch64-linux"


def test_images_missing_when_a_builder_is_imported_directly(tmp_path: Path) -> None:
    error = nix_eval_error(tmp_path, SYSTEM, "directImages")
    assert "The option `system.build.images' is used but not defined" in error


def test_toplevel_layout_and_fake_activation(tmp_path: Path) -> None:
    drv = nix_eval(tmp_path, SYSTEM.replace("cross = { inherit", "top = cross.config.system.build.toplevel.drvPath; cross = { inherit"), "top")
    out = subprocess.run(
        ["nix", "build", "--no-link", "--json", drv], capture_output=True, text=True, check=True,
        env={"NIX_CONFIG": NIX_TEST_CONFIG, "PATH": "/usr/bin:/bin"},
    )
    top = Path(json.loads(out.stdout)[0]["outputs"]["out"])
    for name in ("bin/switch-to-configuration", "nixos-version", "activate", "init", "kernel", "initrd", "kernel-params",
                 "system", "sw", "etc/hostname", "OFFLINE-NIXPKGS-STANDIN"):
        assert (top / name).exists(), name
    assert (top / "nixos-version").read_text() == "26.05.00000000.offline-standin\n"
    assert (top / "system").read_text() == "aarch64-linux"
    config = json.loads((top / "standin-config.json").read_text())
    assert config["hostName"] == "standin-test" and config["buildSystem"] == "x86_64-linux"
    switch = (top / "bin" / "switch-to-configuration").read_text()
    assert f"toplevel={top}\nlabel=standin-test\nbaked=ok\n" in switch
    assert switch.endswith(fakesystem._SWITCH_BODY + "\n")
