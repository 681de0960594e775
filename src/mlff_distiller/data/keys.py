"""The key registry: every sample/batch key declared once — kind, row shape, dtype, unit, rotation, checks.

A :class:`Key` says how one named quantity is stored, batched, rotated and validated:

- ``kind``: ``'atom'`` (leading axis = the structure's atoms), ``'structure'`` (one row per
  structure), ``'edge'`` (one row per neighbor-list edge) or ``'list'`` (one Python value per
  structure: a string such as ``config_type``, or an object such as ``atoms``);
- ``shape``: the row shape after that leading axis; an entry may be a symbol (``'K'``) whose
  value is free but the same for every structure of a batch or a file (``hvp`` is ``('K', 3)``);
- ``dtype``: ``'float'`` (samples and batches use the dataset's float dtype; files keep float64
  bit for bit), ``'int'`` (int64), ``'bool'``, ``'str'`` or ``'object'``;
- ``unit`` (ASE units: eV, Å, eV/Å, eV/Å³, eV/Å², K...), ``label`` (an optional target: batches
  always carry ``<name>_mask``), ``rotation`` (``'invariant'``, ``'vector'`` — the last axis has 3
  components and turns as ``x @ Qᵀ``, which also turns every row of a per-atom ``(K, 3)`` block — or
  ``'tensor'``, the last two axes turn as ``Q x Qᵀ``) and value ``checks`` (:data:`CHECKS`).

:data:`DEFAULT_KEYS` holds the keys the project knows. Further keys are declared on the objects
that carry data — ``MolecularDataset(..., extra_keys=[Key(...)])``, ``Collater(keys=...)``,
``RandomRotation(keys=...)`` — never in a module-level global, so the declaration travels with
those objects into DataLoader workers under ``fork`` and ``spawn`` alike. A registry is immutable:
``registry.extend([...])`` returns a new one.

>>> from mlff_distiller.data.keys import DEFAULT_KEYS, Key
>>> DEFAULT_KEYS["hvp"].shape, DEFAULT_KEYS["hvp"].rotation
(('K', 3), 'vector')
>>> keys = DEFAULT_KEYS.extend([Key("dipole_ref", "structure", (3,), unit="e*Å", rotation="vector")])
>>> keys.kind("dipole_ref")
'structure'
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from .errors import format_error

ATOM, STRUCTURE, EDGE, LIST = "atom", "structure", "edge", "list"
KINDS = (ATOM, STRUCTURE, EDGE, LIST)
DTYPES = ("float", "int", "bool", "str", "object")
ROTATIONS = ("invariant", "vector", "tensor")

#: keys made by the collate itself (never sample keys); ``<name>_mask`` is reserved as well
BATCH_KEYS = ("mask", "max_atoms", "batch", "ptr", "total_atoms")
#: keys every sample has
REQUIRED_KEYS = ("positions", "species")
#: structural keys: in every sample of a batch or in none
STRUCTURAL_KEYS = ("cell", "pbc", "natoms", "idx")

Dim = Union[int, str]


def _finite(value: np.ndarray) -> Optional[str]:
    if value.dtype.kind in "fc" and not np.isfinite(value).all():
        return f"{int((~np.isfinite(value)).sum())} NaN/inf value(s)"
    return None


def _atomic_number(value: np.ndarray) -> Optional[str]:
    bad = (value < 1) | (value > 118)
    if bad.any():
        return f"atomic number {int(value[bad].reshape(-1)[0])} outside 1..118"
    return None


def _non_negative(value: np.ndarray) -> Optional[str]:
    if value.size and (value < 0).any():
        return f"negative value {value[value < 0].reshape(-1)[0].item()!r}"
    return None


def _unit_directions(value: np.ndarray) -> Optional[str]:
    """[N, K, 3] directions, each of norm 1 over its structure's 3N components (1e-6 relative)."""
    if value.ndim != 3 or value.shape[0] == 0:
        return None
    norms = np.sqrt(np.einsum("nkc,nkc->k", value, value, dtype=np.float64))
    bad = np.flatnonzero(np.abs(norms - 1.0) > 1e-6)
    if bad.size:
        return f"direction {int(bad[0])} has norm {norms[bad[0]]:.9g} over the structure's 3N components, expected 1"
    return None


