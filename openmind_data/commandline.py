"""What the two commands (``openmind``, ``openmind-ssl``) share: an error the toolkit raises on
purpose (an :class:`~openmind_data.errors.OpenMindError`: its message names the file or the
option and says what to do) reaches the user as one line, ``error: <message>`` on standard
error, with exit status 2. ``-vv`` shows the traceback as well; anything else (a bug) always
shows it."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from openmind_data.errors import OpenMindError

__all__ = ["EXIT_ERROR", "OneLineErrors", "Verbosity"]

#: The exit status of a command stopped by an OpenMindError (as for a usage error).
EXIT_ERROR = 2


class Verbosity:
    """Set by a command's callback from ``-v``/``-vv``."""

    traceback = False


class OneLineErrors(TyperGroup):
    """A command group that turns an :class:`OpenMindError` into one line on stderr."""

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context
        try:
            return super().invoke(ctx)
        except OpenMindError as error:
            if Verbosity.traceback:
                raise
            typer.echo(f"error: {error}", err=True)
            ctx.exit(EXIT_ERROR)
