# offline nixpkgs stand-in: option types after nixpkgs' lib/types.nix (merge functions; checks only
# where `either` needs them to pick a side).
{ lib }:
let
  inherit (builtins) all any concatLists concatStringsSep head isAttrs isBool isFunction isInt isList isString map;
  m = lib.modules;
  isDerivation = v: isAttrs v && (v.type or null) == "derivation";
  mkType = name: check: merge: { _type = "option-type"; inherit name check merge; description = name; };
  equal = name: check: mkType name check m.mergeEqual;
  values = defs: map (d: d.value) defs;

  separatedString = sep: mkType "separatedString" isString (loc: defs: concatStringsSep sep (values defs));

  attrsType = name: lazy: elemType: {
    _type = "option-type";
    inherit name elemType;
    description = "${name} of ${elemType.name or "?"}";
    check = isAttrs;
    merge = loc: defs:
      let
        pushed = concatLists (map (d: map (v: { inherit (d) file; value = v; }) (m.pushDown loc d.value)) defs);
        names = m.uniqueNames (concatLists (map (d: builtins.attrNames d.value) pushed));
        merged = n: m.mergeDefinitions (loc ++ [ n ]) elemType (m.childDefs pushed n);
      in
      if lazy then lib.genAttrs names (n: (merged n).mergedValue)
      else builtins.listToAttrs (builtins.concatMap (n: let r = merged n; in if r.isDefined then [ { name = n; value = r.mergedValue; } ] else [ ]) names);
  };

  submoduleWith = { modules ? [ ], specialArgs ? { }, shorthandOnlyDefinesConfig ? false, ... }: {
    _type = "option-type";
    name = "submodule";
    description = "submodule";
    check = v: isAttrs v || isFunction v;
    merge = loc: defs:
      (m.evalModules {
        modules =
          modules
          ++ [ { _file = "<submodule name>"; _module.args.name = lib.mkOptionDefault (lib.last loc); } ]
          ++ map (d: if lib.isFunction d.value then { _file = d.file; imports = [ d.value ]; } else { _file = d.file; config = d.value; }) defs;
        inherit specialArgs;
        prefix = loc;
      }).config;
  };

  types = {
    anything = mkType "anything" (_: true) m.mergeAnything;
    unspecified = mkType "unspecified" (_: true) m.mergeAnything;
    raw = mkType "raw" (_: true) m.mergeOne;
    bool = equal "bool" isBool;
    int = equal "int" isInt;
    ints = {
      positive = equal "positive integer" isInt;
      unsigned = equal "unsigned integer" isInt;
      u8 = equal "u8" isInt;
      u16 = equal "u16" isInt;
      u32 = equal "u32" isInt;
      between = lo: hi: equal "integer between" isInt;
    };
    port = equal "port" isInt;
    float = equal "float" builtins.isFloat;
    number = equal "number" (v: isInt v || builtins.isFloat v);
    str = equal "str" isString;
    nonEmptyStr = equal "nonEmptyStr" isString;
    singleLineStr = equal "singleLineStr" isString;
    strMatching = pattern: equal "strMatching" isString;
    passwdEntry = t: t;
    enum = choices: equal "enum" (v: builtins.elem v choices);
    path = equal "path" lib.isStringLike;
    pathInStore = equal "pathInStore" lib.isStringLike;
    package = equal "package" (v: isDerivation v || lib.isStringLike v);
    shellPackage = types.package;
    attrs = mkType "attrs" isAttrs (loc: defs: builtins.foldl' (acc: d: acc // d.value) { } defs);
    lines = separatedString "\n";
    commas = separatedString ",";
    envVar = separatedString ":";
    inherit separatedString;
    listOf = elemType: (mkType "listOf" isList (loc: defs: concatLists (values defs))) // { inherit elemType; };
    nonEmptyListOf = types.listOf;
    attrsOf = attrsType "attrsOf" false;
    lazyAttrsOf = attrsType "lazyAttrsOf" true;
    nullOr = elemType: mkType "nullOr" (v: v == null || elemType.check v) (loc: defs:
      if all (d: d.value == null) defs then null
      else if any (d: d.value == null) defs then throw "The option `${lib.showOption loc}' is defined both null and not null (offline nixpkgs stand-in)"
      else elemType.merge loc defs);
    either = a: b: mkType "either" (v: a.check v || b.check v) (loc: defs:
      if all (d: a.check d.value) defs then a.merge loc defs
      else if all (d: b.check d.value) defs then b.merge loc defs
      else m.mergeEqual loc defs);
    oneOf = ts: builtins.foldl' types.either (head ts) (builtins.tail ts);
    uniq = t: mkType "uniq" t.check m.mergeOne;
    unique = { message ? "" }: types.uniq;
    functionTo = t: mkType "functionTo" isFunction (loc: defs: x: t.merge loc (map (d: d // { value = d.value x; }) defs));
    coercedTo = from: f: to: mkType "coercedTo" (v: from.check v || to.check v) (loc: defs:
      to.merge loc (map (d: if from.check d.value && !(to.check d.value) then d // { value = f d.value; } else d) defs));
    deferredModule = mkType "deferredModule" (_: true) (loc: defs: {
      imports = map (d: { _file = d.file; imports = [ d.value ]; }) defs;
    });
    submodule = modules: submoduleWith { modules = lib.toList modules; };
    inherit submoduleWith;
  };
in
types
