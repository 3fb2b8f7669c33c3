"""One small async function per Nix command crossnix runs.

Each function builds an argv and hands it to :func:`crossnix_tasks.process.run` (the only place processes
start), so tests pin these exact command lines. Commands that report progress run with
``--log-format internal-json``; their stderr is parsed into :mod:`crossnix_tasks.nixlog` events, passed to
``on_event`` as they arrive, and turned into a readable :class:`NixError` (error text, the failing build's last
log lines, a hint for known failures) when Nix fails.

Written for Debian's Nix 2.8 (test-rig.md §1): ``nix build --json`` instead of ``--print-out-paths``, whole
``.drv`` paths as installables, experimental features switched on through ``NIX_CONFIG``. Newer Nix reads a bare
``.drv`` installable as the derivation file itself, so :func:`build` asks for ``DRV^*`` there (Nix 2.13+).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossnix_tasks import nixhints, process
from crossnix_tasks.nixlog import BuildTracker, EventSink, error_summary
from crossnix_tasks.process import Completed, ProcessFailed

NIX = "nix"
NIX_STORE = "nix-store"
FEATURES = "nix-command flakes"
LOG_JSON = ("--log-format", "internal-json")
#: The first Nix with ``INSTALLABLE^OUTPUTS``; later releases stopped building the outputs of a bare ``.drv``.
OUTPUT_SELECTOR_SINCE = (2, 13)


def nix_env(extra: Mapping[str, str] | None = None, *, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for Nix commands: the caller's, with ``nix-command flakes`` enabled (Nix 2.8 needs
    them switched on) on top of any ``NIX_CONFIG`` the user set, plus ``extra``."""
    env = dict(os.environ if base is None else base)
    lines = [line for line in env.get("NIX_CONFIG", "").splitlines() if line.strip()]
    lines.append(f"extra-experimental-features = {FEATURES}")
    env["NIX_CONFIG"] = "\n".join(lines)
    if extra:
        env.update(extra)
    return env


class NixError(ProcessFailed):
    """A Nix command failed; the message holds Nix's errors and the failing builds' last log lines."""

    def __init__(self, done: Completed, tracker: BuildTracker, what: str) -> None:
        self.tracker = tracker
        errors = error_summary(tracker) or process.stderr_tail(done.stderr)
        parts = [f"{what} failed (`{process.display_argv(done.argv)}`, exit code {done.returncode})", errors]
        logs = []
        for build in tracker.failed_builds():
            if build.log:
                where = f" on {build.machine}" if build.machine else ""
                lines = "\n".join(f"  | {line}" for line in build.log)
                logs.append(f"last lines of the build of {build.name}{where}:\n{lines}")
        parts.extend(logs)
        searchable = "\n".join([errors, *tracker.raw, *(line for b in tracker.builds.values() for line in b.log)])
        self.known = nixhints.known_error_names(searchable)
        super().__init__(
            done.argv,
            done.returncode,
            done.stderr,
            stdout=done.stdout,
            message="\n".join(p for p in parts if p),
            hint=nixhints.hint_for(searchable),
        )


@dataclass(frozen=True)
class BuildResult:
    """One entry of ``nix build --json``: the derivation and its output paths."""

    drv_path: str
    outputs: Mapping[str, str] = field(default_factory=dict)

    @property
    def out(self) -> str:
        return self.outputs.get("out") or next(iter(self.outputs.values()))


async def _nix(
    args: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    on_event: EventSink | None = None,
    check: bool = True,
    cwd: str | Path | None = None,
    program: str = NIX,
) -> tuple[Completed, BuildTracker]:
    tracker = BuildTracker()

    def on_line(line: str) -> None:
        event = tracker.feed_line(line)
        if on_event is not None:
            on_event(event)

    done = await process.run(
        [program, *args],
        env=nix_env(env),
        cwd=cwd,
        input=input,
        on_stderr_line=on_line,
        check=False,
    )
    if check and done.returncode != 0:
        raise NixError(done, tracker, what)
    return done, tracker


def _json(done: Completed) -> Any:
    try:
        return json.loads(done.stdout)
    except ValueError as exc:
        raise ProcessFailed(done.argv, done.returncode, done.stderr, message=f"unexpected output: {exc}") from None


# Evaluation -----------------------------------------------------------------------------------------------


