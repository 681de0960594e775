"""HDF5 layouts, one module each, and the detection order used by ``Hdf5Reader``.

| layout          | module          | what it reads                                                  |
|-----------------|-----------------|----------------------------------------------------------------|
| guide           | guide.py        | ``structures/<i>/{positions,species,cell,pbc,energy,forces}``  |
| mace            | mace.py         | MACE preprocessed shards ``config_batch_*/config_*``           |
| schnetpack_md   | schnetpack_md.py| schnetpack 1.x MD log (``molecules`` + ``properties``)          |
| deepmd          | deepmd.py       | DeePMD HDF5 (``type.raw``, ``set.*/coord.npy``...)              |
| spice           | spice.py        | SPICE (``conformations``, ``dft_total_gradient``...)             |
| modelforge      | modelforge.py   | modelforge v1.1 (``positions`` with pint ``u`` attributes)      |
| ani, ani1       | ani.py          | ANI-1/1x/2x (``coordinates``, ``species``, ``energies``...)      |

The packed layout (root attribute ``mlff_distiller_format == 'packed'``) is not here: the
reader hands such files to ``readers.packed.PackedReader``.

``layout=`` forces a layout, but never onto a file that does not look like it: every layout's
constructor checks ``Layout.accepts`` and raises the error built in ``forced.py`` (file, what it
holds, what the layout needs, the supported layouts, the layout detection finds).
"""

from __future__ import annotations

import importlib

import h5py

from ._h5 import LinkPolicy
from .base import H5Files, Layout, LayoutContext

#: layout name -> "module:Class", in detection order
LAYOUTS: dict[str, str] = {
    "guide": "guide:GuideLayout",
    "mace": "mace:MaceLayout",
    "schnetpack_md": "schnetpack_md:SchnetpackMdLayout",
    "deepmd": "deepmd:DeepmdLayout",
    "spice": "spice:SpiceLayout",
    "modelforge": "modelforge:ModelforgeLayout",
    "ani": "ani:AniLayout",
    "ani1": "ani:Ani1Layout",
}

PACKED = "packed"
PACKED_ATTR = "mlff_distiller_format"

#: spellings accepted by ``layout=``
ALIASES = {
    "ani1x": "ani",
    "ani2x": "ani",
    "torchani": "ani",
    "schnetpack": "schnetpack_md",
    "spk_md": "schnetpack_md",
    "dpdata": "deepmd",
    "deepmd/hdf5": "deepmd",
    "mace_prepare_data": "mace",
    "default": "guide",
}


def supported_layouts() -> list[str]:
    return [*LAYOUTS, PACKED]


def normalize_layout(name: str) -> str:
    key = str(name).lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in LAYOUTS and key != PACKED:
        raise ValueError(f"unknown HDF5 layout {name!r}; supported layouts: {', '.join(supported_layouts())}")
    return key


def layout_class(name: str) -> type[Layout]:
    module, cls = LAYOUTS[normalize_layout(name)].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def is_packed(f: h5py.File) -> bool:
    value = f.attrs.get(PACKED_ATTR)
    if isinstance(value, bytes):
        value = value.decode()
    return value == PACKED


def detect_layout(f: h5py.File, policy: LinkPolicy | None = None) -> str | None:
    """The first layout (in ``LAYOUTS`` order) whose ``detect`` accepts the open file, or None.

    policy: the links detection may follow. The guide and MACE layouts look at the root's
    links only (the caller checks those); before any other layout looks deeper, the whole
    file's links are checked (``LinkPolicy.scan``), so detection never opens another file.
    """
    if is_packed(f):
        return PACKED
    for name in LAYOUTS:
        if name == "ani1":
            continue
        cls = layout_class(name)
        if policy is not None and not cls.checks_links:
            policy.scan(f.id)
        if cls.detect(f):
            return name
    return None


__all__ = [
    "ALIASES",
    "H5Files",
    "LAYOUTS",
    "Layout",
    "LayoutContext",
    "PACKED",
    "PACKED_ATTR",
    "detect_layout",
    "is_packed",
    "layout_class",
    "normalize_layout",
    "supported_layouts",
]
