"""The ``crossnix`` console script: the same tasks as ``inv`` in a checkout, usable anywhere."""

from __future__ import annotations

import os
import sys

from invoke.program import Program

from crossnix_tasks import __version__
from crossnix_tasks.collection import ns

program = Program(name="crossnix", binary="crossnix", binary_names=["crossnix"], namespace=ns, version=__version__)


def main() -> None:
    try:
        program.run()
    except BrokenPipeError:  # `crossnix boards | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
