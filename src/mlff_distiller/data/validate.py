"""Scan every structure of a file and report what is wrong with it, with indices.

Checks, per structure: the reader can read it (a ``DataFormatError`` names the index and key and
is reported, not raised); positions, cell and labels are finite; array shapes agree with the atom
count; atomic numbers are valid (1..118); no two atoms are closer than ``overlap_threshold`` Å
(periodic images included, via vesin); no structure repeats an earlier one (atomic numbers,
positions, cell and pbc equal after rounding to ``decimals``) — a repeat whose charge/spin or
labels differ is reported as ``conflicting-labels`` instead (the same input with different
targets, or different electronic states a model must tell apart). Across the file: a label that
some structures carry and others lack (stress is only expected on fully periodic structures),
and ``no-labels`` when no structure has an energy label (with the keys that may hold one) unless
``accept_unlabeled=True``. With several files, each problem names its ``file`` and the index in
that file (``file_index``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from .readers.base import Reader, chunks
from .keys import STRUCTURE_LABELS
from .structure import Structure

#: the kinds of problem ``validate_reader`` reports
KINDS = (
    "unreadable",
    "non-finite",
    "shape-mismatch",
    "invalid-species",
    "invalid-cell",
    "overlapping-atoms",
    "duplicate",
    "conflicting-labels",
    "missing-label",
    "no-labels",
)
#: per-structure properties that define the electronic state (geometry repeats differing in them conflict)
STATE_KEYS = ("total_charge", "charge", "spin")
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
    #: the member file of a multi-file input, and the structure's index in it
    file: Optional[str] = None
    file_index: Optional[int] = None

    def as_dict(self) -> dict:
        out = asdict(self)
        if self.file is None:
            del out["file"], out["file_index"]
        return out


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
    for chunk in chunks(indices):  # a failing chunk is re-read one by one
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
    for key in ("positions", "cell") + STRUCTURE_LABELS:
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


def _state(s: Structure) -> tuple:
    """(name, value) of the charge/spin properties a structure carries."""
    return tuple((k, float(np.asarray(s.extras[k]).reshape(-1)[0])) for k in STATE_KEYS if k in s.extras)


def _label_digest(s: Structure) -> bytes:
    """Digest of the exact label values (energy, forces, stress; absent ones marked)."""
    h = hashlib.blake2b(digest_size=16)
    for label in STRUCTURE_LABELS:
        value = getattr(s, label)
        h.update(label.encode() + (b"-" if value is None else np.ascontiguousarray(value, dtype=np.float64).tobytes()))
    return h.digest()


def _repeat(i: int, s: Structure, first: int, first_state: tuple, first_labels: bytes) -> Problem:
    """A structure with the geometry of an earlier one: duplicate or conflicting labels."""
    state = _state(s)
    if state != first_state:
        theirs, mine = dict(first_state), dict(state)
        diff = ", ".join(f"{k} {mine.get(k)} vs {theirs.get(k)}" for k in dict.fromkeys([*mine, *theirs])
                         if mine.get(k) != theirs.get(k))
        return Problem(i, next(k for k in STATE_KEYS if mine.get(k) != theirs.get(k)), "conflicting-labels",
                       f"same atoms, positions, cell and pbc as structure {first} but another state ({diff}): "
                       "a model must take charge/spin as input to tell them apart")
    if _label_digest(s) != first_labels:
        return Problem(i, "energy", "conflicting-labels",
                       f"same atoms, positions, cell and pbc (and charge/spin) as structure {first} but different "
                       "labels: the same input with two targets")
    return Problem(i, "positions", "duplicate", f"same atoms, positions, cell, pbc and labels as structure {first}")


def _no_labels(reader: Reader) -> Problem:
    from .labels import DEFAULT_ALIASES, inspect_labels

    report = inspect_labels(reader, found={"energy": 0, "forces": 1, "stress": 1}, warn=False)
    keys = reader.keys
    where = (f"under the default keys ({', '.join(DEFAULT_ALIASES['energy'])})" if keys.is_default("energy")
             else f"under energy_key={keys.energy!r}")
    hint = (f"; candidates: {', '.join(report.candidates['energy'])} (pass --energy-key / energy_key=)"
            if report.candidates.get("energy") else "")
    return Problem(None, keys.energy, "no-labels",
                   f"no structure has an energy label {where}{hint}; pass --allow-unlabeled "
                   "(accept_unlabeled=True) if the data is meant to be unlabeled")


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
    accept_unlabeled: bool = False,
) -> list[Problem]:
    """Every problem found in ``reader``'s structures, sorted by index (file-wide ones first).

    overlap_threshold: Å, pairs closer than this are reported (0 disables the check).
    decimals: rounding of positions/cell (Å) when looking for duplicate structures.
    progress: optional wrapper around the per-structure iterator (e.g. ``tqdm``).
    accept_unlabeled: a file without any energy label is not a problem (``no-labels``).
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
    has = {label: np.zeros(n, dtype=bool) for label in STRUCTURE_LABELS}
    periodic = np.zeros(n, dtype=bool)
    readable = np.zeros(n, dtype=bool)
    seen: dict[bytes, tuple[int, tuple, bytes]] = {}
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
        first = seen.get(key)
        if first is None:
            seen[key] = (i, _state(s), _label_digest(s))
        else:
            problems.append(_repeat(i, s, *first))
    problems.extend(_label_consistency(has, periodic, readable))
    if not accept_unlabeled and readable.any() and not has["energy"].any():
        problems.append(_no_labels(reader))
    for label, present in has.items():
        if not reader.keys.is_default(label) and readable.any() and not present.any():
            key = reader.keys.key(label)
            problems.append(Problem(None, key, "missing-label", f"no structure has a {label} label under key {key!r}"))
    problems.sort(key=lambda p: (-1 if p.index is None else p.index, KINDS.index(p.kind)))
    return _name_members(reader, problems)


def _name_members(reader: Reader, problems: list[Problem]) -> list[Problem]:
    """The member file and local index of each problem of a multi-file reader."""
    paths, locate = getattr(reader, "paths", None), getattr(reader, "locate", None)
    if not paths or locate is None or len(paths) < 2:
        return problems
    from dataclasses import replace

    out = []
    for p in problems:
        if p.index is None:
            out.append(p)
            continue
        k, local = locate(p.index)
        out.append(replace(p, file=paths[k], file_index=int(local)))
    return out


__all__ = ["Problem", "validate_reader", "check_arrays", "fingerprint", "OverlapChecker", "KINDS"]
