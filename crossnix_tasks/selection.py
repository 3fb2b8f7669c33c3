"""``--on`` selectors: a target NAME, a shell GLOB over names, or ``@TAG``; comma-separated or repeated."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable

from crossnix_tasks.errors import SelectionError
from crossnix_tasks.inventory import Inventory, Target


def split_selectors(selectors: Iterable[str]) -> list[str]:
    return [part.strip() for selector in selectors for part in selector.split(",") if part.strip()]


def select(inventory: Inventory, selectors: Iterable[str], *, select_all: bool = False) -> list[Target]:
    """Targets matched by any selector, in inventory order. No selector (or ``select_all``) means all."""
    wanted = split_selectors(selectors)
    if select_all or not wanted:
        return list(inventory.targets.values())
    chosen: set[str] = set()
    for selector in wanted:
        matched = _match(inventory, selector)
        if not matched:
            raise SelectionError(_nothing_matched(inventory, selector))
        chosen.update(matched)
    return [target for name, target in inventory.targets.items() if name in chosen]


def _match(inventory: Inventory, selector: str) -> list[str]:
    if selector.startswith("@"):
        tag = selector[1:]
        return [name for name, target in inventory.targets.items() if tag in target.tags]
    if any(ch in selector for ch in "*?["):
        return fnmatch.filter(inventory.targets, selector)
    return [selector] if selector in inventory.targets else []


def _nothing_matched(inventory: Inventory, selector: str) -> str:
    if selector.startswith("@"):
        known = sorted(inventory.tags())
        close = difflib.get_close_matches(selector[1:], known, n=1)
        hint = f"; did you mean @{close[0]}?" if close else ""
        return f"no target has tag {selector!r}{hint} (tags: {', '.join('@' + t for t in known) or 'none'})"
    close = difflib.get_close_matches(selector, list(inventory.targets), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (
        f"no target matches {selector!r}{hint} "
        f"(targets in {inventory.path.name}: {', '.join(inventory.targets) or 'none'})"
    )
