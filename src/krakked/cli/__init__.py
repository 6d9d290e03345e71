"""The ``krakked`` command: thin wrappers over the library, one clear line per error.

One module per command group (``connection``, ``market``, ``account``, ``sim``) registers its
commands on the apps in ``common``. Every command that reports takes ``--json``. Errors print
one line on stderr and exit with the error class's code (see ``krakked.errors``); ``-v`` adds the
traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from krakked.cli import (  # noqa: F401 - registers
    account,
    common,
    connection,
    csv_import,
    gaps,
    history,
    market,
    serve,
    sim,
    stream,
    trades,
)
from krakked.errors import KrakkedError, UsageError
from krakked.logs import redact

__all__ = ["app", "main"]

app = common.app


def _one_line(text: str) -> str:
    return " ".join(redact(text).split())


def _fail(message: str, code: int, exc: BaseException | None = None) -> NoReturn:
    from rich.markup import escape

    # escaped: "[limits]" or "[kraken_futures]" in a message is text, not a rich style
    common.err.print(f"[red]error:[/] {escape(_one_line(message))}", highlight=False)
    if exc is not None and common.State.verbose:
        import traceback

        common.err.print(redact("".join(traceback.format_exception(exc))), highlight=False)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Every error ends as one line on stderr and a distinct exit code: a
    ``KrakkedError`` its class's code, bad usage (unknown flag, bad value) 2, an interrupt 130;
    ``-v`` adds the traceback."""
    try:
        code = app(args=argv, prog_name="krakked", standalone_mode=False)
    except typer.Abort:
        _fail("aborted", 1)
    except typer.TyperException as exc:  # click's own errors (typer ships click inside)
        if type(exc).__name__ == "NoArgsIsHelpError":
            ctx = getattr(exc, "ctx", None)
            typer.echo(ctx.get_help() if ctx else exc.format_message())
            sys.exit(0)
        code = int(getattr(exc, "exit_code", 1))
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if code == UsageError.exit_code and ctx \
            else ""
        _fail(exc.format_message() + hint, code)
    except KrakkedError as exc:
        _fail(str(exc), exc.exit_code, exc)
    except KeyboardInterrupt:
        common.err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug of ours: still one line (-v shows where)
        _fail(f"unexpected {type(exc).__name__}: {exc} (run with -v for the traceback; "
              "please report it)", 1, exc)
    sys.exit(code if isinstance(code, int) else 0)