#: value checks by name: ``check(array) -> None`` or the problem in words
CHECKS = {
    "finite": _finite,
    "atomic_number": _atomic_number,
    "non_negative": _non_negative,
    "unit_directions": _unit_directions,
}

_NUMPY_KIND = {"float": "fiu", "int": "iu", "bool": "b?iu"}


@dataclass(frozen=True)
class Key:
    """One declared key (see the module docstring for the fields).

    axis: the axis along which values of several structures are concatenated (1 for
        ``edge_index`` [2, E], else 0). atom_index: the values are atom indices of their
        structure, offset by the structure's first atom in graph batches (``edge_index``).
    """

    name: str
    kind: str
    shape: tuple = ()
    dtype: str = "float"
    unit: str = ""
    label: bool = False
    rotation: str = "invariant"
    checks: tuple = ()
    doc: str = field(default="", compare=False)
    axis: int = 0
    atom_index: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"key name must be an identifier, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"key {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"key {self.name!r}: dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.rotation not in ROTATIONS:
            raise ValueError(f"key {self.name!r}: rotation must be one of {ROTATIONS}, got {self.rotation!r}")
        shape = tuple(self.shape)
        for d in shape:
            if not (isinstance(d, str) and d.isidentifier()) and not (isinstance(d, (int, np.integer)) and d >= 0):
                raise ValueError(f"key {self.name!r}: shape entries must be sizes or symbols, got {shape!r}")
        object.__setattr__(self, "shape", tuple(d if isinstance(d, str) else int(d) for d in shape))
        object.__setattr__(self, "checks", tuple(self.checks))
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise ValueError(f"key {self.name!r}: unknown checks {unknown}; known: {sorted(CHECKS)}")
        if self.rotation == "vector" and (not shape or shape[-1] != 3):
            raise ValueError(f"key {self.name!r}: a 'vector' key needs a last axis of 3, got shape {shape!r}")
        if self.rotation == "tensor" and shape[-2:] != (3, 3):
            raise ValueError(f"key {self.name!r}: a 'tensor' key needs last axes (3, 3), got shape {shape!r}")
        if self.kind == LIST and (shape or self.dtype not in ("str", "object")):
            raise ValueError(f"key {self.name!r}: a 'list' key holds one str or object per structure")
        if self.dtype in ("str", "object") and self.kind != LIST:
            raise ValueError(f"key {self.name!r}: str/object values need kind 'list'")
        if self.name in BATCH_KEYS or self.name.endswith("_mask"):
            raise ValueError(f"{self.name!r} is a reserved batch key")

    # -- shapes ----------------------------------------------------------------------------
    @property
    def numeric(self) -> bool:
        return self.kind != LIST

    def row_shape(self, value_shape: tuple, *, natoms: Optional[int] = None) -> tuple:
        """Check one structure's value shape against the declaration; return the concrete row
        shape (symbols resolved). ``natoms`` is needed for per-atom keys. ValueError otherwise."""
        lead = 1 if self.kind in (ATOM, EDGE) else 0
        value_shape = tuple(int(s) for s in value_shape)
        if self.axis == 1:  # [row..., E]: move the concatenation axis first for the check
            value_shape = value_shape[1:] + value_shape[:1] if value_shape else value_shape
        if len(value_shape) != lead + len(self.shape):
            raise ValueError(f"has shape {list(value_shape)}, expected {self.describe_shape()}")
        if self.kind == ATOM and natoms is not None and value_shape[0] != natoms:
            raise ValueError(f"has shape {list(value_shape)}, expected first dimension {natoms} (the atom count)")
        row = value_shape[lead:]
        if not self.fits_row(row):
            raise ValueError(f"has shape {list(value_shape)}, expected {self.describe_shape()}")
        return row

    def fits_row(self, row: tuple) -> bool:
        """Whether ``row`` (a shape after the leading atom/structure/edge axis) fits ``shape``."""
        if len(row) != len(self.shape):
            return False
        bound: dict[str, int] = {}
        for want, got in zip(self.shape, row):
            if isinstance(want, str):
                if bound.setdefault(want, int(got)) != int(got):
                    return False
            elif want != int(got):
                return False
        return True

    def describe_shape(self) -> str:
        lead = {ATOM: ["N"], EDGE: ["E"], STRUCTURE: [], LIST: []}[self.kind]
        dims = lead + [str(d) for d in self.shape]
        if self.axis == 1:
            dims = dims[1:] + dims[:1]
        return "[" + ", ".join(dims) + "]"

    # -- values ------------------------------------------------------------------------------
    def check(self, value: Any, *, natoms: Optional[int] = None, path: str = "<data>",
              index: Optional[int] = None, key: Optional[str] = None) -> Any:
        """One structure's value validated against the declaration: a numpy array of the right
        dtype kind and shape that passes every check (ints stay ints, floats keep their width),
        or a ``str``. Raises ``DataFormatError`` naming ``path``, structure ``index`` and the key."""
        name = key or self.name
        if self.kind == LIST:
            if self.dtype == "str":
                if isinstance(value, np.ndarray) and value.ndim == 0:
                    value = value.item()
                if isinstance(value, (bytes, np.bytes_)):
                    value = value.decode()
                if not isinstance(value, str):
                    raise format_error(path, index, name, f"must be a string, got {type(value).__name__}")
                return str(value)
            return value
        arr = np.asarray(value)
        if arr.dtype.kind not in _NUMPY_KIND[self.dtype]:
            raise format_error(path, index, name, f"must be {self.dtype} values, got dtype {arr.dtype}")
        if self.dtype == "int" and arr.dtype != np.int64:
            arr = arr.astype(np.int64)
        elif self.dtype == "bool" and arr.dtype != bool:
            if arr.dtype.kind in "iu" and not np.isin(arr, (0, 1)).all():
                raise format_error(path, index, name, "must be booleans (0 or 1)")
            arr = arr.astype(bool)
        elif self.dtype == "float" and arr.dtype.kind in "iu":
            if arr.size and np.abs(arr).max() > 2**53:
                raise format_error(path, index, name, "integer values beyond 2**53 cannot be floats exactly")
            arr = arr.astype(np.float64)
        try:
            self.row_shape(arr.shape, natoms=natoms)
        except ValueError as exc:
            raise format_error(path, index, name, str(exc)) from None
        for check in self.checks:
            problem = CHECKS[check](arr)
            if problem is not None:
                raise format_error(path, index, name, problem)
        return arr

    def as_dict(self) -> dict:
        """JSON-able declaration (stored in packed files so their extra keys read back)."""
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape), "dtype": self.dtype,
                "unit": self.unit, "label": self.label, "rotation": self.rotation, "checks": list(self.checks),
                "doc": self.doc, "axis": self.axis, "atom_index": self.atom_index}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Key":
        fields = {k: d[k] for k in ("name", "kind", "shape", "dtype", "unit", "label", "rotation", "checks",
                                    "doc", "axis", "atom_index") if k in d}
        fields["shape"] = tuple(fields.get("shape", ()))
        fields["checks"] = tuple(fields.get("checks", ()))
        return cls(**fields)


