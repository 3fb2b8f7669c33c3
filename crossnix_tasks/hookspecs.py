"""The crossnix plugin hooks.

A plugin is any object (usually a module) with functions decorated with :data:`hookimpl`, registered under
the ``crossnix.boards`` entry-point group::

    [project.entry-points."crossnix.boards"]
    my-board = "my_package.my_board"

Hook calls are keyword-only and every plugin that implements a hook answers; crossnix flattens the answers
and checks them (two plugins declaring one board name is an error naming both). An implementation may take
a subset of a hook's arguments, so hooks can grow new arguments without breaking plugins.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from crossnix_tasks.boards import Board
    from crossnix_tasks.inventory import Target

PROJECT = "crossnix"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def crossnix_boards() -> list[Board]:
    """Return the boards this plugin provides.

    Called once per plugin manager. Each :class:`~crossnix_tasks.boards.Board` carries its Nix systems,
    image variants (and which of them cannot be cross-compiled), the NixOS module files added to every
    target of that board, the flake inputs those modules read (``inputs.<name>``), how QEMU boots its images
    and board know-how. A board name must be unique across all installed plugins.
    """
    raise NotImplementedError


@hookspec
def crossnix_nixos_modules(target: Target, board: Board) -> list[Path]:
    """Return NixOS module files to add to ``target`` (any board), e.g. a site policy.

    Called for every target being evaluated; return an empty list for targets the plugin leaves alone.
    Module files receive the same module arguments as board modules (``inputs``, ``crossnix``).
    """
    raise NotImplementedError
