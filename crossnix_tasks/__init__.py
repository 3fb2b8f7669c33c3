"""crossnix: cross-compile NixOS for small boards and deploy it to a fleet.

Plugins write ``from crossnix_tasks import hookimpl`` and return :class:`~crossnix_tasks.boards.Board`
objects; ``tasks.py`` files write ``from crossnix_tasks import ns``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crossnix_tasks.boards import Board, FlakeInput, ImageVariant, Media, QemuMachine
from crossnix_tasks.hookspecs import hookimpl

if TYPE_CHECKING:
    from invoke.collection import Collection

    ns: Collection

__version__ = "0.1.0"
__all__ = ["Board", "FlakeInput", "ImageVariant", "Media", "QemuMachine", "__version__", "hookimpl", "ns"]


def __getattr__(name: str) -> Any:
    # The task collection imports every command module; plugins importing `hookimpl` should not pay for it.
    if name == "ns":
        from crossnix_tasks.collection import ns

        return ns
    raise AttributeError(name)
