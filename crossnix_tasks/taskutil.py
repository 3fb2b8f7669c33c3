"""The one decorator every crossnix task uses: expected failures become messages and exit codes."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task, task
from rich.markup import escape

from crossnix_tasks import ui
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.project import Project


def crossnix_task(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Task[Any]]:
    """Like ``invoke.task``; the body receives a :class:`Project` after the context, may be ``async``,
    and raises :class:`CrossnixError` for anything the user can fix."""

    def decorate(body: Callable[..., Any]) -> Task[Any]:
        @functools.wraps(body)
        def run(c: Context, *a: Any, **kw: Any) -> Any:
            if any(value in ("-h", "--help") for value in (*a, *kw.values())):
                # invoke hands `inv add-target --help` to the positional NAME; show the help it meant.
                return _print_help(body.__name__.replace("_", "-"))
            try:
                result = body(c, Project(), *a, **kw)
                if inspect.iscoroutine(result):
                    result = asyncio.run(result)
                return result
            except CrossnixError as exc:
                _report(exc.render())
                raise Exit(code=exc.exit_code) from None
            except OSError as exc:
                # A directory that cannot be created, a full disk, a file without permission: the user's to fix,
                # and the OS's message (with the file name) says what it is.
                _report(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
                raise Exit(code=1) from None
            except KeyboardInterrupt:
                ui.err.print("interrupted")
                raise Exit(code=130) from None

        # invoke reads the signature to build flags; hide the Project parameter from it.
        signature = inspect.signature(body)
        params = list(signature.parameters.values())
        run.__signature__ = signature.replace(parameters=[params[0], *params[2:]])  # type: ignore[attr-defined]
        made: Task[Any] = task(*args, **kwargs)(run)
        return made

    return decorate


def _report(message: str) -> None:
    ui.err.print(f"[red]error:[/red] {escape(message)}", markup=True, soft_wrap=True)


def _print_help(task_name: str) -> None:
    from crossnix_tasks.cli import program

    program.run([program.binary or "crossnix", "--help", task_name], exit=False)
