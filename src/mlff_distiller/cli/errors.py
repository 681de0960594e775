"""Errors of the ``mlff-distiller`` command: user errors become one line ``Error: ...`` (exit 2),
with every database password replaced by ``***``."""

from __future__ import annotations

import re
import sqlite3

import click

#: exceptions caused by the user's input, reported as one line (anything else is a bug: traceback)
USER_ERRORS = (OSError, ValueError, KeyError, IndexError, sqlite3.Error)
#: ``scheme://user:password@`` in free text (a database URL quoted by some message); the
#: password runs to the last ``@`` of the word, so ``/``, ``@``, ``?`` in it are hidden too
_URL_PASSWORD = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*:)[^\s'\"]*@")
_QUERY_PASSWORD = re.compile(r"(?i)(password=)[^&;\s'\"]*")


def hide_passwords(text: str) -> str:
    """``text`` with the password of every database URL in it replaced by ``***``."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def unexpected_error(exc: BaseException) -> "InputError":
    """The one ``Error:`` line (exit 2) for an exception that is not a known user error: it says
    what happened and how to see the traceback, instead of a traceback with exit code 1 (the
    code ``validate`` uses for "problems found")."""
    return InputError(
        f"unexpected {type(exc).__name__}: {one_line(exc)} (if the input looks right, this is a bug: "
        "please report it; MLFF_DISTILLER_DEBUG=1 shows the traceback)"
    )


class InputError(click.ClickException):
    """A user error: printed as ``Error: <message>`` (one line), exit code 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(hide_passwords(message))


class UsageLineError(click.UsageError):
    """A command-line usage error shown as one line on stderr, exit code 2:
    ``Error: <message> (see 'mlff-distiller <cmd> --help')``."""

    def show(self, file=None) -> None:
        message = hide_passwords(" ".join(self.format_message().split()))
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"Error: {message}{hint}", file=file, err=True)


def usage_line(exc: click.UsageError) -> UsageLineError:
    error = UsageLineError(exc.format_message(), ctx=exc.ctx)
    error.exit_code = exc.exit_code
    return error


def one_line(exc: BaseException) -> str:
    """A one-line message for ``exc`` (file name first for OS errors), passwords hidden."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    else:
        text = str(exc) or type(exc).__name__
    return hide_passwords(" ".join(text.split()))
