"""Units SchNetPack declares in an ASE database's metadata, as conversion factors to ASE units.

``metadata['_distance_unit']`` scales positions and cell to Å; ``metadata['_property_unit_dict']``
gives each property key's unit (energy -> eV, forces -> eV/Å, stress -> eV/Å³, a virial key ->
eV; other properties -> their declared unit, see ``properties.py``). Conversions come from
:mod:`mlff_distiller.data.units`; they apply to values read from key_value_pairs/data, never to
calculator results (ASE keeps those in its own units). The user's unit options
(``energy_unit=``... , ``units.LabelUnits``) override the metadata and apply to every source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ...labels import LabelKeys, is_virial_key
from ...structure import LABEL_NAMES
from ...units import LabelUnits, UnitError, conversion
from .rows import ErrorFn


@dataclass
class DbUnits:
    """Factors to ASE units read from a database's metadata (1.0 where nothing is declared)."""

    #: Å per stored length unit (positions and cell)
    distance: float = 1.0
    #: (label, key) -> factor for values of ``key`` read as ``label``
    factors: dict[tuple[str, str], float] = field(default_factory=dict)
    #: label -> description of the conversions applied, for ``reader.units``
    described: dict[str, str] = field(default_factory=dict)
    #: key -> unit as ``metadata['_property_unit_dict']`` records it (for properties)
    property_units: dict = field(default_factory=dict)


def read_db_units(metadata, keys: LabelKeys, error: ErrorFn, options: Optional[LabelUnits] = None) -> DbUnits:
    """The conversions a SchNetPack ``metadata`` declares for every key a label may be read from,
    with the user's ``options`` overriding them (their descriptions replace the metadata's).

    DataFormatError (via ``error``) for an unknown unit or a malformed unit dict.
    """
    out = DbUnits()
    if options is not None and options.length is not None:
        out.distance = options.length.factor
    out.described.update(options.describe() if options is not None else {})
    if not isinstance(metadata, dict):
        return out
    distance = metadata.get("_distance_unit")
    if distance is not None and not (options is not None and options.length is not None):
        try:
            conv = conversion(distance, "positions")
        except UnitError as exc:
            raise error(None, "_distance_unit", f"metadata: {exc}") from None
        out.distance = conv.factor
        if conv.factor != 1.0:
            out.described["positions"] = conv.describe("_distance_unit")
    units = metadata.get("_property_unit_dict")
    if units is None:
        return out
    if not isinstance(units, dict):
        raise error(None, "_property_unit_dict", "metadata entry is not a dict")
    out.property_units = dict(units)
    for label in LABEL_NAMES:
        if label in out.described and options is not None and getattr(options, label) is not None:
            continue  # the option overrides the metadata
        notes = []
        for key in keys.candidates(label):
            if key not in units:
                continue
            quantity = "virial" if (label == "stress" and is_virial_key(key)) else label
            try:
                conv = conversion(units[key], quantity)
            except UnitError as exc:
                raise error(None, key, f"metadata '_property_unit_dict': {exc}") from None
            out.factors[(label, key)] = conv.factor
            if conv.factor != 1.0:
                notes.append(conv.describe(key))
        if notes:
            out.described[label] = "; ".join(notes)
    return out


__all__ = ["DbUnits", "read_db_units"]
