"""What every HDF5 layout shares: the per-process open files, the layout interface and the
helpers that turn stored arrays into a validated ``Structure`` in ASE units.

A layout builds its index at construction from dataset *shapes* (never by reading every
structure's arrays): how many structures, which group/dataset/row each one lives in, and the
atom count of each as an int64 array. ``read(files, i)`` then reads structure ``i``.
Layout objects hold no h5py handles, so they pickle; the handles live in ``H5Files``,
which the reader opens once per process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Optional, Sequence

import h5py
import numpy as np
from ase.data import atomic_numbers as SYMBOL_TO_Z

from ....errors import DataFormatError, format_error
from ....keys import DEFAULT_KEYS, STRUCTURE_LABELS, KeyRegistry
from ....labels import LabelKeys, finalize_labels
from ....structure import Structure
from ....units import Conversion, LabelUnits, UnitError, conversion
from ...checks import check_structure
from ._h5 import DtypeCache, LinkPolicy, as_text, natural_sorted
from .forced import not_this_layout

#: attribute names under which files record a dataset's unit
UNIT_ATTRS = ("units", "unit", "u")
#: appended to the NaN error of layouts whose files mark uncomputed labels with NaN
NAN_HINT = (
    "this layout marks uncomputed levels of theory with NaN; pass nan_as_missing=True to treat them as missing labels"
)


@dataclass(frozen=True)
class LayoutContext:
    """What a layout needs to know besides the file: where it is, which keys to use, the
    properties asked for (``properties.py``), the key declarations and the user's unit options."""

    paths: tuple[str, ...]
    keys: LabelKeys
    nan_as_missing: bool = False
    properties: tuple = ()
    registry: KeyRegistry = DEFAULT_KEYS
    unit_options: LabelUnits = LabelUnits()

    @property
    def display(self) -> str:
        """The file (or first shard) named in error messages."""
        if len(self.paths) == 1:
            return self.paths[0]
        return f"{self.paths[0]} (+{len(self.paths) - 1} more shards)"

    def path_of(self, file_index: int) -> str:
        return self.paths[file_index]

    def error(self, index: Optional[int], key: Optional[str], problem: str, file_index: Optional[int] = None):
        path = self.display if file_index is None else self.paths[file_index]
        return format_error(path, index, key, problem)


class H5Files:
    """The HDF5 files of one process, each opened read-only on first use, plus a small cache
    (open groups, dtypes) that layouts keep per process."""

    def __init__(self, paths: Sequence[str], *, allow_external_links: bool = False) -> None:
        self.paths = list(paths)
        self._files: list[Optional[h5py.File]] = [None] * len(self.paths)
        self.cache: dict[str, Any] = {}
        self.dtypes = DtypeCache()
        #: which links and datasets this process's reads may follow (external links refused)
        self.policy = LinkPolicy(allow_external_links)

    def __getitem__(self, i: int) -> h5py.File:
        f = self._files[i]
        if f is None:
            f = self._files[i] = h5py.File(self.paths[i], "r")
        return f

    def __len__(self) -> int:
        return len(self.paths)

    def lru(self, name: str, capacity: int = 256) -> "LRU":
        cache = self.cache.get(name)
        if cache is None:
            cache = self.cache[name] = LRU(capacity)
        return cache

    def close(self) -> None:
        self.cache.clear()
        for i, f in enumerate(self._files):
            if f is not None:
                try:
                    f.close()
                except Exception:  # pragma: no cover - closing a broken handle
                    pass
                self._files[i] = None


