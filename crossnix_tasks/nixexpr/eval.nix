# crossnix's evaluator, shipped in the Python package (as colmena ships its eval.nix).
#
# Python writes a JSON spec (crossnix_tasks/evaluator.py) and calls
#   nix eval --json --impure -f eval.nix --argstr specFile SPEC plan
# No Nix source is generated: every value crosses as JSON data.
#
# Spec (version 1):
#   project.lockFile   flake.lock next to boards.toml, or null   (inputs are read from it)
#   project.flakeRef   a flake reference whose inputs to use instead, or null
#   targets.<name>.modules   absolute paths of NixOS modules (crossnix, board, plugins, boards.toml)
#   targets.<name>.flake     null, or { ref; name; }: extend nixosConfigurations.<name> of that flake
#   targets.<name>.crossnix  the `crossnix` module argument (targetName, board, system, buildSystem,
#                            strategy, variant, settings)
#   targets.<name>.want      { toplevel = bool; image = variant or null; }
#
# Every module receives the module arguments `inputs` (the project flake's
# inputs) and `crossnix` (its target's attribute set).
{ specFile }:
let
  spec = builtins.fromJSON (builtins.readFile specFile);
  inherit (builtins) attrNames concatStringsSep head isList mapAttrs substring tail;

  # The root inputs of a flake.lock, loaded the way Nix's own call-flake.nix
  # does, but without fetching the root: the project directory (which holds
  # built images and the fleet's keys) is never copied into the store.
  # As in current Nix, an input's outPath is its flake's directory (with
  # `?dir=`, a subdirectory of its source tree), and a relative `path:` input
  # (`path:./sub`) lies inside its parent flake: inside the project directory
  # for the root's own inputs (only that subdirectory is copied to the store).
  inputsFromLock = lockFile:
    let
      lock = builtins.fromJSON (builtins.readFile lockFile);
      projectDir = dirOf lockFile;
      resolve = input: if isList input then follow lock.root input else input;
      follow = nodeName: path:
        if path == [ ] then nodeName else follow (resolve lock.nodes.${nodeName}.inputs.${head path}) (tail path);
      nodes = mapAttrs (key: node:
        let
          relative = node.locked.type or "" == "path" && substring 0 1 node.locked.path != "/";
          parentPath = node.parent or [ ];
          parent = nodes.${follow lock.root parentPath};
          sourceInfo =
            if !relative then builtins.fetchTree (removeAttrs node.locked [ "dir" ])
            else if parentPath == [ ] then
              builtins.fetchTree { type = "path"; path = toString (/. + "${projectDir}/${node.locked.path}"); }
            else parent.sourceInfo // { outPath = "${parent.outPath}/${node.locked.path}"; };
          subdir = node.locked.dir or "";
          flakeDir = if subdir == "" then sourceInfo.outPath else "${sourceInfo.outPath}/${subdir}";
          inputs = mapAttrs (_: input: nodes.${resolve input}) (node.inputs or { });
          flake = import (flakeDir + "/flake.nix");
          outputs = flake.outputs (inputs // { self = result; });
          result = outputs // sourceInfo // { outPath = flakeDir; inherit inputs outputs sourceInfo; _type = "flake"; };
        in
        if node.flake or true then result else sourceInfo
      ) (removeAttrs lock.nodes [ lock.root ]);
    in
    mapAttrs (_: input: nodes.${resolve input}) (lock.nodes.${lock.root}.inputs or { });

  # Both keys are always in the spec; null when unused.
  lockFile = spec.project.lockFile or null;
  flakeRef = spec.project.flakeRef or null;

  projectInputs =
    if lockFile != null then inputsFromLock lockFile
    else if flakeRef != null then removeAttrs (builtins.getFlake flakeRef).inputs [ "self" ]
    else { };

  inputsSource =
    if lockFile != null then lockFile
    else if flakeRef != null then flakeRef
    else "the project (no flake.lock next to boards.toml)";

  missingInput = name: throw "crossnix: flake input '${name}' is missing from ${inputsSource}";

  evalTarget = name: t:
    let
      args = t.crossnix;
      modules = map (path: /. + path) t.modules;
      nixos =
        if t.flake or null != null then
          let
            base =
              (builtins.getFlake t.flake.ref).nixosConfigurations.${t.flake.name}
                or (throw "crossnix: target ${name}: ${t.flake.ref} has no nixosConfigurations.${t.flake.name}");
          in
          base.extendModules {
            inherit modules;
            specialArgs = {
              crossnix = args;
              inputs = projectInputs // (base._module.specialArgs.inputs or { });
            };
          }
        else
          (projectInputs.nixpkgs or (missingInput "nixpkgs")).lib.nixosSystem {
            inherit modules;
            specialArgs = { inputs = projectInputs; crossnix = args; };
          };
      inherit (nixos) config;
      pkgs = config._module.args.pkgs;
      expectedBuild = if args.strategy == "cross" then args.buildSystem else args.system;

      # The platforms crossnix asked for must be the ones pkgs was made for
      # (a configuration setting nixpkgs.pkgs silently ignores hostPlatform).
      checked = value:
        if pkgs.stdenv.hostPlatform.system != args.system then
          throw "crossnix: target ${name}: its packages are built for ${pkgs.stdenv.hostPlatform.system}, not ${args.system}; does the configuration set nixpkgs.pkgs? crossnix sets nixpkgs.hostPlatform/buildPlatform"
        else if pkgs.stdenv.buildPlatform.system != expectedBuild then
          throw "crossnix: target ${name}: its packages are built on ${pkgs.stdenv.buildPlatform.system}, expected ${expectedBuild} for build = \"${args.strategy}\""
        else value;

      images =
        if config.system.build ? image then
          throw "crossnix: target ${name} imports an image builder directly (config.system.build.image is set), so config.system.build.images is not defined"
        else config.system.build.images;

      image = variant:
        checked (images.${variant}
          or (throw "crossnix: target ${name} has no image variant '${variant}'; it has: ${concatStringsSep ", " (attrNames images)}"));
    in
    {
      inherit nixos config images image;
      toplevel = checked config.system.build.toplevel;
      drvPath = (checked config.system.build.toplevel).drvPath;
      variants = attrNames images;
    };

  targets = mapAttrs evalTarget spec.targets;

  # What one `nix eval` returns for a selection: derivations and image file paths.
  plan = mapAttrs (name: t:
    let target = targets.${name}; in
    (if t.want.toplevel or false then { toplevel = target.drvPath; } else { })
    // (if t.want.image or null != null then {
      image =
        let img = target.image t.want.image; in
        { drvPath = img.drvPath; filePath = img.passthru.filePath; name = img.name; };
    } else { })
  ) spec.targets;
in
{
  inherit spec targets plan projectInputs;
  inputNames = attrNames projectInputs;
}
