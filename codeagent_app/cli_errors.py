"""Command-line errors as one line in the project's words: ``codeagent: error: --port: ...``.

Typer reports a bad command line (a missing argument, an option's bad value,
an unknown option) in a framed, multi-line box, with pydantic's wording for
bad values. :func:`run` runs the application with that display turned off and
prints each such error as one line naming the argument or option, with where
to find help, then exits 2. Everything else (``--help``, a command's own exit
code, shell completion) behaves as before.
"""

from __future__ import annotations

import importlib
import re
import sys
from types import ModuleType
from typing import Any, NoReturn

import typer
from typer.main import get_command


def _exceptions() -> ModuleType:
    """The click exceptions typer raises (typer >= 0.17 vendors click as ``typer._click``)."""
    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # pragma: no cover - a typer on the click package
        return importlib.import_module("click.exceptions")


def _param_name(param: Any) -> str | None:
    if param is None:
        return None
    if getattr(param, "param_type_name", "") == "option":
        opts: list[str] = list(getattr(param, "opts", []) or [])
        return max(opts, key=len) if opts else getattr(param, "name", None)
    metavar = getattr(param, "metavar", None) or str(getattr(param, "name", "") or "").upper()
    return metavar.strip("[]. ") or None


def usage_line(error: Exception) -> str:
    """One line for a usage error: what is wrong, naming the argument or option, and where help is."""
    from pydantic import ValidationError  # typer imports it anyway to check values

    from codeagent.errors import validation_message

    cx = _exceptions()
    ctx = getattr(error, "ctx", None)
    if isinstance(error, cx.NoSuchOption):
        message = f"unknown option {error.option_name}"
        if error.possibilities:
            message += f" (did you mean {', '.join(sorted(error.possibilities))}?)"
    elif isinstance(error, cx.MissingParameter):
        message = f"{_param_name(error.param) or 'an argument'}: missing (it is required)"
    elif isinstance(error, cx.BadParameter):
        cause = error.__cause__
        if isinstance(cause, ValidationError):  # typer checks values with pydantic: say it our way
            detail = validation_message(cause)[1]
        else:
            detail = " ".join(str(error.message or "is not valid").split()).rstrip(".")
        name = _param_name(error.param)
        message = f"{name}: {detail}" if name else detail
    else:
        message = " ".join(error.format_message().split()).rstrip(".")  # type: ignore[attr-defined]
        message = re.sub(r"^No such command (.+)$", r"unknown command \1", message)
    if ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    return message


def run(app: typer.Typer, prog_name: str) -> NoReturn:
    """Run ``app`` as the console script does; usage errors become one line and exit 2."""
    cx = _exceptions()
    no_args_help = getattr(cx, "NoArgsIsHelpError", ())
    command = get_command(app)
    try:
        result = command.main(prog_name=prog_name, standalone_mode=False)
    except no_args_help as exc:  # no arguments at all: the help, as before
        exc.show()
        sys.exit(exc.exit_code)
    except cx.UsageError as exc:
        typer.echo(f"{prog_name}: error: {usage_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except cx.ClickException as exc:
        typer.echo(f"{prog_name}: error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo(f"{prog_name}: aborted", err=True)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
