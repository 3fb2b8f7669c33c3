"""``.crossnix/deployed.json``: the systems crossnix deployed, per target (for the unknown-profile guard)."""

from __future__ import annotations

import json
import os
from pathlib import Path

KEEP = 50


class History:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._data: dict[str, list[str]] = {}
        if path is not None:
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (FileNotFoundError, ValueError):
                loaded = {}
            if isinstance(loaded, dict):
                self._data = {str(k): [str(p) for p in v] for k, v in loaded.items() if isinstance(v, list)}

    def knows(self, target: str, toplevel: str) -> bool:
        return toplevel in self._data.get(target, [])

    def record(self, target: str, toplevel: str) -> None:
        entries = [p for p in self._data.get(target, []) if p != toplevel]
        entries.append(toplevel)
        self._data[target] = entries[-KEEP:]
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
