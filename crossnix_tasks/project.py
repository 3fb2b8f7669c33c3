"""The project a task works on: its boards.toml, the installed plugins, and paths derived from them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from crossnix_tasks.errors import ConfigError
from crossnix_tasks.inventory import DEFAULT_FILE, Inventory, load_inventory
from crossnix_tasks.plugins import Plugins, load_plugins

INVENTORY_ENV = "CROSSNIX_INVENTORY"


def find_inventory(start: Path | None = None) -> Path:
    """``$CROSSNIX_INVENTORY``, else the nearest boards.toml in the current directory or a parent."""
    explicit = os.environ.get(INVENTORY_ENV)
    if explicit:
        return Path(explicit).expanduser().absolute()
    here = (start or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        candidate = directory / DEFAULT_FILE
        if candidate.is_file():
            return candidate
    return here / DEFAULT_FILE


@dataclass
class Project:
    inventory_path: Path = field(default_factory=find_inventory)
    plugins: Plugins = field(default_factory=load_plugins)

    @cached_property
    def inventory(self) -> Inventory:
        return load_inventory(self.inventory_path, self.plugins.boards)

    @property
    def root(self) -> Path:
        return self.inventory_path.parent

    def require_inventory(self) -> Inventory:
        if not self.inventory_path.exists():
            raise ConfigError(
                [f"{self.inventory_path}: file not found"],
                hint="run `inv init --board rpi4` in an empty directory, `inv add-target` to create one, "
                f"or set {INVENTORY_ENV}",
            )
        return self.inventory
