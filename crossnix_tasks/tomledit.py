"""Edits to boards.toml through tomlkit: every comment, blank line and the order of what was there is kept."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Table

from crossnix_tasks.errors import CrossnixError


def add_target(path: Path, name: str, values: Mapping[str, Any], *, comment: str | None = None) -> None:
    """Append ``[targets.NAME]`` with ``values`` to the inventory at ``path``."""
    source = path.read_text(encoding="utf-8") if path.exists() else ""
    document = tomlkit.parse(source)
    targets = document.get("targets")
    if targets is None:
        targets = tomlkit.table(is_super_table=True)
        document.add("targets", targets)
    elif not isinstance(targets, Table):
        raise CrossnixError(f"{path}: 'targets' is not a table")
    if name in targets:
        raise CrossnixError(f"{path}: target {name!r} already exists", hint="choose another name")
    table = tomlkit.table()
    if comment:
        table.add(tomlkit.comment(comment))
    for key, value in values.items():
        table.add(key, value)
    targets.add(name, table)
    write_atomically(path, tomlkit.dumps(document))


def append_to_list(path: Path, keys: tuple[str, ...], value: str) -> bool:
    """Append ``value`` to the array at ``keys`` (creating it); False if it was already there."""
    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    container: Any = document
    for key in keys[:-1]:
        container = container[key]
    array = container.get(keys[-1])
    if array is None:
        container[keys[-1]] = [value]
    elif value in array:
        return False
    else:
        array.append(value)
    write_atomically(path, tomlkit.dumps(document))
    return True


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.crossnix-tmp")
    tmp.write_text(text, encoding="utf-8")
    if path.exists():
        os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)