async def eval_json(
    file: Path,
    attr: str,
    *,
    argstr: Mapping[str, str] | None = None,
    on_event: EventSink | None = None,
    env: Mapping[str, str] | None = None,
    show_trace: bool = False,
) -> Any:
    """``nix eval --json --impure -f FILE --argstr K V ... ATTR``: evaluate an attribute of a Nix file.

    ``--impure`` because crossnix's evaluator reads the project's flake.lock and module files by path."""
    args = ["eval", "--json", "--impure", *LOG_JSON, "-f", str(file)]
    for key, value in (argstr or {}).items():
        args += ["--argstr", key, value]
    if show_trace:
        args.append("--show-trace")
    args.append(attr)
    done, _ = await _nix(args, what="evaluation", on_event=on_event, env=env)
    return _json(done)


async def eval_installable_json(installable: str, *, apply: str | None = None, impure: bool = False) -> Any:
    """``nix eval --json INSTALLABLE [--apply F]`` (e.g. ``path:/x#nixosConfigurations``)."""
    args = ["eval", "--json", *LOG_JSON, installable]
    if apply is not None:
        args += ["--apply", apply]
    if impure:
        args.append("--impure")
    done, _ = await _nix(args, what="evaluation")
    return _json(done)


# Building -------------------------------------------------------------------------------------------------


_drv_outputs_suffix: str | None = None  # "" or "^*", once per process (tests set it)


def parse_version(text: str) -> tuple[int, int] | None:
    """``nix (Nix) 2.8.0`` -> ``(2, 8)``."""
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


async def drv_outputs_suffix() -> str:
    """What makes a ``.drv`` installable mean "all its outputs": nothing before Nix 2.13 (which has no ``^``
    syntax), ``^*`` from 2.13 on (newer Nix builds nothing for a bare ``.drv``: it is the file itself)."""
    global _drv_outputs_suffix
    if _drv_outputs_suffix is None:
        done, _ = await _nix(["--version"], what="nix --version", check=False)
        version = parse_version(done.stdout) if done.returncode == 0 else None
        _drv_outputs_suffix = "^*" if version is not None and version >= OUTPUT_SELECTOR_SINCE else ""
    return _drv_outputs_suffix


async def build(
    installables: Sequence[str],
    *,
    store: str | None = None,
    builders: str | None = None,
    out_link: Path | None = None,
    max_jobs: str = "auto",
    keep_going: bool = True,
    on_event: EventSink | None = None,
    env: Mapping[str, str] | None = None,
) -> list[BuildResult]:
    """``nix build --json`` of ``installables`` (usually ``.drv`` paths: their outputs are built, whatever
    the Nix version) in one process, parallel inside Nix.

    ``store``: build in another store (``ssh-ng://builder``); ``builders``: hand Nix remote builders;
    ``out_link``: GC roots ``out_link``, ``out_link-1``, ... in installable order (else ``--no-link``)."""
    if not installables:
        return []
    args = ["build", "--json", *LOG_JSON]
    args += ["--out-link", str(out_link)] if out_link is not None else ["--no-link"]
    args += ["--max-jobs", max_jobs]
    if keep_going:
        args.append("--keep-going")
    if store is not None:
        args += ["--store", store]
    if builders is not None:
        args += ["--builders", builders]
    suffix = await drv_outputs_suffix()
    args += [f"{i}{suffix}" if i.endswith(".drv") else i for i in installables]
    done, _ = await _nix(args, what="nix build", on_event=on_event, env=env)
    return [
        BuildResult(str(entry["drvPath"]), {str(k): str(v) for k, v in entry.get("outputs", {}).items()})
        for entry in _json(done)
    ]


async def probe_build(
    probe_file: Path, *, system: str, probe_dir: Path, nonce: str, env: Mapping[str, str] | None = None
) -> Completed:
    """Build crossnix's probe derivation for ``system`` (a tiny static binary of that architecture run by the
    builder). Returns the completed process without raising: the caller reads success or the error."""
    args = ["build", "--no-link", "--json", *LOG_JSON, "-f", str(probe_file)]
    args += ["--argstr", "system", system, "--argstr", "probeDir", str(probe_dir), "--argstr", "nonce", nonce]
    done, _ = await _nix(args, what="probe build", check=False, env=env)
    return done


