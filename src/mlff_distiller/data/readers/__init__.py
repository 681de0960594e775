"""Readers, one module per storage format, and ``open_reader`` which picks one by name."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from ..errors import DataFormatError, format_error
from .ase_db.connection import DB_SCHEMES, is_url, mask_password, url_dialect
from .base import Reader

#: format name -> "module:Class" (imported lazily so a missing optional dependency only
#: matters for the format that needs it)
READERS: dict[str, str] = {
    "ase": "mlff_distiller.data.readers.ase_db:AseDbReader",
    "xyz": "mlff_distiller.data.readers.xyz:XyzReader",
    "hdf5": "mlff_distiller.data.readers.hdf5:Hdf5Reader",
    "packed": "mlff_distiller.data.readers.packed:PackedReader",
}

FORMAT_ALIASES = {
    "db": "ase",
    "ase-db": "ase",
    "sqlite": "ase",
    "extxyz": "xyz",
    "h5": "hdf5",
}

SUFFIX_FORMATS = {
    ".db": "ase",
    ".xyz": "xyz",
    ".extxyz": "xyz",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
}


def supported_formats() -> list[str]:
    return sorted(READERS)


def normalize_format(fmt: str) -> str:
    """Canonical format name, or ValueError listing the supported ones."""
    name = str(fmt).lower()
    name = FORMAT_ALIASES.get(name, name)
    if name not in READERS:
        raise ValueError(f"unknown format {fmt!r}; supported formats: {', '.join(supported_formats())}")
    return name


def guess_format(path: str | os.PathLike) -> str:
    """Format from a path's suffix (or a database URL), or ValueError."""
    text = str(path)
    if is_url(text):  # any case, with or without +driver (postgresql+psycopg2://)
        if url_dialect(text) in DB_SCHEMES:
            return "ase"
        raise ValueError(
            f"{mask_password(text)}: not a database URL this package reads (schemes: "
            f"{', '.join(sorted(DB_SCHEMES))}); for a local file give its path"
        )
    p = Path(text)
    if p.is_dir():
        return "hdf5"  # a directory of HDF5 shards (e.g. MACE's preprocessed split)
    suffix = p.suffix.lower()
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    raise ValueError(
        f"{text}: cannot tell the format from the suffix {suffix!r}; pass format= one of "
        f"{', '.join(supported_formats())}"
    )


def guess_or_ase(path: str | os.PathLike) -> str:
    """``guess_format``, falling back to the ASE database for a suffix that says nothing (an
    ASE db may be named anything; its reader checks the file is one)."""
    try:
        return guess_format(path)
    except ValueError:
        if is_url(str(path)):
            raise
        return "ase"


def check_format_matches(path: str, fmt: str) -> str:
    """``fmt``, or ValueError when ``path``'s suffix clearly belongs to another format."""
    try:
        guessed = guess_format(path)
    except ValueError:
        return fmt  # unknown suffix: trust the caller
    compatible = {fmt} | ({"hdf5", "packed"} if fmt in ("hdf5", "packed") else set())
    if guessed not in compatible:
        raise ValueError(
            f"{path}: format={fmt!r} does not match a {Path(path).suffix!r} file "
            f"(looks like format={guessed!r}); supported formats: {', '.join(supported_formats())}"
        )
    return fmt


def reader_class(fmt: str) -> type[Reader]:
    module_name, cls_name = READERS[normalize_format(fmt)].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def open_reader(path: str | os.PathLike, format: str | None = None, **options) -> Reader:
    """Open ``path`` with the reader of ``format`` (guessed from the suffix when None).

    options: ``energy_key``, ``forces_key``, ``stress_key`` and format-specific options.
    Raises FileNotFoundError for a missing file and ValueError for an unknown format.
    """
    fmt = normalize_format(format) if format is not None else guess_format(path)
    cls = reader_class(fmt)
    check_reader_options(cls, fmt, options)
    return cls(path, **options)


def reader_options(cls: type[Reader]) -> list[str]:
    """The keyword options a reader class takes (besides the path)."""
    import inspect

    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self", "path")]


def check_reader_options(cls: type[Reader], fmt: str, options: dict) -> None:
    """TypeError naming a misspelt or unknown reader option and listing those ``fmt`` takes (an
    HDF5 reader checks its layout's own options itself)."""
    import inspect

    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params) and fmt == "hdf5":
        return
    accepted = reader_options(cls)
    if any(p.kind == p.VAR_KEYWORD for p in params):
        accepted += ["energy_key", "forces_key", "stress_key"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        import difflib

        hints = [f"{u!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, accepted, 1)) else repr(u)
                 for u in unknown]
        raise TypeError(f"format {fmt!r} does not take option(s) {', '.join(hints)}; "
                        f"its options: {', '.join(sorted(set(accepted)))}")


__all__ = [
    "DataFormatError",
    "Reader",
    "format_error",
    "open_reader",
    "normalize_format",
    "guess_format",
    "check_format_matches",
    "guess_or_ase",
    "reader_options",
    "check_reader_options",
    "supported_formats",
    "READERS",
]
