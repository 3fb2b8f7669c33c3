"""Loading board plugins from the ``crossnix.boards`` entry-point group, tolerantly.

pluggy's own ``load_setuptools_entrypoints`` lets one broken plugin break every command and silently drops
a second distribution using a taken entry-point name; crossnix loads entry points itself so that each
failure becomes a :class:`PluginError` naming the distribution, and every other board keeps working.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pluggy

from crossnix_tasks import hookspecs
from crossnix_tasks.boards import Board
from crossnix_tasks.errors import CrossnixError

ENTRY_POINT_GROUP = "crossnix.boards"
DISABLE_ENV = "CROSSNIX_DISABLE_PLUGINS"


@dataclass(frozen=True)
class PluginError:
    """A plugin that could not be used, and why."""

    plugin: str
    distribution: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} from distribution {self.distribution!r}: {self.error}"


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin: what it is, where it comes from, what it provides."""

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]
    boards: tuple[str, ...]


@dataclass
class Plugins:
    """The plugin manager plus what loading it found: boards by name, plugin origins, load errors."""

    manager: pluggy.PluginManager
    errors: list[PluginError] = field(default_factory=list)
    origins: dict[str, tuple[str, str]] = field(default_factory=dict)  # plugin name -> (dist, version)

    boards: dict[str, Board] = field(default_factory=dict)
    _board_owners: dict[str, str] = field(default_factory=dict)

    def collect_boards(self) -> None:
        """Ask every plugin for its boards. A failing plugin is an error; a board name two plugins claim is
        an error naming both, and neither is used: building the wrong board's image is worse than stopping."""
        claims: dict[str, list[tuple[str, Board]]] = {}
        for plugin_name, plugin in self.manager.list_name_plugin():
            impl = getattr(plugin, "crossnix_boards", None)
            if impl is None or plugin_name is None:
                continue
            try:
                provided = _as_boards(impl())
            except Exception as exc:  # a plugin's bug must not take the other boards down
                self.errors.append(self._error(plugin_name, f"crossnix_boards() failed: {exc}"))
                continue
            for board in provided:
                claims.setdefault(board.name, []).append((plugin_name, board))
        for name, claimants in claims.items():
            if len(claimants) == 1:
                plugin_name, board = claimants[0]
                self.boards[name] = board
                self._board_owners[name] = plugin_name
                continue
            who = " and ".join(f"plugin {p!r} ({self.distribution(p)})" for p, _ in claimants)
            self.errors.append(
                PluginError(
                    ", ".join(p for p, _ in claimants),
                    ", ".join(self.distribution(p) for p, _ in claimants),
                    f"board {name!r} is provided by both {who}; it is disabled until you uninstall one "
                    f"or block one with {DISABLE_ENV}",
                )
            )

    def board_owner(self, board: str) -> str:
        return self._board_owners[board]

    def distribution(self, plugin: str) -> str:
        return self.origins.get(plugin, ("(registered directly)", ""))[0]

    def board(self, name: str) -> Board:
        try:
            return self.boards[name]
        except KeyError:
            raise CrossnixError(
                f"unknown board {name!r}; installed boards: {', '.join(sorted(self.boards)) or 'none'}",
                hint="install the plugin that provides it (`inv plugins` lists load errors)",
            ) from None

    def infos(self) -> list[PluginInfo]:
        boards_by_plugin: dict[str, list[str]] = {}
        for board in self.boards:
            boards_by_plugin.setdefault(self.board_owner(board), []).append(board)
        infos = []
        for name, plugin in self.manager.list_name_plugin():
            if name is None:
                continue
            dist, version = self.origins.get(name, ("(registered directly)", ""))
            hooks = tuple(sorted(caller.name for caller in self.manager.get_hookcallers(plugin) or []))
            infos.append(PluginInfo(name, dist, version, hooks, tuple(sorted(boards_by_plugin.get(name, [])))))
        return sorted(infos, key=lambda info: info.name)

    def target_modules(self, target: object, board: Board) -> list[Path]:
        """Modules every plugin adds to ``target`` (site policies), in registration order.

        Each plugin is called on its own, so one that raises or answers something other than a list of paths
        is a :class:`CrossnixError` naming it (a bare string would otherwise be split into one-letter paths)."""
        arguments = {"target": target, "board": board}
        modules: list[Path] = []
        for impl in self.manager.hook.crossnix_nixos_modules.get_hookimpls():
            name = impl.plugin_name
            where = f"plugin {name!r} ({self.distribution(name)}): crossnix_nixos_modules()"
            try:
                answer = impl.function(*(arguments[arg] for arg in impl.argnames))
            except Exception as exc:  # a plugin's bug: name it instead of a traceback
                raise CrossnixError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
            if answer is None:
                continue
            if not isinstance(answer, list | tuple) or not all(isinstance(m, str | Path) for m in answer):
                raise CrossnixError(f"{where} must return a list of module paths, not {answer!r}")
            modules.extend(Path(m) for m in answer)
        return modules

    def _error(self, plugin: str, message: str) -> PluginError:
        return PluginError(plugin, self.distribution(plugin), message)


def _as_boards(answer: object) -> list[Board]:
    items = answer if isinstance(answer, list | tuple) else [answer]
    for item in items:
        if not isinstance(item, Board):
            raise TypeError(f"expected crossnix_tasks.boards.Board objects, got {type(item).__name__}")
    return list(items)


def new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for name in filter(None, (n.strip() for n in os.environ.get(DISABLE_ENV, "").split(","))):
        manager.set_blocked(name)
    return manager


def load_plugins(
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    extra: Iterable[tuple[str, object]] = (),
) -> Plugins:
    """A fresh manager with every installed board plugin (plus ``extra`` objects, for tests)."""
    plugins = Plugins(new_manager())
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if entry_points is None else entry_points
    for ep in eps:
        _register_entry_point(plugins, ep)
    for name, obj in extra:
        _register(plugins, name, "(registered directly)", "", lambda obj=obj: obj)  # type: ignore[misc]
    plugins.collect_boards()
    return plugins


def _register_entry_point(plugins: Plugins, ep: importlib.metadata.EntryPoint) -> None:
    dist = ep.dist.name if ep.dist else "(unknown distribution)"
    version = ep.dist.version if ep.dist else ""
    if plugins.manager.is_blocked(ep.name):
        return
    _register(plugins, ep.name, dist, version, ep.load)


def _register(plugins: Plugins, name: str, dist: str, version: str, load: Callable[[], object]) -> None:
    manager = plugins.manager
    if manager.has_plugin(name):
        first = plugins.distribution(name)
        plugins.errors.append(
            PluginError(name, dist, f"plugin name {name!r} is already used by distribution {first!r}")
        )
        return
    plugins.origins[name] = (dist, version)
    try:
        obj = load()
        manager.register(obj, name=name)
        manager.check_pending()  # a misspelt hook name is only caught here
    except Exception as exc:  # ImportError, SyntaxError, PluginValidationError, a board's ValueError...
        if manager.has_plugin(name):
            manager.unregister(name=name)
        del plugins.origins[name]
        plugins.errors.append(PluginError(name, dist, f"{type(exc).__name__}: {exc}"))
