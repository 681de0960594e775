"""The packed file layout: names, version, and the header check every opener runs.

One HDF5 file, root attribute ``mlff_distiller_format = 'packed'``; every dataset contiguous and
uncompressed so a reader can memory-map it:

======================  ===========  =========================================================
``positions``           [T, 3]       Å (the source's float dtype; float64 stays float64)
``numbers``             [T]          int64 atomic numbers
``offsets``             [S + 1]      int64; structure s owns atom rows ``offsets[s]:offsets[s+1]``
``cell``                [S, 3, 3]    Å (zeros for a molecule); ``pbc`` [S, 3] bool
``<key>``               [T, ...]     a per-atom key (``forces`` eV/Å, ``energies`` eV, ``hvp`` [T, K, 3])
``<key>``               [S, ...]     a per-structure key (``energy`` eV, ``stress`` [S, 3, 3] eV/Å³,
                                     ``sample_seed``...), each with ``<key>_present`` [S] bool
``<key>``               [S] int32    a string key (``config_type``...): index into ``<key>_strings``
                                     (a uint8 JSON list of the distinct strings), -1 when absent
``edge_index``          [2, E]       int32 per-structure-local (source, target); optional, with
``shifts``              [E, 3]       int32 cell shifts, ``edge_offsets`` [S + 1] int64, attr ``cutoff``,
                                     and ``edge_exact32`` [S] bool (the stored list is also exact for
                                     the positions rounded to float32)
======================  ===========  =========================================================

Rows of structures that lack a key hold NaN (0 for integers) and their ``*_present`` flag is False
(never read as data). Attributes: ``format_version``, ``source`` (path), ``source_format``,
``units`` (JSON of the reader's unit conversions), ``keys`` (JSON list of the declarations of the
stored keys, so keys declared by a user read back), ``metadata`` (JSON: the caller's file metadata,
e.g. ``{"teacher": {...}}``). Version 1 files (energy/forces/stress only) read as before.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import format_error
from ..keys import ATOM, DEFAULT_KEYS, EDGE, LIST, Key, KeyRegistry
from ..readers.base import read_metadata_attr

FORMAT_ATTR = "mlff_distiller_format"
FORMAT_NAME = "packed"
FORMAT_VERSION = 2
#: datasets every packed file has
BASE_NAMES = ("positions", "numbers", "offsets", "cell", "pbc")
#: datasets of stored neighbor lists
EDGE_NAMES = ("edge_index", "shifts", "edge_offsets", "edge_exact32")
PRESENT = "_present"
STRINGS = "_strings"


def fill_value(dtype: np.dtype):
    """What rows of structures without a key hold: NaN for floats, 0 for integers and bools."""
    return np.nan if np.dtype(dtype).kind in "fc" else 0


def attr_text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _json_attr(f, name: str, path: str, default: Any) -> Any:
    if name not in f.attrs:
        return default
    try:
        return json.loads(attr_text(f.attrs[name]))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise format_error(path, None, name, f"attribute is not valid JSON ({exc})") from None


def stored_keys(f, path: str, keys: KeyRegistry = DEFAULT_KEYS) -> dict[str, Key]:
    """The declarations of the keys stored in an open packed file (its ``keys`` attribute, else
    the built-in declarations), by dataset name."""
    declared = {}
    for entry in _json_attr(f, "keys", path, []):
        try:
            key = Key.from_dict(entry)
        except (TypeError, ValueError, KeyError) as exc:
            raise format_error(path, None, "keys", f"bad key declaration {entry!r}: {exc}") from None
        declared[key.name] = key
    out = {}
    for name in f:
        if name in BASE_NAMES or name in EDGE_NAMES or name.endswith(PRESENT) or name.endswith(STRINGS):
            continue
        key = declared.get(name) or keys.get(name)
        if key is None:
            raise format_error(path, None, name, "dataset of an undeclared key (no declaration in the 'keys' attribute)")
        if key.kind == EDGE:
            raise format_error(path, None, name, "per-edge keys are not stored in packed files")
        out[name] = key
    return out


def read_header(f, path: str, keys: KeyRegistry = DEFAULT_KEYS) -> dict:
    """Validate an open packed h5py file; return its sizes, stored keys and attributes.

    Raises ``DataFormatError`` (a ValueError) naming the file and the dataset or attribute."""
    fmt = f.attrs.get(FORMAT_ATTR)
    if fmt is None or attr_text(fmt) != FORMAT_NAME:
        raise format_error(path, None, FORMAT_ATTR, "not a packed file (root attribute missing)")
    try:
        version = int(f.attrs.get("format_version", 0))
    except (TypeError, ValueError):
        raise format_error(path, None, "format_version", "attribute is not an integer") from None
    if version > FORMAT_VERSION:
        raise format_error(path, None, "format_version", f"version {version} is newer than this reader ({FORMAT_VERSION})")
    for name in BASE_NAMES:
        if name not in f:
            raise format_error(path, None, name, "required dataset missing")
    offsets = f["offsets"][()]
    if offsets.ndim != 1 or offsets.shape[0] < 1 or offsets.dtype.kind not in "iu":
        raise format_error(path, None, "offsets", "offsets must be [S + 1] integers")
    s, t = offsets.shape[0] - 1, int(offsets[-1])
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise format_error(path, None, "offsets", "offsets must start at 0 and never decrease")
    expected = {"positions": (t, 3), "numbers": (t,), "cell": (s, 3, 3), "pbc": (s, 3)}
    key_map = stored_keys(f, path, keys)
    for name, key in key_map.items():
        if key.kind == LIST:
            expected[name] = (s,)
            expected[name + STRINGS] = None
        else:
            lead = t if key.kind == ATOM else s
            actual = tuple(f[name].shape)
            if not actual or actual[0] != lead or not key.fits_row(actual[1:]):
                raise format_error(path, None, name, f"has shape {list(actual)}, expected {lead} rows of "
                                                     f"{key.describe_shape()}")
            expected[name] = actual
        expected[name + PRESENT] = (s,)
    if "edge_index" in f:
        if "edge_offsets" not in f:
            raise format_error(path, None, "edge_offsets", "dataset missing (the file stores edge_index)")
        e = int(f["edge_offsets"][-1]) if f["edge_offsets"].shape[0] else -1
        expected.update({"edge_offsets": (s + 1,), "edge_index": (2, e), "shifts": (e, 3)})
        if "edge_exact32" in f:
            expected["edge_exact32"] = (s,)
    for name, shape in expected.items():
        if name not in f:
            raise format_error(path, None, name, "dataset missing" + (f" (expected shape {list(shape)})" if shape else ""))
        if shape is not None and tuple(f[name].shape) != shape:
            raise format_error(path, None, name, f"has shape {list(f[name].shape)}, expected {list(shape)}")
    strings = {}
    for name, key in key_map.items():
        if key.kind == LIST:
            try:
                values = json.loads(bytes(f[name + STRINGS][()]).decode())
            except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as exc:
                raise format_error(path, None, name + STRINGS, f"not a JSON list of strings ({exc})") from None
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise format_error(path, None, name + STRINGS, "not a JSON list of strings")
            strings[name] = values
    cutoff = f.attrs.get("cutoff")
    if cutoff is not None:
        try:
            cutoff = float(cutoff)
        except (TypeError, ValueError):
            cutoff = float("nan")
        if not (np.isfinite(cutoff) and cutoff > 0):
            raise format_error(path, None, "cutoff", f"attribute must be a positive number of Å, got {f.attrs['cutoff']!r}")
    return {
        "version": version,
        "num_structures": s,
        "num_atoms": t,
        "names": list(expected) + ["offsets"],
        "keys": key_map,
        "strings": strings,
        "units": _json_attr(f, "units", path, {}),
        "metadata": read_metadata_attr(f, path),
        "cutoff": None if cutoff is None else float(cutoff),
        "source": attr_text(f.attrs.get("source", "")),
    }


__all__ = ["FORMAT_ATTR", "FORMAT_NAME", "FORMAT_VERSION", "BASE_NAMES", "EDGE_NAMES", "read_header",
           "stored_keys", "fill_value", "attr_text"]
