"""Scan every structure of a file and report what is wrong with it, with indices.

Checks, per structure: the reader can read it (a ``DataFormatError`` names the index and key and
is reported, not raised); positions, cell and labels are finite; array shapes agree with the atom
count; atomic numbers are valid (1..118); no two atoms are closer than ``overlap_threshold`` Å
(periodic images included, via vesin); no structure repeats an earlier one (atomic numbers,
positions, cell and pbc equal after rounding to ``decimals``). Across the file: a label that some
structures carry and others lack (stress is only expected on fully periodic structures).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from .data.readers.base import Reader
from .data.structure import Structure

#: the kinds of problem ``validate_reader`` reports
KINDS = (
    "unreadable",
    "non-finite",
    "shape-mismatch",
    "invalid-species",
    "invalid-cell",
    "overlapping-atoms",
    "duplicate",
    "missing-label",
)
#: structures read per ``read_many`` call (a failing chunk is re-read one by one)
CHUNK = 128
#: errors a reader raises for bad content (anything else is a bug and propagates)
READ_ERRORS = (ValueError, KeyError, IndexError, TypeError, OSError)

_KEY_IN_MESSAGE = re.compile(r"key '([^']*)'")
#: the ``<file>, structure <i>, key '<k>': `` prefix of ``format_error`` (index and key have fields)
_LOCATION_PREFIX = re.compile(r"^.*?, structure \d+(?:, key '[^']*')?: ")


@dataclass(frozen=True)
class Problem:
    """One finding: structure ``index`` (None for the whole file), the ``key`` involved, a ``kind``
    from ``KINDS`` and a human-readable ``message``."""

    index: Optional[int]
    key: Optional[str]
    kind: str
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


def _read_error(index: int, exc: Exception) -> Problem:
    """A reader's exception as a Problem; the kind is inferred from the project's messages."""
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    match = _KEY_IN_MESSAGE.search(message)
    lowered = message.lower()
    if "nan" in lowered or "inf" in lowered.split() or "non-finite" in lowered:
        kind = "non-finite"
    elif "shape" in lowered:
        kind = "shape-mismatch"
    else:
        kind = "unreadable"
    return Problem(index, match.group(1) if match else None, kind, _LOCATION_PREFIX.sub("", message, count=1))


def _iter_read(reader: Reader, indices: range) -> Iterator[tuple[int, Optional[Structure], Optional[Exception]]]:
    """(index, structure or None, error or None) for every index, reading in chunks."""
    for start in range(indices.start, indices.stop, CHUNK):
        chunk = list(range(start, min(start + CHUNK, indices.stop)))
        try:
            structures = reader.read_many(chunk)
        except READ_ERRORS:
            for i in chunk:
                try:
                    yield i, reader.read(i), None
                except READ_ERRORS as exc:
                    yield i, None, exc
            continue
        for i, s in zip(chunk, structures):
            yield i, s, None


def check_arrays(index: int, s: Structure, expected_natoms: Optional[int] = None) -> list[Problem]:
    """Shapes, finiteness and atomic numbers of one structure."""
    problems: list[Problem] = []
    n = int(np.asarray(s.numbers).shape[0]) if np.ndim(s.numbers) == 1 else -1
    shapes = {
        "numbers": (np.shape(s.numbers), (n,)),
        "positions": (np.shape(s.positions), (n, 3)),
        "cell": (np.shape(s.cell), (3, 3)),
        "pbc": (np.shape(s.pbc), (3,)),
    }
    if s.forces is not None:
        shapes["forces"] = (np.shape(s.forces), (n, 3))
    if s.stress is not None:
        shapes["stress"] = (np.shape(s.stress), (3, 3))
    if s.energy is not None:
        shapes["energy"] = (np.shape(s.energy), ())
    for key, (got, want) in shapes.items():
        if n < 0 or got != want:
            problems.append(Problem(index, key, "shape-mismatch", f"{key} has shape {got}, expected {want}"))
    if expected_natoms is not None and n >= 0 and n != expected_natoms:
        problems.append(
            Problem(index, "numbers", "shape-mismatch", f"{n} atoms, but the file's index says {expected_natoms}")
        )
    for key in ("positions", "cell", "energy", "forces", "stress"):
        value = getattr(s, key)
        if value is None:
            continue
        arr = np.asarray(value)
        if arr.dtype.kind not in "fiu":
            problems.append(Problem(index, key, "unreadable", f"{key} is not numeric (dtype {arr.dtype})"))
        elif arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            problems.append(Problem(index, key, "non-finite", f"{key} has {bad} NaN/inf value(s)"))
    numbers = np.asarray(s.numbers)
    if n >= 0 and numbers.size and (numbers.min() < 1 or numbers.max() > 118):
        bad = sorted({int(z) for z in numbers[(numbers < 1) | (numbers > 118)]})
        problems.append(Problem(index, "numbers", "invalid-species", f"atomic numbers {bad} are not elements"))
    return problems


class OverlapChecker:
    """Closest pair of atoms below ``threshold`` Å, periodic images included (vesin)."""

    def __init__(self, threshold: float) -> None:
        from vesin import NeighborList

        if threshold <= 0:
            raise ValueError(f"overlap threshold must be > 0 Å, got {threshold}")
        self.threshold = float(threshold)
        self._nl = NeighborList(cutoff=self.threshold, full_list=False)

    def __call__(self, index: int, s: Structure) -> list[Problem]:
        positions = np.ascontiguousarray(s.positions, dtype=np.float64)
        cell = np.ascontiguousarray(s.cell, dtype=np.float64)
        pbc = np.asarray(s.pbc, dtype=bool)
        if positions.shape[0] < 1:
            return []
        if pbc.any() and abs(np.linalg.det(cell)) < 1e-12:
            return [Problem(index, "cell", "invalid-cell", f"pbc={pbc.tolist()} but the cell has zero volume")]
        i, j, d = self._nl.compute(points=positions, box=cell, periodic=pbc.tolist(), quantities="ijd")
        if d.size == 0:
            return []
        k = int(np.argmin(d))
        return [
            Problem(
                index,
                "positions",
                "overlapping-atoms",
                f"{d.size} pair(s) closer than {self.threshold:g} Å; closest: atoms {int(i[k])} and "
                f"{int(j[k])} at {float(d[k]):.4g} Å",
            )
        ]


def fingerprint(s: Structure, decimals: int = 6) -> bytes:
    """Digest of atomic numbers, positions, cell and pbc rounded to ``decimals`` (Å)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(s.numbers, dtype=np.int64).tobytes())
    for arr in (s.positions, s.cell):
        rounded = np.round(np.asarray(arr, dtype=np.float64), decimals) + 0.0  # -0.0 -> 0.0
        h.update(np.ascontiguousarray(rounded).tobytes())
    h.update(np.asarray(s.pbc, dtype=bool).tobytes())
    return h.digest()