class KeyRegistry(Mapping):
    """An immutable mapping name -> :class:`Key` (picklable; travels into worker processes)."""

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        table: dict[str, Key] = {}
        for key in keys:
            if not isinstance(key, Key):
                raise TypeError(f"expected Key declarations, got {type(key).__name__}")
            if key.name in table and table[key.name] != key:
                raise ValueError(f"key {key.name!r} declared twice with different declarations")
            table[key.name] = key
        self._keys = table
        self._labels = tuple(k.name for k in table.values() if k.label)
        #: the label names as a frozenset (fast membership)
        self.label_set = frozenset(self._labels)

    def __getitem__(self, name: str) -> Key:
        return self._keys[name]

    def get(self, name: str, default=None):
        return self._keys.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyRegistry) and self._keys == other._keys

    def __hash__(self) -> int:  # pragma: no cover - registries are compared, rarely hashed
        return hash(tuple(self._keys.items()))

    def __reduce__(self):
        return (KeyRegistry, (tuple(self._keys.values()),))

    def extend(self, keys: Union[Iterable[Key], "KeyRegistry", None]) -> "KeyRegistry":
        """A new registry with ``keys`` added. Re-declaring a key identically is allowed; a
        different declaration of a known key is a ValueError (a built-in key cannot change meaning)."""
        if keys is None:
            return self
        new = list(keys.values()) if isinstance(keys, KeyRegistry) else list(keys)
        if not new:
            return self
        return KeyRegistry(list(self._keys.values()) + new)

    def kind(self, name: str) -> Optional[str]:
        """The declared kind of ``name`` (None when undeclared)."""
        key = self._keys.get(name)
        return None if key is None else key.kind

    @property
    def labels(self) -> tuple[str, ...]:
        """Names of the label keys (batches always carry their ``<name>_mask``)."""
        return self._labels

    def declared(self, names: Iterable[str]) -> list[Key]:
        return [self._keys[n] for n in names if n in self._keys]

    def require(self, name: str, *, where: str = "") -> Key:
        """The declaration of ``name``, or a KeyError saying how to declare it."""
        key = self._keys.get(name)
        if key is None:
            prefix = f"{where}: " if where else ""
            raise KeyError(
                f"{prefix}key {name!r} is not declared; declare it with "
                f"mlff_distiller.data.keys.Key({name!r}, kind='atom'|'structure'|'edge'|'list', shape=..., ...) "
                "passed as extra_keys= to MolecularDataset (or keys= to the collate/transform)"
            )
        return key

    def __repr__(self) -> str:
        return f"KeyRegistry({sorted(self._keys)})"


