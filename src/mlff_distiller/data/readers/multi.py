"""Many files as one dataset: ``MultiReader`` chains readers under global indices.

>>> # doctest: +SKIP
>>> reader = open_many("shards/*.xyz")                       # a glob (sorted matches)
>>> reader = open_many(["a.db", "b.xyz", "c.h5"])            # a list, mixed formats
>>> reader.locate(1234)                                      # -> (file number, index in that file)

Global index ``i`` is structure ``i - offsets[k]`` of file ``k`` (files in the order given; a
glob's matches sorted), so the dataset is exactly the concatenation of the single-file datasets.
Atom counts are the files' ``natoms_array`` concatenated (no structure is read to count them).
A bad structure raises the member reader's error, which names the member file and the index in
that file; errors from code that does not name the file are re-raised with the file prepended.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np

from ..structure import Structure
from ..indices import check_indices
from .base import Reader
from .ase_db.connection import is_url, mask_password, secret_parts

PathLike = Union[str, os.PathLike]
PathsLike = Union[PathLike, Sequence[PathLike]]

_GLOB_CHARS = frozenset("*?[")


def is_glob(path: PathLike) -> bool:
    """True for a pattern such as ``data/*.xyz`` (not a database URL, not an existing file)."""
    text = os.fspath(path)
    return not is_url(text) and any(c in _GLOB_CHARS for c in text) and not os.path.exists(text)


def is_many(data_path) -> bool:
    """True when ``data_path`` names several files: a list/tuple of paths or a glob pattern."""
    if isinstance(data_path, (list, tuple)):
        return True
    return isinstance(data_path, (str, os.PathLike)) and is_glob(data_path)


def _display(reader: Reader) -> str:
    """How a member is named in messages (database passwords hidden)."""
    return str(getattr(reader, "display_path", reader.path))


def expand_paths(paths: PathsLike) -> list[str]:
    """The files named by ``paths``: one path, a glob pattern, or a list of paths and patterns.

    A pattern (``*``, ``?``, ``[...]``; ``**`` recurses) expands to its matches, sorted; list
    entries keep their order. Database URLs are passed through untouched. Raises
    FileNotFoundError for a pattern matching nothing or a listed file that does not exist,
    ValueError for an empty list or a file named twice (it would be seen twice per epoch).
    """
    entries = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not entries:
        raise ValueError("no data files given (empty list of paths)")
    out: list[str] = []
    for entry in entries:
        text = os.fspath(entry)
        if is_glob(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise FileNotFoundError(f"{text}: no file matches this pattern")
            out.extend(matches)
        elif is_url(text):
            out.append(text)
        elif os.path.exists(text):
            out.append(text)
        else:
            raise FileNotFoundError(f"{text}: no such file")
    seen: dict = {}
    for text in out:
        # one file under two names (a symlink, a hard link, ./a vs a): the same device and inode
        key = text if is_url(text) else (lambda st: (st.st_dev, st.st_ino))(os.stat(text))
        if key in seen:
            raise ValueError(
                f"{mask_password(text)}: named twice among the data files (also as {mask_password(seen[key])!r}); "
                "its structures would be seen twice per epoch"
            )
        seen[key] = text
    return out


def _opening_error(path: str, exc: Exception) -> Exception:
    """``exc`` with ``path`` prepended when its message does not name the file already."""
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if path in message:
        return exc
    try:
        return type(exc)(f"{path}: {message}")
    except Exception:  # an exception type that cannot be built from one message
        return ValueError(f"{path}: {type(exc).__name__}: {message}")


class MultiReader(Reader):
    """The structures of several readers, one after the other, under global indices.

    readers: the member readers, in order. ``offsets`` [F + 1] int64: global index of each
    member's first structure (and the total at the end). ``keys`` are the first member's
    (every member was opened with the same label keys by ``open_many``). ``units`` merges the
    members' conversions: a label converted the same way in every file keeps that description,
    otherwise the description lists the files it applies to.
    """

    format_name = "multi"

    def __init__(self, readers: Sequence[Reader]) -> None:
        readers = list(readers)
        if not readers:
            raise ValueError("MultiReader needs at least one reader")
        first = readers[0]
        super().__init__(
            " + ".join(_display(r) for r in readers),
            energy_key=first.keys.energy,
            forces_key=first.keys.forces,
            stress_key=first.keys.stress,
        )
        self.readers = readers
        #: member paths (passwords hidden), in order
        self.paths = [_display(r) for r in readers]
        #: the members, for messages: ``a.xyz + b.db`` (shortened beyond three files)
        self.display_path = (
            " + ".join(self.paths) if len(self.paths) <= 3
            else f"{self.paths[0]} + ... + {self.paths[-1]} ({len(self.paths)} files)"
        )
        lengths = np.array([len(r) for r in readers], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.units = self._merge_units()
        self.key_registry = first.key_registry
        for r in readers[1:]:
            self.key_registry = self.key_registry.extend(r.key_registry)
        metadata = [r.metadata for r in readers]
        #: the members' metadata when they all agree, else {member path: metadata} of those with some
        self.metadata = dict(metadata[0]) if all(m == metadata[0] for m in metadata) else {
            p: m for p, m in zip(self.paths, metadata) if m
        }
        self._natoms: Optional[np.ndarray] = None

    def _merge_units(self) -> dict[str, str]:
        labels = sorted(set().union(*(r.units for r in self.readers)))
        merged: dict[str, str] = {}
        for label in labels:
            described = [(p, r.units[label]) for p, r in zip(self.paths, self.readers) if label in r.units]
            texts = {d for _, d in described}
            if len(described) == len(self.readers) and len(texts) == 1:
                merged[label] = texts.pop()
            else:
                merged[label] = "; ".join(f"{p}: {d}" for p, d in described)
        return merged

    # -- index mapping ----------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(member number, index in that member) of global ``index`` (negative wraps)."""
        i = self._check_index(index)
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return k, i - int(self.offsets[k])

    def locate_many(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """[B] member numbers and [B] local indices of global ``indices`` (vectorised)."""
        idx = check_indices(indices, len(self), self.display_path)
        member = np.searchsorted(self.offsets, idx, side="right") - 1
        return member, idx - self.offsets[member]

    # -- the Reader interface ------------------------------------------------------------------
    def natoms_array(self) -> np.ndarray:
        if self._natoms is None:
            parts = [np.asarray(r.natoms_array(), dtype=np.int64).reshape(-1) for r in self.readers]
            for p, part, r in zip(self.paths, parts, self.readers):
                if len(part) != len(r):
                    raise ValueError(f"{p}: natoms_array has {len(part)} entries for {len(r)} structures")
            self._natoms = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return self._natoms

    def read(self, index: int) -> Structure:
        k, local = self.locate(index)
        try:
            return self.readers[k].read(local)
        except Exception as exc:
            self._reraise_named(exc, k)

    def read_many(self, indices: Sequence[int]) -> list[Structure]:
        """Structures in the order given; each member reads its own indices in one call."""
        member, local = self.locate_many(indices)
        out: list[Optional[Structure]] = [None] * len(member)
        for k in np.unique(member):
            where = np.flatnonzero(member == k)
            try:
                structures = self.readers[int(k)].read_many(local[where].tolist())
            except Exception as exc:
                self._reraise_named(exc, int(k))
            for pos, s in zip(where.tolist(), structures):
                out[pos] = s
        return out  # type: ignore[return-value]

    def label_keys(self, index: int) -> list[str]:
        k, local = self.locate(index)
        return self.readers[k].label_keys(local)

    def _reraise_named(self, exc: Exception, k: int):
        """Raise ``exc`` as is when it names member ``k``, else a copy that names it."""
        named = _opening_error(self.paths[k], exc)
        if named is exc:
            raise exc
        raise named from exc

    # -- handles ---------------------------------------------------------------------------
    def _open(self):
        return None  # members open their own files lazily

    def close(self) -> None:
        for r in self.readers:
            r.close()

    def __repr__(self) -> str:
        return f"MultiReader({self.display_path!r}, n={len(self)})"


def open_many(paths: PathsLike, format: Optional[str] = None, **options) -> Reader:
    """One reader over the files named by ``paths`` (see ``expand_paths``).

    format: one format for every file, or None/'auto' to choose each file's format from its
    suffix (mixed formats allowed). options (``energy_key``, ``forces_key``, ``stress_key``,
    format-specific ones) go to every member. A single file gives its own reader; several give a
    ``MultiReader``. An error opening a member names that member.
    """
    from . import check_format_matches, guess_format, normalize_format, open_reader

    files = expand_paths(paths)
    fixed = None if format in (None, "auto") else normalize_format(format)
    readers: list[Reader] = []
    for path in files:
        try:
            fmt = guess_format(path) if fixed is None else check_format_matches(path, fixed)
            readers.append(open_reader(path, fmt, **options))
        except Exception as exc:
            if not is_url(path):
                named = _opening_error(path, exc)
                if named is exc:
                    raise
                raise named from exc
            message = str(exc)
            for secret in secret_parts(path):  # never show or chain a message quoting the password
                message = message.replace(secret, "***")
            shown = mask_password(path)
            if shown in message and message == str(exc):
                raise  # the database reader's own error: names the URL, password hidden
            raise ConnectionError(f"{shown}: {type(exc).__name__}: {message}") from None
    return readers[0] if len(readers) == 1 else MultiReader(readers)


__all__ = ["MultiReader", "expand_paths", "open_many", "is_glob", "is_many"]
