"""Edits to boards.toml through tomlkit: every comment, blank line and the order of what was there is kept.

Each edit is a pure function from the file's text to the edited text; :func:`replace_validated` checks the
result before it replaces the file, so an edit producing an invalid inventory never reaches the disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Table

from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.inventory import parse_toml


def _parse(path: Path, source: str) -> tomlkit.TOMLDocument:
    parse_toml(path, source)  # invalid TOML: a ConfigError naming the line, not tomlkit's traceback
    return tomlkit.parse(source)


def with_target(path: Path, source: str, name: str, values: Mapping[str, Any], *, comment: str | None = None) -> str:
    """``source`` (the text of ``path``) with ``[targets.NAME]`` holding ``values`` appended."""
    document = _parse(path, source)
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
    return tomlkit.dumps(document)


def with_list_item(path: Path, source: str, keys: tuple[str, ...], value: str) -> str | None:
    """``source`` (the text of ``path``) with ``value`` appended to the array at ``keys`` (created if missing);
    None if it is there."""
    document = _parse(path, source)
    container: Any = document
    for key in keys[:-1]:
        container = container[key]
    array = container.get(keys[-1])
    if array is None:
        container[keys[-1]] = [value]
    elif value in array:
        return None
    else:
        array.append(value)
    return tomlkit.dumps(document)


def replace_validated(path: Path, text: str, validate: Callable[[str], object]) -> None:
    """Replace ``path`` with ``text`` once ``validate(text)`` returned (it raises for an invalid inventory)."""
    validate(text)
    write_atomically(path, text)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.crossnix-tmp")
    tmp.write_text(text, encoding="utf-8")
    if path.exists():
        os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)
