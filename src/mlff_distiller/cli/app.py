"""The ``mlff-distiller`` command group and its entry point; each subcommand lives in its own module.

Every subcommand has ``--help``. Exit codes: 0 success; 1 ``validate`` found problems;
2 bad input or usage (a missing file, an unknown format, an unreadable structure, a bad
option...), reported as one line ``Error: <message>`` on stderr without a traceback; an
unexpected exception is one ``Error: unexpected <Type>: ...`` line with exit code 2 too
(``MLFF_DISTILLER_DEBUG=1`` shows its traceback). Inputs may be
one file, a database URL (shown everywhere with its password replaced by ``***``), several files
or a quoted glob pattern such as ``'shards/*.xyz'`` (one dataset, files in sorted order).
"""

from __future__ import annotations

import os
import warnings
from typing import Optional, Sequence

import click

from .. import __version__
from .errors import USER_ERRORS, InputError, UsageLineError, one_line, unexpected_error, usage_line


class CommandGroup(click.Group):
    """Turns user errors raised by any subcommand into a one-line ``Error:`` (no traceback;
    set ``MLFF_DISTILLER_DEBUG=1`` to see it), and click's usage errors (missing argument,
    value out of range...) into one line too, instead of click's usage block."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # `mlff-distiller` alone prints the help
        except click.UsageError as exc:
            raise usage_line(exc) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (UsageLineError, click.exceptions.NoArgsIsHelpError):
            raise
        except click.UsageError as exc:
            raise usage_line(exc) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # already one line (InputError), or click's own control flow (--help, Ctrl-C)
        except USER_ERRORS as exc:
            if os.environ.get("MLFF_DISTILLER_DEBUG"):
                raise  # developers: the full traceback
            raise InputError(one_line(exc)) from None
        except Exception as exc:  # noqa: BLE001 - never a traceback with validate's exit code 1
            if os.environ.get("MLFF_DISTILLER_DEBUG"):
                raise
            raise unexpected_error(exc) from None


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mlff-distiller")
def cli() -> None:
    """Distill a slow force field (SevenNet-0, MACE, GFN2-xTB, any ASE calculator) into a small,
    fast student: sample, label, train, evaluate — and inspect, check and convert the data
    (ASE database, extended XYZ, HDF5, packed).

    Start with `mlff-distiller demo`. Exit codes: 0 success, 1 `validate` found problems,
    2 bad input (one line `Error: ...` on stderr).
    """



def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console-script entry point."""
    warnings.formatwarning = _format_warning  # one line per warning, no source excerpt
    cli.main(args=list(argv) if argv is not None else None, prog_name="mlff-distiller")

