"""Where a student came from: teacher information recorded in the data file and a data fingerprint."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

__all__ = ["data_fingerprint", "teacher_info", "file_sha256"]

_BLOCK = 1 << 20


def file_sha256(path: Union[str, os.PathLike]) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _local_files(data: Union[str, Sequence[str]], dataset=None) -> list[str]:
    reader = getattr(dataset, "reader", None)
    paths = getattr(reader, "paths", None)
    if paths:
        return [str(p) for p in paths]
    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    return [os.fspath(p) for p in items if "://" not in os.fspath(p) and os.path.isfile(p)]


def data_fingerprint(data: Union[str, Sequence[str]], dataset=None) -> dict[str, Any]:
    """``{"files": [{"path", "sha256", "bytes"}], "num_structures", "natoms_sha256"}``.

    Files are hashed whole (a database URL has no file: only the structure count and the SHA-256 of
    the atom counts identify it then).
    """
    files = []
    for path in _local_files(data, dataset):
        p = Path(path)
        files.append({"path": str(p.resolve()), "sha256": file_sha256(p), "bytes": p.stat().st_size})
    out: dict[str, Any] = {"files": files}
    if dataset is not None:
        natoms = np.ascontiguousarray(np.asarray(dataset.natoms_array(), dtype="<i8"))
        out["num_structures"] = int(len(natoms))
        out["natoms_sha256"] = hashlib.sha256(natoms.tobytes()).hexdigest()
    return out


def teacher_info(dataset) -> Optional[dict]:
    """The ``teacher`` entry the data file records (its metadata, see ``teachers.Teacher.info``), or None.

    Read from the file metadata the data layer exposes (``dataset.metadata['teacher']``, else the
    reader's); an ASE database read by a reader without metadata is asked for
    ``db.metadata['teacher']`` directly.
    """
    reader = getattr(dataset, "reader", None)
    for source in (
        _mapping_get(getattr(dataset, "metadata", None), "teacher"),
        _mapping_get(getattr(reader, "metadata", None), "teacher"),
        getattr(reader, "teacher", None),
    ):
        if isinstance(source, dict) and source:
            return dict(source)
    if getattr(dataset, "format", None) == "ase":
        path = getattr(dataset, "data_path", None)
        if isinstance(path, str) and "://" not in path and os.path.isfile(path):
            import sqlite3

            import ase.db

            try:
                value = ase.db.connect(path, use_lock_file=False).metadata.get("teacher")
            except (OSError, ValueError, sqlite3.Error):  # the reader opened it; ase.db cannot: no info
                return None
            if isinstance(value, dict) and value:
                return dict(value)
    return None


def _mapping_get(mapping: Any, key: str) -> Any:
    if callable(mapping):
        try:
            mapping = mapping()
        except Exception:
            return None
    if isinstance(mapping, dict):
        return mapping.get(key)
    return None
