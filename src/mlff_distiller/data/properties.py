"""Extra properties a reader takes from a file besides energy/forces/stress: ``properties=[...]``.

``MolecularDataset(path, properties=["charges", "dipole", "total_charge", "spin"])`` (or a dict
``{"dipole": "dft_dipole"}``, name -> key in the file) reads each property into
``Structure.extras`` under its name, validated and converted by the property's declaration in the
key registry (``keys.py``: kind, row shape, dtype, unit). A name given without a key is looked
up under its conventional spellings (:data:`PROPERTY_ALIASES`, e.g. ``spin`` is found as
``spin_multiplicity``, ``total_spin`` or ``spin``); a dict value names the key exactly.

Where each format keeps them (``PropertySource``: one mapping of stored values per place, with
the kind that place implies):

- extended XYZ: per-atom ``Properties`` columns (per atom) and comment-line values (per
  structure; strings are ``'list'`` keys); ``fixed`` from ``move_mask`` (``fixed = ~move_mask``).
- ASE db: calculator results (``charges``/``magmoms`` per atom, ``dipole``/``magmom``/
  ``free_energy`` per structure), per-atom arrays (``initial_charges``, ``initial_magmoms``,
  ``tags``, ``masses``, ``momenta``), ``fixed`` from ``FixAtoms`` constraints (rows that store
  constraints; a row without any has no ``fixed`` value, i.e. a False mask in batches), key-value pairs
  (per structure) and ``row.data`` (kind from the declaration only).
- HDF5 (SPICE, ANI, modelforge): datasets of a conformer group, with their unit attributes.

A name not declared in the registry is declared from the place its values are found (an extxyz
column is per atom, a comment value per structure; row shape and dtype from the first value), as
an invariant key without unit; a value in a place that does not tell the kind (``row.data``,
an HDF5 dataset without modelforge's ``format`` attribute) needs a declaration; numbers of a
comment line or key-value pair are declared float (a file writes ``mu=0`` and ``mu=1.6``)
(``MolecularDataset(..., extra_keys=[Key(name, 'atom' | 'structure', shape)])``) — never a guess
from its shape. Values are stored as the file holds them (float64 bit for bit), times the unit
factor where the file's unit (``reader.units``) differs from the declared one. A SchNetPack
leading batch axis (``(1,)`` + row) and a trailing singleton of a per-atom scalar (``(N, 1)``)
are dropped; a [3, 3] key also takes Voigt 6 or 9 values (``labels.to_matrix``).

A requested property found in no structure of the file is a ``KeyError`` listing the keys the
file has (``required=False`` makes it optional: ``validate`` asks for ``total_charge``/``spin``
that way).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np

from .errors import DataFormatError, format_error
from .keys import ATOM, LIST, STRUCTURE, Key, KeyRegistry
from .labels import to_matrix
from .units import LabelUnits, UnitError, convert_to

#: conventional spellings tried, in order, for a property requested by name only
PROPERTY_ALIASES: dict[str, tuple[str, ...]] = {
    "charges": ("charges", "REF_charges", "partial_charges", "mbis_charges"),
    "magmoms": ("magmoms", "REF_magmoms"),
    "total_charge": ("total_charge", "charge", "REF_total_charge"),
    "spin": ("spin_multiplicity", "total_spin", "spin", "multiplicity"),
    "dipole": ("dipole", "REF_dipole", "dipole_moment", "scf_dipole", "dipole_moment_per_system"),
    "virial": ("virial", "virials", "REF_virial", "REF_virials"),
    "weight": ("weight", "config_weight"),
    "energy_weight": ("energy_weight", "config_energy_weight"),
    "forces_weight": ("forces_weight", "config_forces_weight"),
    "stress_weight": ("stress_weight", "config_stress_weight"),
    "fixed": ("fixed", "move_mask"),
    "head": ("head",),
    "config_type": ("config_type",),
}

#: (property, stored key) -> how the stored value becomes the property (``fixed = ~move_mask``)
TRANSFORMS: dict[tuple[str, str], Callable[[Any], Any]] = {
    ("fixed", "move_mask"): lambda v: ~np.asarray(v, dtype=bool),
}


@dataclass(frozen=True)
class Property:
    """One requested property: its ``name`` (the sample/batch key), the ``keys`` to look for in
    the file (empty: :data:`PROPERTY_ALIASES`, else the name itself) and whether a file holding it
    nowhere is an error (``required``)."""

    name: str
    keys: tuple[str, ...] = ()
    required: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"property name must be an identifier, got {self.name!r}")
        object.__setattr__(self, "keys", tuple(self.keys))

    @property
    def candidates(self) -> tuple[str, ...]:
        return self.keys or PROPERTY_ALIASES.get(self.name, (self.name,))


PropertiesLike = Union[None, str, Mapping, Iterable]


def parse_properties(spec: PropertiesLike) -> tuple[Property, ...]:
    """``properties=`` as ``Property`` objects. Accepts None, ``"charges,dipole=dft_dipole"``
    (the CLI's ``--properties``), a list of names / ``Property`` / ``(name, key)`` pairs, or a dict
    name -> key (or list of keys). ValueError for a malformed entry or a name given twice."""
    if spec is None:
        return ()
    items: list[Property] = []
    if isinstance(spec, str):
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            name, eq, key = part.partition("=")
            items.append(Property(name.strip(), tuple(k.strip() for k in key.split("|") if k.strip()) if eq else ()))
    elif isinstance(spec, Mapping):
        for name, key in spec.items():
            keys = (key,) if isinstance(key, str) else tuple(key or ())
            items.append(Property(str(name), keys))
    else:
        for entry in spec:
            if isinstance(entry, Property):
                items.append(entry)
            elif isinstance(entry, str):
                items.extend(parse_properties(entry))
            elif isinstance(entry, (tuple, list)) and len(entry) == 2:
                items.append(Property(str(entry[0]), (entry[1],) if isinstance(entry[1], str) else tuple(entry[1])))
            else:
                raise ValueError(f"properties: cannot read entry {entry!r} (a name, a (name, key) pair or a Property)")
    seen: dict[str, Property] = {}
    for p in items:
        if p.name in seen:
            if seen[p.name] == p or (not p.required and not seen[p.name].keys):
                continue
            if not seen[p.name].required and not p.keys:
                seen[p.name] = p
                continue
            raise ValueError(f"properties: {p.name!r} is requested twice")
        seen[p.name] = p
    return tuple(seen.values())


@dataclass
class PropertySource:
    """One place a structure keeps values: ``values`` (a mapping key -> stored value), the kind
    that place implies (``'atom'``, ``'structure'`` or None when the place does not tell),
    ``where`` (for messages) and ``unit(key)``: the unit the file records for a key (or None)."""

    values: Mapping
    kind: Optional[str]
    where: str
    unit: Callable[[str], Any] = lambda key: None
    read: Optional[Callable[[Mapping, str], Any]] = None

    def get(self, key: str) -> Any:
        return self.read(self.values, key) if self.read is not None else self.values[key]


def _fit_shape(decl: Key, value: Any, natoms: int) -> Any:
    """Drop a SchNetPack leading batch axis, a per-atom scalar's trailing 1 and a modelforge
    per-system scalar's 1; Voigt/9 values of a [3, 3] key become the matrix (shape errors are
    left to ``Key.check``, which names the file, structure and key)."""
    if decl.kind == LIST:
        if isinstance(value, np.ndarray) and value.shape == (1,) and value.dtype.kind in "OSU":
            value = value[0]
        return value
    arr = np.asarray(value)
    shape = tuple(d for d in decl.shape)
    if decl.kind == STRUCTURE:
        concrete = all(isinstance(d, int) for d in shape)
        if concrete and arr.shape == (1, *shape):
            return arr.reshape(shape)
        if shape == () and arr.size == 1 and arr.ndim <= 2:
            return arr.reshape(())
        return arr
    if decl.kind == ATOM:
        if arr.ndim == len(shape) + 2 and arr.shape[0] == 1 and arr.shape[1] == natoms:
            arr = arr[0]
        if shape == () and arr.shape == (natoms, 1):
            arr = arr.reshape(natoms)
        return arr
    return arr


def declare_from(name: str, source: PropertySource, key: str, value: Any, natoms: int) -> Key:
    """A declaration for an undeclared property from where and how it is stored (see module
    docstring); KeyError asking for a declaration when the place does not tell the kind."""
    if name in ("fixed",):
        return Key(name, ATOM, (), dtype="bool")
    if source.kind is None:
        raise KeyError(
            f"property {name!r} (stored as {key!r} in {source.where}) is not declared and {source.where} does not "
            f"say whether it is per atom or per structure; declare it: extra_keys=[Key({name!r}, 'atom' | "
            "'structure', shape=...)] (mlff_distiller.data.keys.Key)"
        )
    if isinstance(value, (str, bytes)) or (isinstance(value, np.ndarray) and value.dtype.kind in "SUO"):
        if source.kind == ATOM:
            raise KeyError(f"property {name!r}: per-atom strings ({key!r} in {source.where}) cannot be batched")
        return Key(name, LIST, dtype="str", doc=f"read from {key!r}")
    arr = np.asarray(value)
    kind = {"f": "float", "i": "int", "u": "int", "b": "bool"}.get(arr.dtype.kind)
    if kind is None:
        raise KeyError(f"property {name!r}: {key!r} in {source.where} holds {arr.dtype} values, not numbers")
    shape = arr.shape[1:] if source.kind == ATOM else arr.shape
    if source.kind == STRUCTURE and kind == "int":
        kind = "float"  # a comment-line / key-value number: 0 in one structure, 1.6 in the next
    checks = ("finite",) if kind == "float" else ()
    return Key(name, source.kind, tuple(shape), dtype=kind, checks=checks, doc=f"read from {key!r}")


def find(prop: Property, sources: Iterable[PropertySource]) -> Optional[tuple[PropertySource, str]]:
    """(source, key) of the first candidate key of ``prop`` found, candidates first, then sources."""
    sources = list(sources)
    for key in prop.candidates:
        for source in sources:
            if key in source.values:
                return source, key
    return None


def unit_factor(decl: Key, source: PropertySource, key: str, units: Optional[LabelUnits], *, path: str,
                index: Optional[int], name: str) -> float:
    """The factor taking ``key``'s stored values to ``decl.unit``: the user's option for that unit
    (``energy_unit`` for an eV key...), else the unit the file records, else 1."""
    if units is not None:
        option = units.for_unit(decl.unit)
        if option is not None:
            return option
    stored = source.unit(key)
    if stored is None:
        return 1.0
    try:
        return convert_to(stored, decl.unit)
    except UnitError as exc:
        raise format_error(path, index, key, f"unit of property {name!r}: {exc}") from None


def read_properties(
    props: Iterable[Property],
    sources: Iterable[PropertySource],
    keys: KeyRegistry,
    *,
    natoms: int,
    path: str,
    index: Optional[int],
    units: Optional[LabelUnits] = None,
    used: Optional[dict] = None,
    nan_as_missing: bool = False,
) -> dict:
    """The requested properties a structure carries: name -> validated value (in its declared
    unit). Properties absent from every source are absent from the result. ``used`` (name -> set
    of keys) records the key each one came from; ``nan_as_missing``: a value that is all NaN is
    absent (ANI/SPICE mark uncomputed values so) rather than an error."""
    sources = list(sources)
    out = {}
    for prop in props:
        hit = find(prop, sources)
        if hit is None:
            continue
        source, key = hit
        decl = keys.require(prop.name, where=path)
        try:
            raw = source.get(key)
        except (ValueError, KeyError) as exc:
            raise format_error(path, index, key, f"{source.where}: {exc}") from None
        if raw is None:  # a source's way of saying "not for this structure" (MACE's "None")
            continue
        if nan_as_missing and isinstance(raw, np.ndarray) and raw.dtype.kind == "f" and raw.size \
                and np.isnan(raw).all():
            continue
        transform = TRANSFORMS.get((prop.name, key))
        if transform is not None:
            raw = transform(raw)
        if decl.kind != LIST and decl.shape[-2:] == (3, 3) and len(decl.shape) == 2:
            raw = to_matrix(raw, path=path, index=index, key=key)
        value = decl.check(_fit_shape(decl, raw, natoms), natoms=natoms, path=path, index=index, key=key)
        if decl.kind != LIST and decl.dtype == "float":
            factor = unit_factor(decl, source, key, units, path=path, index=index, name=prop.name)
            if factor != 1.0:
                value = np.asarray(value, dtype=np.float64) * factor
        out[prop.name] = value
        if used is not None:
            used.setdefault(prop.name, set()).add(key)
    return out


def declare_properties(
    props: Iterable[Property],
    registry: KeyRegistry,
    probe: Callable[[int], list[PropertySource]],
    natoms: Callable[[int], int],
    total: int,
    *,
    path: str,
    first: int = 20,
    units: Optional[dict] = None,
) -> KeyRegistry:
    """``registry`` with a declaration for every requested property it lacks, taken from the first
    structure holding it (``probe(i)`` gives structure ``i``'s sources); the first ``first``
    structures, then the rest, are searched. Required properties found nowhere: KeyError naming
    the file and the keys its first structures hold. ``units`` (a reader's ``units`` dict) gets a
    description of each property's unit conversion, from the first structure holding it."""
    # a declared optional property needs no look at the file (absent values are simply absent)
    pending = [p for p in props if p.required or p.name not in registry]
    if not pending or total == 0:
        return registry
    new: list[Key] = []
    order = list(range(min(first, total))) + list(range(min(first, total), total))
    for i in order:
        if not pending:
            break
        sources = probe(i)
        for prop in list(pending):
            hit = find(prop, sources)
            if hit is None or hit[0].get(hit[1]) is None:
                continue
            pending.remove(prop)
            source, key = hit
            if prop.name not in registry:
                new.append(declare_from(prop.name, source, key, source.get(key), natoms(i)))
            decl = registry.get(prop.name) or new[-1]
            stored = source.unit(key)
            if units is not None and stored is not None and decl.dtype == "float":
                try:
                    factor = convert_to(stored, decl.unit)
                except UnitError as exc:
                    raise format_error(path, i, key, f"unit of property {prop.name!r}: {exc}") from None
                units[prop.name] = f"{key}: {stored} -> {decl.unit or '(no unit)'} (x{factor:.12g})"
    missing = [p for p in pending if p.required]
    if missing:
        held = sorted({str(k) for s in probe(0) for k in s.values if not str(k).startswith("_")})
        wanted = ", ".join(f"{p.name!r} (looked for {', '.join(p.candidates)})" for p in missing)
        raise KeyError(f"{path}: properties {wanted} not found in any of its {total} structures; keys found: {held}")
    return registry.extend(new) if new else registry


def check_stored_properties(path: str, properties: PropertiesLike, stored: Iterable[str]) -> None:
    """A packed file keeps the properties read when it was packed, under their names: KeyError
    for a required property it does not store."""
    stored = set(stored)
    missing = [p.name for p in parse_properties(properties) if p.required and p.name not in stored]
    if missing:
        raise KeyError(f"{path}: properties {missing} are not stored in this packed file "
                       f"(stored keys: {sorted(stored)}); pack it again with properties=...")


def describe_keys(used: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """name -> the key(s) it was read from, e.g. {'energy': 'REF_energy', 'dipole': 'dft_dipole'}."""
    return {name: ", ".join(sorted(keys)) for name, keys in used.items() if keys}


_SMILES_BRACKET = re.compile(r"\[([^\]]*)\]")
_SMILES_CHARGE = re.compile(r"(\++|-+)(\d*)(?::\d+)?$")


def smiles_total_charge(smiles: str) -> int:
    """The total charge of a SMILES string: the sum of the formal charges of its bracket atoms
    (``[N+:9]`` +1, ``[O-]`` -1, ``[Fe+2]``/``[Fe++]`` +2); atoms outside brackets carry none."""
    total = 0
    for atom in _SMILES_BRACKET.findall(smiles):
        m = _SMILES_CHARGE.search(atom)
        if m is None:
            continue
        signs, digits = m.group(1), m.group(2)
        magnitude = int(digits) if digits else len(signs)
        total += magnitude if signs[0] == "+" else -magnitude
    return total


__all__ = [
    "PROPERTY_ALIASES", "Property", "PropertySource", "parse_properties", "read_properties", "declare_properties",
    "declare_from", "describe_keys", "smiles_total_charge", "check_stored_properties", "DataFormatError",
]
