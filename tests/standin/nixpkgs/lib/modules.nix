# offline nixpkgs stand-in: a small NixOS module system after nixpkgs' lib/modules.nix.
#
# Same semantics where NixOS modules rely on them: `imports` (deduplicated by
# path), function modules called with `config`, `options`, `lib`, specialArgs
# and `_module.args` (pkgs, extendModules), `mkIf` / `mkMerge` / `mkOverride` /
# `mkOrder` properties pushed down into attribute sets, priorities
# (mkOptionDefault 1500 > mkDefault 1000 > plain 100 > mkImageMediaOverride 60 >
# mkForce 50), option declarations with types, defaults and `apply`, and
# `extendModules`. Unlike nixpkgs, an undeclared option is accepted
# ("freeform"): nested attribute sets merge attribute by attribute, lists
# concatenate, other values must be equal.
{ lib }:
let
  inherit (builtins)
    all attrNames concatMap elem filter foldl' genericClosure head isAttrs isPath isString length
    listToAttrs mapAttrs sort typeOf
    ;

  note = "(offline nixpkgs stand-in)";
  typeOfDef = v: if isAttrs v then v._type or null else null;
  isOption = v: isAttrs v && (v._type or null) == "option";
  isDerivation = v: isAttrs v && (v.type or null) == "derivation";
  showLoc = loc: builtins.concatStringsSep "." loc;

  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  mkOrder = priority: content: { _type = "order"; inherit priority content; };
  defaultOverridePriority = 100;
  defaultOrderPriority = 1000;

  # Properties of an attribute-set definition, pushed into its attributes
  # (nixpkgs pushDownProperties): conditions are not evaluated here.
  pushDown = loc: v:
    let t = typeOfDef v; in
    if t == "merge" then concatMap (pushDown loc) v.contents
    else if t == "if" then map (mapAttrs (_: mkIf v.condition)) (pushDown loc v.content)
    else if t == "override" then map (mapAttrs (_: mkOverride v.priority)) (pushDown loc v.content)
    else if t == "order" then map (mapAttrs (_: mkOrder v.priority)) (pushDown loc v.content)
    else if isAttrs v then [ v ]
    else throw "A definition for `${showLoc loc}' is not an attribute set but a ${typeOf v} ${note}";

  # Whether a definition is a nested set of options (not a value like a derivation).
  attrShaped = v:
    let t = typeOfDef v; in
    if t == "merge" then all attrShaped v.contents
    else if t == "if" || t == "override" || t == "order" then attrShaped v.content
    else isAttrs v && t == null && !(isDerivation v) && !(v ? __functor) && !(v ? outPath);

  # Evaluate mkIf conditions, flatten mkMerge (nixpkgs dischargeProperties).
  discharge = loc: v:
    let t = typeOfDef v; in
    if t == "merge" then concatMap (discharge loc) v.contents
    else if t == "if" then
      (if v.condition == true then discharge loc v.content
       else if v.condition == false then [ ]
       else throw "mkIf for `${showLoc loc}' has a condition that is not a Boolean ${note}")
    else [ v ];

  prioOf = d: if typeOfDef d.value == "override" then d.value.priority else defaultOverridePriority;
  filterOverrides = loc: defs:
    let
      highestPrio = foldl' (p: d: lib.min p (prioOf d)) 9999 defs;
      strip = d:
        if typeOfDef d.value == "override" then concatMap (v: strip (d // { value = v; })) (discharge loc d.value.content)
        else [ d ];
    in
    { inherit highestPrio; defs = concatMap strip (filter (d: prioOf d == highestPrio) defs); };

  orderOf = d: if typeOfDef d.value == "order" then d.value.priority else defaultOrderPriority;
  sortByOrder = defs:
    map (d: if typeOfDef d.value == "order" then d // { value = d.value.content; } else d)
      (sort (a: b: orderOf a < orderOf b) defs);

  mergeDefinitions = loc: type: defs:
    let
      discharged = concatMap (d: map (v: { inherit (d) file; value = v; }) (discharge loc d.value)) defs;
      filtered = filterOverrides loc discharged;
      sorted = sortByOrder filtered.defs;
      isDefined = sorted != [ ];
      mergedValue =
        if isDefined then type.merge loc sorted
        else throw "The option `${showLoc loc}' is used but not defined. ${note}";
    in
    {
      inherit isDefined mergedValue;
      inherit (filtered) highestPrio;
      definitions = map (d: d.value) sorted;
      definitionsWithLocations = sorted;
      files = map (d: d.file) sorted;
      value = mergedValue;
    };

  showValue = v:
    if isString v then "\"${v}\""
    else if builtins.isBool v then (if v then "true" else "false")
    else if builtins.isInt v || builtins.isFloat v then toString v
    else if v == null then "null"
    else if isDerivation v then "<derivation ${v.name or "?"}>"
    else "<${typeOf v}>";

  conflict = loc: defs:
    throw (
      "The option `${showLoc loc}' has conflicting definition values:"
      + lib.concatMapStrings (d: "\n- In `${d.file}': ${showValue d.value}") defs
      + "\nUse `lib.mkForce value` or `lib.mkDefault value` to change the priority on any of these definitions. ${note}"
    );

  mergeEqual = loc: defs:
    let first = (head defs).value; in
    if all (d: d.value == first) defs then first else conflict loc defs;

  mergeOne = loc: defs:
    if length defs == 1 then (head defs).value
    else throw "The unique option `${showLoc loc}' is defined multiple times, in ${lib.concatStringsSep ", " (map (d: "`${d.file}'") defs)}. ${note}";

  # Freeform values: nested sets merge per attribute, lists concatenate, the rest must agree.
  mergeAnything = loc: defs:
    let values = map (d: d.value) defs; in
    if length defs == 1 && !(attrShaped (head values)) then head values
    else if all attrShaped values then toConfig (evalNode loc { } defs)
    else if all builtins.isList values then builtins.concatLists values
    else mergeEqual loc defs;

  uniqueNames = names: attrNames (listToAttrs (map (n: { name = n; value = null; }) names));
  pushAll = loc: defs: concatMap (d: map (v: { inherit (d) file; value = v; }) (pushDown loc d.value)) defs;
  childDefs = pushed: n: concatMap (d: if d.value ? ${n} then [ { inherit (d) file; value = d.value.${n}; } ] else [ ]) pushed;

  evalOption = loc: opt: defs:
    let
      defaultDefs = lib.optional (opt ? default) { file = "<default of ${showLoc loc}>"; value = mkOverride 1500 opt.default; };
      res = mergeDefinitions loc (opt.type or lib.types.unspecified) (defaultDefs ++ defs);
    in
    res // { value = if opt ? apply then opt.apply res.mergedValue else res.mergedValue; };

  # The configuration as a tree of nodes: declared options, freeform leaves, sets.
  evalNode = loc: decls: defs:
    if isOption decls then { kind = "option"; record = evalOption loc decls defs; }
    else if decls == { } && defs != [ ] && !(all (d: attrShaped d.value) defs) then
      { kind = "leaf"; record = mergeDefinitions loc { merge = mergeAnything; } defs; }
    else
      let
        pushed = pushAll loc defs;
        names = uniqueNames (attrNames decls ++ concatMap (d: attrNames d.value) pushed);
      in
      { kind = "set"; children = lib.genAttrs names (n: evalNode (loc ++ [ n ]) (decls.${n} or { }) (childDefs pushed n)); };

  toConfig = node: if node.kind == "set" then mapAttrs (_: toConfig) node.children else node.record.value;

  # The `options` module argument: declarations with their values. Independent of
  # the attribute names of `config`, so `options ? a.b` never forces definitions.
  toOptions = loc: decls: defs:
    if isOption decls then decls // evalOption loc decls defs // { inherit loc; }
    else let pushed = pushAll loc defs; in mapAttrs (n: d: toOptions (loc ++ [ n ]) d (childDefs pushed n)) decls;

  mergeDecls = loc: a: b:
    if isOption a && isOption b then throw "The option `${showLoc loc}' is declared twice ${note}"
    else if isOption a then a
    else if isOption b then b
    else a // mapAttrs (n: v: if a ? ${n} then mergeDecls (loc ++ [ n ]) a.${n} v else v) b;

  shorthandIgnored = [ "_class" "_file" "key" "disabledModules" "imports" "options" "config" "meta" "freeformType" ];

  evalModules =
    evalArgs@{ modules, specialArgs ? { }, prefix ? [ ], class ? null, ... }:
    let
      internalModule = {
        _file = "<module system of the offline nixpkgs stand-in>";
        key = "<stand-in internal module>";
        options._module = {
          args = lib.mkOption { type = lib.types.lazyAttrsOf lib.types.raw; default = { }; };
          specialArgs = lib.mkOption { type = lib.types.raw; default = specialArgs; readOnly = true; internal = true; };
          check = lib.mkOption { type = lib.types.bool; default = true; };
        };
        config._module.args = { inherit extendModules; moduleType = null; };
      };

      baseArgs = { inherit lib config options specialArgs; _class = class; } // specialArgs;
      callModule = f:
        f (baseArgs // mapAttrs (n: _: if baseArgs ? ${n} then baseArgs.${n} else config._module.args.${n}) (lib.functionArgs f));

      normalise = file: key: m:
        let structured = m ? config || m ? options; in
        {
          _file = m._file or file;
          key = m.key or key;
          imports = m.imports or [ ];
          disabledModules = m.disabledModules or [ ];
          options = m.options or { };
          config = if structured then m.config or { } else removeAttrs m shorthandIgnored;
        };

      load = parentFile: parentKey: index: ref:
        let
          isRef = isPath ref || isString ref;
          file = if isRef then toString ref else parentFile;
          value = if isRef then import ref else ref;
          key =
            if isRef then toString ref
            else if isAttrs value && value ? key then toString value.key
            else "${parentKey}:${toString index}";
          applied = if lib.isFunction value then callModule value else value;
        in
        { inherit key; module = normalise file key applied; };

      items = genericClosure {
        startSet = lib.imap0 (i: load "<evalModules argument>" "<root>" i) ([ internalModule ] ++ modules);
        operator = item: lib.imap0 (i: load item.module._file item.key i) item.module.imports;
      };
      disabled = map toString (concatMap (i: i.module.disabledModules) items);
      collected = map (i: i.module) (filter (i: !(elem i.key disabled)) items);

      declarations = foldl' (mergeDecls prefix) { } (map (m: m.options) collected);
      definitions = map (m: { file = m._file; value = m.config; }) collected;

      config = toConfig (evalNode prefix declarations definitions);
      options = toOptions prefix declarations definitions;

      extendModules = extension:
        evalModules (evalArgs // {
          modules = modules ++ (extension.modules or [ ]);
          specialArgs = specialArgs // (extension.specialArgs or { });
        });
    in
    {
      _type = "configuration";
      inherit config options extendModules class;
      _module = config._module;
      type = null;
    };
in
{
  inherit
    evalModules mkIf mkMerge mkOverride mkOrder mergeDefinitions mergeEqual mergeOne mergeAnything conflict
    pushDown attrShaped discharge uniqueNames childDefs defaultOverridePriority isOption
    ;
}