def _label_consistency(has: dict[str, np.ndarray], periodic: np.ndarray, readable: np.ndarray) -> list[Problem]:
    """A label carried by some readable structures and missing on others (stress: periodic only)."""
    problems: list[Problem] = []
    for label, present in has.items():
        scope = readable & periodic if label == "stress" else readable
        carriers = int((present & scope).sum())
        missing = np.flatnonzero(scope & ~present)
        if carriers == 0 or missing.size == 0:
            continue
        where = "periodic structures" if label == "stress" else "structures"
        for i in missing:
            problems.append(
                Problem(
                    int(i),
                    label,
                    "missing-label",
                    f"no {label} label, while {carriers} other {where} have one",
                )
            )
    return problems


def validate_reader(
    reader: Reader,
    overlap_threshold: float = 0.5,
    *,
    decimals: int = 6,
    progress: Optional[Callable[[Iterable], Iterable]] = None,
) -> list[Problem]:
    """Every problem found in ``reader``'s structures, sorted by index (file-wide ones first).

    overlap_threshold: Å, pairs closer than this are reported (0 disables the check).
    decimals: rounding of positions/cell (Å) when looking for duplicate structures.
    progress: optional wrapper around the per-structure iterator (e.g. ``tqdm``).
    """
    if not (np.isfinite(overlap_threshold) and overlap_threshold >= 0):
        raise ValueError(f"overlap_threshold must be a finite number >= 0 Å, got {overlap_threshold}")
    if int(decimals) != decimals or decimals < 0:
        raise ValueError(f"decimals must be an integer >= 0, got {decimals}")
    n = len(reader)
    try:
        natoms = np.asarray(reader.natoms_array(), dtype=np.int64)
    except READ_ERRORS:
        natoms = None
    overlap = OverlapChecker(overlap_threshold) if overlap_threshold > 0 else None
    problems: list[Problem] = []
    has = {label: np.zeros(n, dtype=bool) for label in ("energy", "forces", "stress")}
    periodic = np.zeros(n, dtype=bool)
    readable = np.zeros(n, dtype=bool)
    seen: dict[bytes, int] = {}
    items: Iterable = _iter_read(reader, range(n))
    if progress is not None:
        items = progress(items)
    for i, s, exc in items:
        if exc is not None:
            problems.append(_read_error(i, exc))
            continue
        found = check_arrays(i, s, None if natoms is None else int(natoms[i]))
        problems.extend(found)
        if any(p.key in ("numbers", "positions", "cell", "pbc") for p in found):
            continue  # geometry checks need sane geometry
        readable[i] = True
        periodic[i] = bool(np.all(s.pbc))
        for label in has:
            has[label][i] = getattr(s, label) is not None
        if overlap is not None:
            problems.extend(overlap(i, s))
        key = fingerprint(s, decimals)
        first = seen.setdefault(key, i)
        if first != i:
            problems.append(
                Problem(i, "positions", "duplicate", f"same atoms, positions, cell and pbc as structure {first}")
            )
    problems.extend(_label_consistency(has, periodic, readable))
    for label, present in has.items():
        if not reader.keys.is_default(label) and readable.any() and not present.any():
            key = reader.keys.key(label)
            problems.append(Problem(None, key, "missing-label", f"no structure has a {label} label under key {key!r}"))
    problems.sort(key=lambda p: (-1 if p.index is None else p.index, KINDS.index(p.kind)))
    return problems


__all__ = ["Problem", "validate_reader", "check_arrays", "fingerprint", "OverlapChecker", "KINDS"]