# Copying, store queries, signing ---------------------------------------------------------------------------


async def copy(
    paths: Sequence[str],
    *,
    to: str | None = None,
    from_: str | None = None,
    substitute_on_destination: bool = False,
    no_check_sigs: bool = False,
    derivation: bool = False,
    ssh_opts: str | None = None,
    on_event: EventSink | None = None,
) -> None:
    """``nix copy [--to URI | --from URI] PATHS``; ``ssh_opts`` becomes ``NIX_SSHOPTS`` (Nix splits it on
    whitespace, so pass ``-F <ssh_config>`` rather than options with spaces)."""
    if not paths:
        return
    if (to is None) == (from_ is None):
        raise ValueError("copy needs exactly one of to= and from_=")
    args = ["copy", *LOG_JSON]
    args += ["--to", to] if to is not None else ["--from", str(from_)]
    if substitute_on_destination:
        args.append("--substitute-on-destination")
    if no_check_sigs:
        args.append("--no-check-sigs")
    if derivation:
        args.append("--derivation")
    args += list(paths)
    env = {"NIX_SSHOPTS": ssh_opts} if ssh_opts is not None else None
    await _nix(args, what="nix copy", on_event=on_event, env=env)


async def path_info(
    paths: Sequence[str],
    *,
    store: str | None = None,
    recursive: bool = False,
    closure_size: bool = False,
    ssh_opts: str | None = None,
) -> list[dict[str, Any]]:
    """``nix path-info --json [-r] [-sS] [--store URI] PATHS``."""
    args = ["path-info", "--json"]
    if recursive:
        args.append("-r")
    if closure_size:
        args += ["-s", "-S"]
    if store is not None:
        args += ["--store", store]
    args += list(paths)
    env = {"NIX_SSHOPTS": ssh_opts} if ssh_opts is not None else None
    done, _ = await _nix(args, what="nix path-info", env=env)
    result = _json(done)
    return list(result) if isinstance(result, list) else []


async def show_derivation(paths: Sequence[str]) -> dict[str, Any]:
    """``nix show-derivation PATHS``: drv path -> its JSON (system, builder, env, inputs, outputs)."""
    done, _ = await _nix(["show-derivation", *paths], what="nix show-derivation")
    result = _json(done)
    return dict(result) if isinstance(result, dict) else {}


async def store_sign(paths: Sequence[str], key_file: Path, *, recursive: bool = True, store: str | None = None) -> None:
    """``nix store sign -k KEY [-r] PATHS``: add signatures (the secret key stays a file, never in the store)."""
    args = ["store", "sign", "-k", str(key_file)]
    if recursive:
        args.append("-r")
    if store is not None:
        args += ["--store", store]
    args += list(paths)
    await _nix(args, what="nix store sign")


async def key_generate_secret(name: str) -> str:
    """``nix key generate-secret --key-name NAME``; returns the secret key text (write it mode 0600)."""
    done, _ = await _nix(["key", "generate-secret", "--key-name", name], what="nix key generate-secret")
    return done.stdout.strip()


async def key_public(secret: str) -> str:
    """``nix key convert-secret-to-public`` with the secret on stdin (never on the command line)."""
    done, _ = await _nix(
        ["key", "convert-secret-to-public"], what="nix key convert-secret-to-public", input=secret.encode() + b"\n"
    )
    return done.stdout.strip()


async def show_config() -> dict[str, Any]:
    """``nix show-config --json``: settings as ``{name: {"value": ...}}`` (Nix 2.8 wraps every value)."""
    done, _ = await _nix(["show-config", "--json"], what="nix show-config")
    config = _json(done)
    return {k: (v.get("value") if isinstance(v, dict) else v) for k, v in config.items()}


async def flake_lock(flake_ref: str) -> None:
    """``nix flake lock FLAKE``: write or update flake.lock."""
    await _nix(["flake", "lock", *LOG_JSON, flake_ref], what="nix flake lock")


async def add_root(store_path: str, link: Path) -> None:
    """``nix-store --realise PATH --add-root LINK --indirect``: keep ``store_path`` alive through ``link``."""
    await _nix(
        ["--realise", store_path, "--add-root", str(link), "--indirect"], what="nix-store --add-root", program=NIX_STORE
    )
