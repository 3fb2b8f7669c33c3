"""`inv` in this repository runs crossnix's tasks against ./boards.toml (`inv --list`)."""

from crossnix_tasks import ns

__all__ = ["ns"]