class LRU(OrderedDict):
    """A bounded mapping: ``get_or(key, make)`` keeps the ``capacity`` most recently used values."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def get_or(self, key, make: Callable[[], Any]):
        try:
            self.move_to_end(key)
            return self[key]
        except KeyError:
            value = make()
            self[key] = value
            if len(self) > self.capacity:
                self.popitem(last=False)
            return value


class Layout(ABC):
    """One way of laying out structures in an HDF5 file."""

    #: layout name used by ``layout=``
    name: ClassVar[str] = ""
    #: extra keyword options the layout accepts
    options: ClassVar[tuple[str, ...]] = ()
    #: whether a dataset may span several files (MACE shards)
    multi_file: ClassVar[bool] = False
    #: what a file of this layout holds, for the error when ``layout=`` is forced on another file
    signature: ClassVar[str] = ""
    #: whether files of this layout write NaN for a label that was not computed (ANI-1x, SPICE)
    nan_marks_missing: ClassVar[bool] = False
    #: whether the layout checks every link it follows and every dataset it reads itself
    #: (``H5Files.policy``); otherwise the reader checks the whole file once at construction
    checks_links: ClassVar[bool] = False
    #: whether the layout converts units itself through ``unit_conversion`` (which applies the
    #: user's unit options); otherwise ``finish`` applies them to the values read
    converts_units: ClassVar[bool] = False

    def __init__(self, files: H5Files, ctx: LayoutContext) -> None:
        """Subclasses call this first: it refuses (DataFormatError naming the file, what it holds
        and the supported layouts) every file that does not look like this layout, so a forced
        ``layout=`` never reads a foreign file as an empty data set."""
        self.ctx = ctx
        for k in range(len(files)):
            files.policy.members(files[k].id, "")  # the root's links, before anything follows them
            if not type(self).accepts(files[k]):
                raise not_this_layout(ctx.path_of(k), files[k], type(self), files.policy)
        #: [S] int64 atom counts
        self.natoms: np.ndarray = np.zeros(0, dtype=np.int64)
        #: quantity -> description of the unit conversion applied
        self.units: dict[str, str] = {}

    @classmethod
    @abstractmethod
    def detect(cls, f: h5py.File) -> bool:
        """Whether an open file looks like this layout (cheap: top-level structure only)."""

    @classmethod
    def accepts(cls, f: h5py.File) -> bool:
        """Whether a file may be read with this layout when ``layout=`` forces it: ``detect`` by
        default; a layout may accept more (then its constructor gives the specific error)."""
        return cls.detect(f)

    def __len__(self) -> int:
        return int(self.natoms.shape[0])

    @abstractmethod
    def read(self, files: H5Files, index: int) -> Structure:
        """Structure ``index`` (0 <= index < len, already checked)."""

    def read_many(self, files: H5Files, indices: Sequence[int]) -> list[Structure]:
        return [self.read(files, int(i)) for i in indices]

    def label_keys(self, files: H5Files, index: int) -> list[str]:
        return []

    # -- helpers ------------------------------------------------------------------------
    def candidates(self, label: str, defaults: Sequence[str]) -> tuple[str, ...]:
        """Keys to try for ``label``: the layout's conventional names when the key is left at its
        default, else exactly the configured key."""
        keys = self.ctx.keys
        return tuple(defaults) if keys.is_default(label) else (keys.key(label),)

    def missing_key(self, label: str, available: Iterable[str]) -> KeyError:
        """KeyError for an explicitly configured key the file does not have."""
        key = self.ctx.keys.key(label)
        return KeyError(
            f"{self.ctx.display}: {label}_key={key!r} not found in the {self.name} layout; "
            f"keys in the file: {sorted(set(available))}"
        )

    def record_unit(self, quantity: str, text: str) -> None:
        """Add one conversion description for ``quantity`` (distinct ones are joined by '; ')."""
        old = self.units.get(quantity)
        if old is None:
            self.units[quantity] = text
        elif text not in old.split("; "):
            self.units[quantity] = f"{old}; {text}"

    def unit_conversion(
        self,
        unit: Optional[str],
        quantity: str,
        *,
        where: str,
        default: Optional[str],
        convention: str,
        sign: float = 1.0,
        index: Optional[int] = None,
        given_by: str = "attribute",
    ) -> Conversion:
        """The conversion for a dataset whose unit attribute is ``unit`` (None: use ``default``,
        the layout's documented convention) and record it in ``self.units``; ``given_by`` says
        where a non-None ``unit`` came from.

        Raises DataFormatError naming the file, dataset and unit when the unit is unknown.
        """
        option = {"positions": "length", "energy": "energy", "forces": "forces", "gradient": "forces",
                  "stress": "stress", "virial": "energy"}.get(quantity)
        override = getattr(self.ctx.unit_options, option) if option else None
        if override is not None:  # the user's option overrides the file and the convention
            unit, given_by = override.unit, f"{option}_unit="
        source = given_by if unit is not None else convention
        text = unit if unit is not None else default
        if text is None:
            raise self.ctx.error(index, where, f"no unit recorded for this {quantity} and the layout has no convention")
        try:
            conv = conversion(as_text(text), quantity, sign=sign)
        except UnitError as exc:
            raise self.ctx.error(index, where, f"unit {as_text(text)!r} ({source}): {exc}") from None
        name = where.rsplit("/", 1)[-1]
        label = "forces" if quantity == "gradient" else quantity
        self.record_unit(label, f"{conv.describe(name)} [{source}]")
        return conv

    def finish(
        self,
        index: int,
        *,
        positions: np.ndarray,
        numbers: np.ndarray,
        cell: Optional[np.ndarray] = None,
        pbc: Optional[np.ndarray] = None,
        energy=None,
        forces=None,
        stress=None,
        keys: Optional[dict[str, str]] = None,
        file_index: Optional[int] = None,
    ) -> Structure:
        """Validate raw (already unit-converted) arrays and build the Structure."""
        path = self.ctx.display if file_index is None else self.ctx.paths[file_index]
        keys = keys or {}
        if numbers.ndim != 1:
            raise format_error(path, index, keys.get("numbers", "species"), f"species must be 1-D, got shape {numbers.shape}")
        n = int(numbers.shape[0])
        pos_key = keys.get("positions", "positions")
        if positions.dtype.kind not in "fiu":
            raise format_error(path, index, pos_key, f"positions must be numeric, got dtype {positions.dtype}")
        if positions.ndim == 2 and positions.shape[1] == 3 and positions.shape[0] != n:
            raise format_error(
                path,
                index,
                keys.get("numbers", "species"),
                f"species has {n} entries (shape {numbers.shape}) but {pos_key!r} has shape {positions.shape}: "
                "both must list the same atoms",
            )
        if positions.shape != (n, 3):
            raise format_error(path, index, pos_key, f"positions have shape {positions.shape}, expected ({n}, 3)")
        if cell is None:
            cell = np.zeros((3, 3), dtype=np.float64)
        elif cell.shape != (3, 3):
            if cell.size == 9:
                cell = cell.reshape(3, 3)
            else:
                raise format_error(path, index, keys.get("cell", "cell"), f"cell must be 3x3, got shape {cell.shape}")
        if cell.dtype.kind not in "fiu":
            raise format_error(path, index, keys.get("cell", "cell"), f"cell must be numbers, got {cell.dtype}")
        if pbc is None:
            pbc = np.zeros(3, dtype=bool)
        else:
            pbc = np.asarray(pbc)
            if pbc.shape == ():
                pbc = np.repeat(pbc, 3)
            if pbc.shape != (3,):
                raise format_error(path, index, keys.get("pbc", "pbc"), f"pbc must have 3 values, got shape {pbc.shape}")
            pbc = pbc.astype(bool, copy=False)
        if self.ctx.nan_as_missing:
            energy = _none_if_all_nan(energy)
            forces = _none_if_all_nan(forces)
            stress = _none_if_all_nan(stress)
        label_keys = {label: keys.get(label, label) for label in STRUCTURE_LABELS}
        options = self.ctx.unit_options
        if options.given and not self.converts_units:
            positions, cell, energy, forces, stress = self._apply_options(
                index, path, label_keys, positions, cell, energy, forces, stress)
        raw = {"energy": energy, "forces": forces, "stress": stress}
        try:
            energy, forces, stress = finalize_labels(**raw, keys=label_keys, natoms=n, cell=cell, path=path, index=index)
        except DataFormatError as exc:
            if self._wants_nan_hint(exc, raw, label_keys):
                raise DataFormatError(f"{exc}: {NAN_HINT}") from None
            raise
        structure = Structure(
            positions=positions, numbers=numbers, cell=cell, pbc=pbc, energy=energy, forces=forces, stress=stress
        )
        names = {"positions": pos_key, "numbers": keys.get("numbers", "species"), "cell": keys.get("cell", "cell"),
                 "pbc": keys.get("pbc", "pbc"), **label_keys}
        return check_structure(structure, path=path, index=index, names=names)  # the readers' one value check

    def _apply_options(self, index, path, label_keys, positions, cell, energy, forces, stress):
        """The user's unit options applied to values of a layout that has no unit conversions of
        its own (its convention is ASE's units)."""
        options = self.ctx.unit_options
        length = options.scale("length")
        if length != 1.0:
            positions = np.asarray(positions, dtype=np.float64) * length
            cell = np.asarray(cell, dtype=np.float64) * length
        out = []
        for label, value in (("energy", energy), ("forces", forces), ("stress", stress)):
            if value is not None:
                try:
                    factor = options.factor(label, virial="virial" in label_keys[label].lower(),
                                            where=f"{path}, structure {index}")
                except UnitError as exc:
                    raise DataFormatError(str(exc)) from None
                if factor is not None and factor != 1.0:
                    value = np.asarray(value, dtype=np.float64) * factor
            out.append(value)
        return (positions, cell, *out)

    def property_sources(self, files: H5Files, index: int) -> list:
        """Where structure ``index`` keeps property values (``properties.PropertySource``); none by default."""
        return []

    def _wants_nan_hint(self, exc: DataFormatError, raw: dict, label_keys: dict[str, str]) -> bool:
        """Whether ``exc`` is about a label that is entirely NaN in a layout that writes NaN for
        an uncomputed label, read without ``nan_as_missing`` (a partly-NaN label is broken data,
        which nan_as_missing would not change: no hint then)."""
        if not self.nan_marks_missing or self.ctx.nan_as_missing:
            return False
        text = str(exc)
        return any(
            value is not None and _none_if_all_nan(value) is None and f"key {label_keys[label]!r}" in text
            for label, value in raw.items()
        )


def _none_if_all_nan(value):
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.dtype.kind == "f" and arr.size and np.all(np.isnan(arr)):
        return None
    return value


def apply(conv: Optional[Conversion], values: np.ndarray) -> np.ndarray:
    """``sign * factor * values``; values are returned untouched (dtype kept) when the factor is 1,
    else as float64 (the float32 stored value times the exact factor)."""
    if conv is None or (conv.factor == 1.0 and conv.sign == 1.0):
        return values
    out = np.asarray(values, dtype=np.float64) * conv.factor
    if conv.sign != 1.0:
        out = -out
    return out


def to_numbers(values, *, ctx: LayoutContext, index: Optional[int], key: str) -> np.ndarray:
    """Atomic numbers (int64) from integer species or element symbols (str/bytes)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "SUO":
        flat = arr.reshape(-1)
        out = np.empty(flat.shape[0], dtype=np.int64)
        for k, sym in enumerate(flat):
            name = as_text(sym).strip()
            if name not in SYMBOL_TO_Z:
                raise ctx.error(index, key, f"unknown element symbol {name!r}")
            out[k] = SYMBOL_TO_Z[name]
        return out.reshape(arr.shape)
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise ctx.error(index, key, f"species must be atomic numbers or element symbols, got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if out.size and (out.min() < 1 or out.max() > 118):
        raise ctx.error(index, key, f"species must be atomic numbers 1..118, got values {out.min()}..{out.max()}")
    return out


def unit_attr(obj) -> Optional[str]:
    """The unit an HDF5 object records in one of ``UNIT_ATTRS``, or None."""
    attrs = obj.attrs
    for name in UNIT_ATTRS:
        if name in attrs:
            value = attrs[name]
            if isinstance(value, np.ndarray) and value.size == 1:
                value = value.reshape(())[()]
            return as_text(value)
    return None


def molecule_cell() -> tuple[np.ndarray, np.ndarray]:
    """Zero cell and pbc all False: the contract's molecule."""
    return np.zeros((3, 3), dtype=np.float64), np.zeros(3, dtype=bool)


def first_leaf(f: h5py.File, max_depth: int = 4, max_groups: int = 64) -> tuple[int, dict[str, h5py.Dataset]]:
    """The first group below the root (depth first, natural order) that holds datasets; groups
    holding nothing (empty ones) are passed over. At most ``max_groups`` groups are visited.

    Returns (depth, {name: dataset}); depth 0 with {} when nothing is found.
    """
    budget = [max_groups]

    def visit(grp: h5py.Group, depth: int) -> tuple[int, dict[str, h5py.Dataset]]:
        for name in natural_sorted(grp.keys()):
            if budget[0] <= 0:
                break
            if grp.get(name, getclass=True) is not h5py.Group:
                continue
            budget[0] -= 1
            sub = grp[name]
            datasets = {n: sub[n] for n in sub.keys() if sub.get(n, getclass=True) is h5py.Dataset}
            if datasets:
                return depth, datasets
            if depth < max_depth:
                found = visit(sub, depth + 1)
                if found[1]:
                    return found
        return 0, {}

    return visit(f, 1)


__all__ = [
    "DataFormatError",
    "H5Files",
    "LRU",
    "Layout",
    "LayoutContext",
    "UNIT_ATTRS",
    "apply",
    "first_leaf",
    "molecule_cell",
    "to_numbers",
    "unit_attr",
]
