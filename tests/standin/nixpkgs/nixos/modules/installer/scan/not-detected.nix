# offline nixpkgs stand-in: hardware scan module (no effect).
{ ... }: { }
