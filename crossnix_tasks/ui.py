"""Console output: results on stdout, diagnostics on stderr, plain text when not on a terminal."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape


def _console(stream: TextIO, **kwargs: Any) -> Console:
    # Off a terminal rich assumes 80 columns and cuts table cells ("kitchen-…"); logs and CI want them whole.
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, soft_wrap=True, width=200 if piped else None, **kwargs)


out = _console(sys.stdout)
err = _console(sys.stderr, stderr=True)


def print_json(data: Any) -> None:
    # Plain print keeps machine-readable output free of rich's wrapping and markup.
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def warn(message: str) -> None:
    """``message`` is plain text (paths, values from boards.toml, "[targets.NAME]"), never rich markup."""
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", markup=True, soft_wrap=True)
