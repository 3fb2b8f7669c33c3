"""Console output: results on stdout, diagnostics on stderr, plain text when not on a terminal."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    # Plain print keeps machine-readable output free of rich's wrapping and markup.
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", markup=True, soft_wrap=True)
