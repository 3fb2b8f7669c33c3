# offline nixpkgs stand-in: lib.systems (elaborate / equals) for the three systems crossnix knows.
{ lib }:
let
  known = {
    x86_64-linux = { config = "x86_64-unknown-linux-gnu"; cpu = "x86_64"; efiArch = "x64"; qemuArch = "x86_64"; linuxArch = "x86_64"; kernelTarget = "bzImage"; };
    aarch64-linux = { config = "aarch64-unknown-linux-gnu"; cpu = "aarch64"; efiArch = "aa64"; qemuArch = "aarch64"; linuxArch = "arm64"; kernelTarget = "Image"; };
    riscv64-linux = { config = "riscv64-unknown-linux-gnu"; cpu = "riscv64"; efiArch = "riscv64"; qemuArch = "riscv64"; linuxArch = "riscv"; kernelTarget = "Image"; };
  };
  elaborate = spec:
    let
      system = if builtins.isString spec then spec else spec.system or (throw "offline nixpkgs stand-in: platform without `system`: ${builtins.toJSON spec}");
      info = known.${system} or (throw "offline nixpkgs stand-in: unknown system ${system}");
    in
    (if builtins.isAttrs spec then spec else { })
    // info
    // {
      inherit system;
      parsed = { cpu.name = info.cpu; kernel.name = "linux"; };
      isLinux = true;
      isx86_64 = info.cpu == "x86_64";
      isx86 = info.cpu == "x86_64";
      isAarch64 = info.cpu == "aarch64";
      isAarch = info.cpu == "aarch64";
      isRiscV = info.cpu == "riscv64";
      isRiscV64 = info.cpu == "riscv64";
      isEfi = true;
      is64bit = true;
      canExecute = other: system == (elaborate other).system;
      linux-kernel = { target = info.kernelTarget; DTB = info.cpu != "x86_64"; };
      emulatorAvailable = _: false;
    };
in
{
  inherit elaborate;
  equals = a: b: (elaborate a).system == (elaborate b).system;
  examples = {
    aarch64-multiplatform = { config = "aarch64-unknown-linux-gnu"; system = "aarch64-linux"; };
    riscv64 = { config = "riscv64-unknown-linux-gnu"; system = "riscv64-linux"; };
    gnu64 = { config = "x86_64-unknown-linux-gnu"; system = "x86_64-linux"; };
  };
  flakeExposed = builtins.attrNames known;
}