def infer_kind(name: str, shapes: list, counts: list[int]) -> str:
    """Kind of an undeclared key from the shapes of its values (``None`` = not a tensor):
    per-atom when every first dimension is the structure's atom count, per-structure when every
    shape is the same; both or neither is an error naming the key (never a guess)."""
    if any(shape is None for shape in shapes):
        return LIST
    atom = all(len(shape) >= 1 and shape[0] == n for shape, n in zip(shapes, counts))
    structure = len(set(shapes)) == 1
    if atom != structure:
        return ATOM if atom else STRUCTURE
    what = "both per-atom and per-structure" if atom else "neither per-atom nor per-structure"
    raise ValueError(
        f"cannot batch undeclared sample key {name!r}: its shapes {[list(x) for x in shapes[:4]]} fit {what} "
        f"(atom counts {counts[:4]}); declare it: Key({name!r}, kind='atom' | 'structure' | 'edge' | 'list', "
        "shape=...) in extra_keys= of the dataset or keys= of the collate function"
    )


_FLOAT = dict(dtype="float", checks=("finite",))

#: every key the project knows (units: eV, Å, eV/Å, eV/Å³, eV/Å²)
BUILTIN_KEYS: tuple[Key, ...] = (
    # structure of a sample
    Key("positions", ATOM, (3,), unit="Å", rotation="vector", doc="Cartesian coordinates", **_FLOAT),
    Key("species", ATOM, (), dtype="int", checks=("atomic_number",), doc="atomic numbers"),
    Key("cell", STRUCTURE, (3, 3), unit="Å", rotation="vector", doc="lattice vectors as rows; zeros for a molecule",
        **_FLOAT),
    Key("pbc", STRUCTURE, (3,), dtype="bool", doc="periodic along each cell vector"),
    Key("natoms", STRUCTURE, (), dtype="int", checks=("non_negative",), doc="atom count"),
    Key("idx", STRUCTURE, (), dtype="int", checks=("non_negative",), doc="dataset index"),
    # labels
    Key("energy", STRUCTURE, (), unit="eV", label=True, doc="total energy", **_FLOAT),
    Key("forces", ATOM, (3,), unit="eV/Å", label=True, rotation="vector", doc="forces = -dE/dx", **_FLOAT),
    Key("stress", STRUCTURE, (3, 3), unit="eV/Å³", label=True, rotation="tensor",
        doc="stress, ASE sign (1/V dE/dstrain)", **_FLOAT),
    Key("energies", ATOM, (), unit="eV", label=True, doc="per-atom energies (sum = energy)", **_FLOAT),
    Key("hvp", ATOM, ("K", 3), unit="eV/Å²", label=True, rotation="vector",
        doc="Hessian-vector products: hvp[:, k] = H v_k, H = d2E/dx dx", **_FLOAT),
    Key("hvp_directions", ATOM, ("K", 3), unit="", label=True, rotation="vector",
        doc="directions v_k of hvp, each of norm 1 over the structure's 3N components",
        dtype="float", checks=("finite", "unit_directions")),
    # provenance (per structure)
    Key("sample_method", LIST, dtype="str", doc="how the structure was sampled: seed, md, rattle, strain, relax"),
    Key("sample_seed", STRUCTURE, (), dtype="int", checks=("non_negative",),
        doc="index of the seed structure in the seed file/list"),
    Key("sample_temperature", STRUCTURE, (), unit="K", checks=("finite", "non_negative"),
        doc="temperature of the sampling (MD), where it applies"),
    Key("sample_group", LIST, dtype="str", doc="group label for splits, e.g. seed3"),
    Key("sample_step", STRUCTURE, (), dtype="int", checks=("non_negative",), doc="step of the sampling run"),
    Key("source_index", STRUCTURE, (), dtype="int", checks=("non_negative",),
        doc="index of the structure in the input file of the labeling run that wrote it (``label``: structure i "
            "of OUT is structure source_index[i] of IN; the same i when no structure failed)"),
    Key("config_type", LIST, dtype="str", doc="configuration type (MACE's config_type)"),
    # neighbor lists
    Key("edge_index", EDGE, (2,), dtype="int", axis=1, atom_index=True, checks=("non_negative",),
        doc="[2, E] (source i, target j) of each edge"),
    Key("shifts", EDGE, (3,), dtype="int", doc="integer cell shifts S: D = x[j] - x[i] + S @ cell"),
    Key("edge_vectors", EDGE, (3,), unit="Å", rotation="vector", doc="edge vectors D", **_FLOAT),
    Key("edge_lengths", EDGE, (), unit="Å", doc="|D|", **_FLOAT),
    # Python objects
    Key("atoms", LIST, dtype="object", doc="ase.Atoms of the structure"),
    # further ASE per-atom arrays and per-structure properties (batched by kind)
    Key("numbers", ATOM, (), dtype="int", checks=("atomic_number",), doc="atomic numbers (ASE's name)"),
    Key("charges", ATOM, (), unit="e", doc="partial charges", **_FLOAT),
    Key("initial_charges", ATOM, (), unit="e", **_FLOAT),
    Key("magmoms", ATOM, (), unit="μB", doc="collinear magnetic moments", **_FLOAT),
    Key("initial_magmoms", ATOM, (), unit="μB", **_FLOAT),
    Key("masses", ATOM, (), unit="amu", **_FLOAT),
    Key("momenta", ATOM, (3,), unit="amu*Å/fs", rotation="vector", **_FLOAT),
    Key("velocities", ATOM, (3,), unit="Å/fs", rotation="vector", **_FLOAT),
    Key("tags", ATOM, (), dtype="int"),
    Key("free_energy", STRUCTURE, (), unit="eV", **_FLOAT),
    Key("dipole", STRUCTURE, (3,), unit="e*Å", label=True, rotation="vector", doc="dipole moment", **_FLOAT),
    Key("virial", STRUCTURE, (3, 3), unit="eV", label=True, rotation="tensor",
        doc="virial W = -V σ, kept as its own label (not turned into a stress)", **_FLOAT),
    Key("charge", STRUCTURE, (), unit="e", **_FLOAT),
    Key("total_charge", STRUCTURE, (), unit="e", doc="total charge of the structure", **_FLOAT),
    Key("magmom", STRUCTURE, (), unit="μB", **_FLOAT),
    Key("spin", STRUCTURE, (), doc="spin state as the file stores it (the multiplicity 2S+1 in MACE/SPICE-style "
        "files; SchNetPack's carbene data stores 0 and 2)", **_FLOAT),
    Key("weight", STRUCTURE, (), doc="per-structure loss weight (MACE's config_weight)", **_FLOAT),
    Key("energy_weight", STRUCTURE, (), **_FLOAT),
    Key("forces_weight", STRUCTURE, (), **_FLOAT),
    Key("stress_weight", STRUCTURE, (), **_FLOAT),
    Key("fixed", ATOM, (), dtype="bool", doc="atom held fixed (ASE FixAtoms constraint, extxyz move_mask=F)"),
    Key("head", LIST, dtype="str", doc="output head / data source of a multi-head model (MACE's head)"),
)

