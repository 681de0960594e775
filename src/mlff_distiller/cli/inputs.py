"""Opening the inputs of a subcommand (files, URLs, globs) and naming them safely."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

from .errors import InputError, hide_passwords


def require_input(paths: Sequence[str]) -> None:
    """FileNotFoundError for a missing local input (before any slow import); URLs and glob
    patterns pass (a pattern matching nothing is reported when it is expanded)."""
    from ..data.readers.ase_db.connection import is_url
    from ..data.readers.multi import is_glob

    for path in paths:
        if not is_url(path) and not is_glob(path) and not os.path.exists(path):
            raise FileNotFoundError(2, "no such file or directory", path)


def data_path(paths: Sequence[str]):
    """What ``open_many``/``MolecularDataset`` take: one path (file, URL or glob) or a list."""
    return paths[0] if len(paths) == 1 else list(paths)


def open_input(paths: Sequence[str], fmt: Optional[str], options: dict):
    """One reader over ``paths`` (one file or URL; a glob pattern or several files as one dataset)
    with the reader ``options`` (label keys, units, select, properties...). A single file whose
    suffix says nothing is read as an ASE database, as ``MolecularDataset`` does."""
    from ..data.readers import guess_or_ase, open_reader
    from ..data.readers.multi import is_many, open_many

    path = data_path(paths)
    if is_many(path):
        return open_many(path, fmt, **options)
    return open_reader(path, fmt if fmt else guess_or_ase(path), **options)


def conversion_notes(reader) -> list[str]:
    """``note:`` lines for the unit conversions a reader applies (none for x1 conversions); a
    packed input says its values were converted when it was packed."""
    from ..data.units import is_identity

    packed = reader.format_name == "packed" or getattr(reader, "layout_name", None) == "packed"
    when = "when the file was packed" if packed else "on reading"
    return [hide_passwords(f"note: {label} converted {when}: {text}")
            for label, text in reader.units.items() if not is_identity(text)]


def shown_path(paths: Sequence[str]) -> str:
    """The input as given on the command line, database passwords replaced by ``***``."""
    from ..data.readers.ase_db.connection import mask_password

    return " ".join(mask_password(p) for p in paths)


def member_files(reader) -> list[str]:
    """The files a reader reads (several for a glob or list), passwords hidden."""
    return list(getattr(reader, "paths", None) or [reader.display_path])


def refuse_url_output(path: str) -> None:
    """The writers write local files only: a database URL as output is an error (password hidden)."""
    from ..data.readers.ase_db.connection import is_url, mask_password

    if is_url(path):
        raise InputError(f"{mask_password(path)}: writing to a database URL is not supported; write a local file")


def describe_format(reader) -> str:
    """The reader's format, with the HDF5 layout it detected: ``hdf5 (packed)``, ``xyz``..."""
    layout = getattr(reader, "layout_name", None)
    return f"{reader.format_name} ({layout})" if layout else reader.format_name


def format_of(path: Path, fmt: Optional[str]) -> str:
    """The output format: ``fmt`` normalised, or guessed from the suffix of ``path``."""
    from ..data.readers import guess_format, normalize_format

    return normalize_format(fmt) if fmt else guess_format(path)


def scan(reader) -> Iterator:
    """Every structure of ``reader`` in order, read in chunks (``data.readers.base.scan``)."""
    from ..data.readers.base import scan as scan_chunks

    for structures in scan_chunks(reader.read_many, range(len(reader))):
        yield from structures
