# offline nixpkgs stand-in: lib
#
# NOT nixpkgs. crossnix's tests run without network access, so they cannot
# fetch real nixpkgs; this directory exposes the same interface crossnix and
# its board modules use on real nixpkgs (lib.nixosSystem, extendModules, module
# imports, mkDefault/mkForce priorities, system.build.toplevel and
# system.build.images.<variant>.passthru.filePath, nixpkgs.hostPlatform /
# buildPlatform) with tiny /bin/sh derivations. The function names and
# semantics follow nixpkgs' lib/*.nix; only what NixOS modules commonly use is
# here.
let
  lib = {
    # trivial -----------------------------------------------------------------
    trivial = {
      release = "26.05";
      codeName = "Standin";
      versionSuffix = ".00000000.offline-standin";
      version = lib.trivial.release + lib.trivial.versionSuffix;
      inherit (lib) id const flip isFunction functionArgs;
    };
    version = lib.trivial.version;
    release = lib.trivial.release;
    isStandin = true;
    id = x: x;
    const = x: _: x;
    flip = f: a: b: f b a;
    pipe = builtins.foldl' (x: f: f x);
    fix = f: let x = f x; in x;
    isFunction = f: builtins.isFunction f || (builtins.isAttrs f && f ? __functor);
    functionArgs = f: if f ? __functor then f.__functionArgs or (lib.functionArgs (f.__functor f)) else builtins.functionArgs f;
    setFunctionArgs = f: args: { __functor = self: f; __functionArgs = args; };
    min = a: b: if a < b then a else b;
    max = a: b: if a > b then a else b;
    boolToString = b: if b then "true" else "false";
    warn = msg: v: builtins.trace "warning: ${msg}" v;
    warnIf = cond: msg: v: if cond then lib.warn msg v else v;
    throwIf = cond: msg: v: if cond then throw msg else v;
    throwIfNot = cond: msg: v: if cond then v else throw msg;
    assertMsg = pred: msg: pred || throw msg;
    inherit (builtins) toJSON fromJSON readFile pathExists isAttrs isList isString isBool isInt isPath seq deepSeq tryEval typeOf toString;
    isDerivation = v: builtins.isAttrs v && (v.type or null) == "derivation";
    isStringLike = v: builtins.isString v || builtins.isPath v || (builtins.isAttrs v && (v ? outPath || v ? __toString));

    # attrsets ----------------------------------------------------------------
    inherit (builtins) attrNames attrValues mapAttrs listToAttrs removeAttrs hasAttr getAttr intersectAttrs catAttrs zipAttrsWith;
    mapAttrs' = f: set: builtins.listToAttrs (map (n: f n set.${n}) (builtins.attrNames set));
    mapAttrsToList = f: set: map (n: f n set.${n}) (builtins.attrNames set);
    filterAttrs = pred: set: builtins.listToAttrs (builtins.concatMap (n: if pred n set.${n} then [ { name = n; value = set.${n}; } ] else [ ]) (builtins.attrNames set));
    nameValuePair = name: value: { inherit name value; };
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    optionalAttrs = cond: set: if cond then set else { };
    recursiveUpdate = lhs: rhs: lib.recursiveUpdateUntil (path: l: r: !(builtins.isAttrs l && builtins.isAttrs r)) lhs rhs;
    recursiveUpdateUntil = pred: lhs: rhs:
      let
        go = path: l: r:
          builtins.zipAttrsWith (n: values:
            let here = path ++ [ n ]; in
            if builtins.length values == 1 || pred here (builtins.elemAt values 1) (builtins.head values)
            then builtins.head values
            else go here (builtins.elemAt values 1) (builtins.head values)) [ r l ];
      in go [ ] lhs rhs;
    attrByPath = path: default: set:
      if path == [ ] then set
      else if builtins.isAttrs set && set ? ${builtins.head path} then lib.attrByPath (builtins.tail path) default set.${builtins.head path}
      else default;
    hasAttrByPath = path: set:
      path == [ ] || (builtins.isAttrs set && set ? ${builtins.head path} && lib.hasAttrByPath (builtins.tail path) set.${builtins.head path});
    getAttrFromPath = path: set: lib.attrByPath path (throw "cannot find attribute `${lib.concatStringsSep "." path}'") set;
    setAttrByPath = path: value: if path == [ ] then value else { ${builtins.head path} = lib.setAttrByPath (builtins.tail path) value; };
    foldAttrs = op: nul: list: builtins.foldl' (acc: set: acc // builtins.mapAttrs (n: v: op v (acc.${n} or nul)) set) { } (lib.reverseList list);
    collect = pred: v: if pred v then [ v ] else if builtins.isAttrs v then builtins.concatMap (lib.collect pred) (builtins.attrValues v) else [ ];
    mapAttrsRecursive = f: set: lib.mapAttrsRecursiveCond (_: true) f set;
    mapAttrsRecursiveCond = cond: f: set:
      let go = path: builtins.mapAttrs (n: v: if builtins.isAttrs v && cond v then go (path ++ [ n ]) v else f (path ++ [ n ]) v); in go [ ] set;
    attrsets = { inherit (lib) mapAttrs' mapAttrsToList filterAttrs nameValuePair genAttrs optionalAttrs recursiveUpdate attrByPath hasAttrByPath getAttrFromPath setAttrByPath isDerivation; };

    # lists -------------------------------------------------------------------
    inherit (builtins) head tail length elem elemAt filter map concatMap concatLists genList sort any all partition;
    foldl' = builtins.foldl';
    foldl = op: nul: list: builtins.foldl' op nul list;
    foldr = op: nul: list: let len = builtins.length list; go = i: if i == len then nul else op (builtins.elemAt list i) (go (i + 1)); in go 0;
    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    toList = x: if builtins.isList x then x else [ x ];
    flatten = x: if builtins.isList x then builtins.concatMap lib.flatten x else [ x ];
    unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];
    last = list: builtins.elemAt list (builtins.length list - 1);
    init = list: builtins.genList (i: builtins.elemAt list i) (builtins.length list - 1);
    range = first: last: if first > last then [ ] else builtins.genList (n: first + n) (last - first + 1);
    imap0 = f: list: builtins.genList (i: f i (builtins.elemAt list i)) (builtins.length list);
    imap1 = f: list: builtins.genList (i: f (i + 1) (builtins.elemAt list i)) (builtins.length list);
    reverseList = xs: let l = builtins.length xs; in builtins.genList (n: builtins.elemAt xs (l - n - 1)) l;
    findFirst = pred: default: list: let found = builtins.filter pred list; in if found == [ ] then default else builtins.head found;
    remove = e: builtins.filter (x: x != e);
    subtractLists = e: builtins.filter (x: !(builtins.elem x e));
    intersectLists = e: builtins.filter (x: builtins.elem x e);
    count = pred: list: builtins.length (builtins.filter pred list);
    lists = { inherit (lib) optional optionals toList flatten unique last range imap0 imap1 reverseList findFirst remove subtractLists; };

    # strings -----------------------------------------------------------------
    inherit (builtins) stringLength substring replaceStrings match split;
    concatStrings = builtins.concatStringsSep "";
    concatStringsSep = builtins.concatStringsSep;
    concatMapStrings = f: list: lib.concatStrings (map f list);
    concatMapStringsSep = sep: f: list: builtins.concatStringsSep sep (map f list);
    concatLines = list: lib.concatMapStrings (s: s + "\n") list;
    optionalString = cond: s: if cond then s else "";
    hasPrefix = pre: s: builtins.substring 0 (builtins.stringLength pre) s == pre;
    hasSuffix = suf: s:
      let ls = builtins.stringLength s; lf = builtins.stringLength suf; in
      lf <= ls && builtins.substring (ls - lf) lf s == suf;
    hasInfix = infix: s: builtins.match ".*${lib.escapeRegex infix}.*" s != null;
    escapeRegex = builtins.replaceStrings
      [ "\\" "[" "]" "{" "}" "(" ")" "^" "$" "*" "+" "?" "." "|" ]
      [ "\\\\" "\\[" "\\]" "\\{" "\\}" "\\(" "\\)" "\\^" "\\$" "\\*" "\\+" "\\?" "\\." "\\|" ];
    removePrefix = pre: s: if lib.hasPrefix pre s then builtins.substring (builtins.stringLength pre) (-1) s else s;
    removeSuffix = suf: s: if lib.hasSuffix suf s then builtins.substring 0 (builtins.stringLength s - builtins.stringLength suf) s else s;
    toUpper = builtins.replaceStrings lib.lowerChars lib.upperChars;
    toLower = builtins.replaceStrings lib.upperChars lib.lowerChars;
    lowerChars = lib.stringToCharacters "abcdefghijklmnopqrstuvwxyz";
    upperChars = lib.stringToCharacters "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    stringToCharacters = s: builtins.genList (p: builtins.substring p 1 s) (builtins.stringLength s);
    splitString = sep: s: builtins.filter builtins.isString (builtins.split (lib.escapeRegex sep) s);
    escapeShellArg = arg: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString arg)}'";
    escapeShellArgs = args: builtins.concatStringsSep " " (map lib.escapeShellArg args);
    makeSearchPath = sub: pkgs: builtins.concatStringsSep ":" (map (p: "${p}/${sub}") pkgs);
    makeBinPath = lib.makeSearchPath "bin";
    fileContents = file: lib.removeSuffix "\n" (builtins.readFile file);
    versionAtLeast = v1: v2: builtins.compareVersions v1 v2 >= 0;
    versionOlder = v1: v2: builtins.compareVersions v2 v1 == 1;
    strings = { inherit (lib) concatStrings concatStringsSep concatMapStrings concatMapStringsSep optionalString hasPrefix hasSuffix removePrefix removeSuffix toUpper toLower splitString escapeShellArg escapeShellArgs fileContents; };

    # options and modules ------------------------------------------------------
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: lib.mkOption { type = lib.types.bool; default = false; description = "Whether to enable ${name}."; };
    mkPackageOption = pkgs: name: extra: lib.mkOption { type = lib.types.package; default = pkgs.${name}; };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    literalMD = text: { _type = "literalMD"; inherit text; };
    mdDoc = x: x;
    showOption = loc: builtins.concatStringsSep "." loc;
    mkRenamedOptionModule = from: to: { };
    mkRemovedOptionModule = path: msg: { };
    mkAliasOptionModule = from: to: { };

    inherit (lib.modules) evalModules mkIf mkMerge mkOverride mkOrder;
    mkDefault = lib.mkOverride 1000;
    mkOptionDefault = lib.mkOverride 1500;
    mkForce = lib.mkOverride 50;
    mkVMOverride = lib.mkOverride 10;
    mkImageMediaOverride = lib.mkOverride 60;
    mkBefore = lib.mkOrder 500;
    mkAfter = lib.mkOrder 1500;
    modules = import ./modules.nix { inherit lib; };
    types = import ./types.nix { inherit lib; };
    options = { inherit (lib) mkOption mkEnableOption literalExpression showOption; };
    systems = import ./systems.nix { inherit lib; };
  };
in
lib