DEFAULT_KEYS = KeyRegistry(BUILTIN_KEYS)

#: the labels a ``Structure`` holds as fields (everything else travels in ``Structure.extras``)
STRUCTURE_LABELS = ("energy", "forces", "stress")
#: teacher-label and provenance keys that readers and writers carry in ``Structure.extras``
EXTRA_LABELS = ("energies", "hvp", "hvp_directions")
PROVENANCE_KEYS = ("sample_method", "sample_seed", "sample_temperature", "sample_group", "sample_step", "config_type",
                   "source_index")
#: keys a structure may carry besides positions/numbers/cell/pbc: labels then provenance
STRUCTURE_EXTRAS = EXTRA_LABELS + PROVENANCE_KEYS


def registry_of(obj: Any, default: KeyRegistry = DEFAULT_KEYS) -> KeyRegistry:
    """``obj`` as a registry: a KeyRegistry or a list of Keys (both added to ``default``), an
    object carrying one as ``key_registry`` (a dataset, a reader: used as it is), or None
    (``default``)."""
    if obj is None:
        return default
    if isinstance(obj, KeyRegistry):
        return obj if obj is default or obj is DEFAULT_KEYS else default.extend(obj)
    own = getattr(obj, "key_registry", None)
    if isinstance(own, KeyRegistry):
        return own
    if isinstance(obj, Key):
        return default.extend([obj])
    if isinstance(obj, (list, tuple, set, frozenset)):
        return default.extend(obj)
    return default


def declare(name: str, kind: str, shape: tuple = (), **fields) -> Key:
    """Shorthand for :class:`Key` (``declare('dipole_ref', 'structure', (3,), rotation='vector')``)."""
    return Key(name, kind, tuple(shape), **fields)


__all__ = [
    "Key", "KeyRegistry", "DEFAULT_KEYS", "BUILTIN_KEYS", "ATOM", "STRUCTURE", "EDGE", "LIST", "KINDS",
    "CHECKS", "BATCH_KEYS", "REQUIRED_KEYS", "STRUCTURAL_KEYS", "STRUCTURE_LABELS", "EXTRA_LABELS",
    "PROVENANCE_KEYS", "STRUCTURE_EXTRAS", "infer_kind", "registry_of", "declare",
]
