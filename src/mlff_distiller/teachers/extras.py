"""Optional teacher packages: import them lazily, or fail with one line naming the extra to install."""

from __future__ import annotations

import importlib


class MissingExtraError(ImportError):
    """An optional package a teacher needs is not installed; the message names the pip extra."""


def require(module: str, extra: str | None, who: str, pip: str | None = None):
    """``importlib.import_module(module)``, or MissingExtraError (one line) saying ``who`` needs it:
    ``teacher 'chgnet' needs the optional package 'chgnet' (...); install it with: pip install 'mlff_distiller[chgnet]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise MissingExtraError(
            f"{who} needs the optional package {module.split('.')[0]!r} ({reason}); "
            f"install it with: pip install {pip or repr(f'mlff_distiller[{extra}]')}"
        ) from exc
