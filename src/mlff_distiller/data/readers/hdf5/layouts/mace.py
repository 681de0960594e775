"""MACE's preprocessed shards (``mace_prepare_data`` / ``preprocess_data.py``).

Each shard (``train/train_0.h5``, ``train/train_1.h5``, ...) holds
``config_batch_<b>/config_<c>/`` with ``atomic_numbers`` [N], ``positions`` [N, 3] Å, ``cell``
[3, 3], ``pbc`` [3], ``weight``, ``config_type``, ``properties/<name>`` (``energy`` eV,
``forces`` [N, 3] eV/Å, ``stress`` eV/Å³ (Voigt 6 or 3x3), ``virials`` [3, 3] eV, ``dipole``,
``charges``, ...) and ``property_weights/<name>``. MACE writes the string ``"None"`` for a value
a configuration does not have (also for ``cell``/``pbc`` of a molecule); such a label is absent.
Older shards keep the labels directly in the configuration group; both are read.

A reader spans all shards of a split at once (structures in shard order, then batch and
configuration number). Units are MACE's (ASE's): no conversion. ``weight``,
``property_weights``, ``config_type`` and ``head`` are training settings, not labels, and are
not returned; the file attribute ``drop_last`` is ignored (every stored configuration is read).
"""

from __future__ import annotations

import re
from typing import Optional

import h5py
import numpy as np
from h5py import h5d, h5g

from ....keys import STRUCTURE_LABELS
from ....structure import Structure
from ._h5 import DatasetReader, RefusedInput, check_declared_size, is_none_marker, member_names
from .base import H5Files, Layout, LayoutContext

BATCH = re.compile(r"config_batch_(0|[1-9][0-9]*)$")
CONFIG = re.compile(r"config_(0|[1-9][0-9]*)$")
#: configurations inspected at construction for an explicitly configured label key
KEY_CHECK = 20


def _numbered(names, pattern: re.Pattern) -> list[int]:
    return sorted(int(m.group(1)) for m in (pattern.match(n) for n in names) if m)


class MaceLayout(Layout):
    name = "mace"
    multi_file = True
    signature = "config_batch_<b>/config_<c> groups at the root of every shard"
    checks_links = True

    @classmethod
    def detect(cls, f: h5py.File) -> bool:
        return any(BATCH.match(n) for n in f.keys())

    def __init__(self, files: H5Files, ctx: LayoutContext) -> None:
        super().__init__(files, ctx)
        file_idx: list[int] = []
        batch_idx: list[int] = []
        config_idx: list[int] = []
        natoms: list[int] = []
        policy = files.policy
        for k in range(len(files)):
            f = files[k]
            names = policy.members(f.id, "")
            batches = _numbered(names, BATCH)
            if not batches:
                raise ctx.error(None, None, f"not a MACE shard: no config_batch_* groups (found {names[:20]})", file_index=k)
            for b in batches:
                bid = h5g.open(f.id, f"config_batch_{b}".encode())
                cnames = policy.members(bid, f"config_batch_{b}")
                configs = _numbered(cnames, CONFIG)
                if len(configs) != len(cnames):
                    odd = [n for n in cnames if not CONFIG.match(n)][:5]
                    raise ctx.error(len(natoms), f"config_batch_{b}", f"unexpected members {odd}", file_index=k)
                for c in configs:
                    where = f"config_batch_{b}/config_{c}/positions"
                    try:
                        policy.check_link(bid, f"config_{c}/positions", where)
                        ds = h5d.open(bid, f"config_{c}/positions".encode())
                        check_declared_size(ds, where)
                    except KeyError:
                        raise ctx.error(len(natoms), where, "missing positions dataset", file_index=k) from None
                    except RefusedInput as exc:
                        raise ctx.error(len(natoms), where, exc.problem, file_index=k) from None
                    shape = ds.shape
                    if shape is None or len(shape) != 2 or shape[1] != 3:
                        raise ctx.error(len(natoms), where, f"positions have shape {shape}, expected (N, 3)", file_index=k)
                    file_idx.append(k)
                    batch_idx.append(b)
                    config_idx.append(c)
                    natoms.append(shape[0])
        self._file = np.array(file_idx, dtype=np.int32)
        self._batch = np.array(batch_idx, dtype=np.int64)
        self._config = np.array(config_idx, dtype=np.int64)
        self.natoms = np.array(natoms, dtype=np.int64)
        self._candidates = {
            label: self.candidates(label, ctx.keys.candidates(label)) for label in STRUCTURE_LABELS
        }
        self._check_configured_keys(files)
        self.record_unit("positions", "Å (MACE convention, no conversion)")
        self.record_unit("energy", "eV (MACE convention, no conversion)")
        self.record_unit("forces", "eV/Å (MACE convention, no conversion)")
        self.record_unit("stress", "eV/Å^3, or virials W in eV -> -W/V (MACE convention)")

    def _group(self, files: H5Files, index: int):
        k = int(self._file[index])
        path = f"config_batch_{self._batch[index]}/config_{self._config[index]}"
        return k, path, h5g.open(files[k].id, path.encode())

    def _label_group(self, gid, present: list[str], policy=None, where: str = ""):
        """The group holding the labels (``properties/`` in current MACE, the config itself before);
        with a link ``policy`` its links are checked."""
        if "properties" in present:
            pid = h5g.open(gid, b"properties")
            names = member_names(pid) if policy is None else policy.members(pid, f"{where}/properties")
            return pid, names, "properties/"
        return gid, present, ""

    def _check_configured_keys(self, files: H5Files) -> None:
        explicit = [label for label in STRUCTURE_LABELS if not self.ctx.keys.is_default(label)]
        if not explicit:
            return
        seen: set[str] = set()
        for i in range(min(len(self), KEY_CHECK)):
            _, _, gid = self._group(files, i)
            seen.update(self._label_group(gid, member_names(gid))[1])
        for label in explicit:
            if self.ctx.keys.key(label) not in seen:
                raise self.missing_key(label, seen)

    def property_sources(self, files: H5Files, index: int) -> list:
        """A configuration's ``weight``/``config_type``/``head`` (per structure) and its
        ``properties/`` (``dipole``, ``charges``, ``virials``, ``total_charge``...; kinds from the
        key declarations); a value MACE wrote as ``"None"`` is absent."""
        from ....keys import STRUCTURE
        from ....properties import PropertySource

        k, path, gid = self._group(files, index)
        present = files.policy.members(gid, path)
        lid, names, prefix = self._label_group(gid, present, files.policy, path)
        config = [n for n in present if n not in _STRUCTURAL]
        sources = [PropertySource(_MaceValues(gid, config, files, path), STRUCTURE, "the configuration group")]
        if prefix:
            sources.append(PropertySource(_MaceValues(lid, names, files, f"{path}/properties"), None, "properties/"))
        return sources

    def label_keys(self, files: H5Files, index: int) -> list[str]:
        _, _, gid = self._group(files, index)
        return sorted(self._label_group(gid, member_names(gid))[1])

    def read(self, files: H5Files, index: int) -> Structure:
        k, path, gid = self._group(files, index)
        policy = files.policy
        try:
            present = policy.members(gid, path)
        except RefusedInput as exc:
            raise self.ctx.error(index, exc.where, exc.problem, file_index=k) from None
        dtypes = files.dtypes

        def value(parent, name: str):
            where = f"{path}/{name}" if parent is gid else f"{path}/properties/{name}"
            try:
                reader = DatasetReader.open(parent, name, dtypes, where=where)
                policy.check_dataset(reader.ds, where)
                out = reader.all()
            except RefusedInput as exc:
                raise self.ctx.error(index, where, exc.problem, file_index=k) from None
            except (KeyError, RuntimeError, ValueError, TypeError, OSError) as exc:  # h5py on a corrupt file
                raise self.ctx.error(index, where, f"cannot read ({type(exc).__name__}: {exc})", file_index=k) from None
            return None if is_none_marker(out) else out

        if "atomic_numbers" not in present:
            raise self.ctx.error(index, f"{path}/atomic_numbers", "missing atomic_numbers", file_index=k)
        numbers = value(gid, "atomic_numbers")
        if numbers is None or np.asarray(numbers).dtype.kind not in "iu":
            raise self.ctx.error(index, f"{path}/atomic_numbers", "atomic numbers must be integers", file_index=k)
        positions = value(gid, "positions")
        if positions is None:
            raise self.ctx.error(index, f"{path}/positions", "positions are 'None'", file_index=k)
        cell = value(gid, "cell") if "cell" in present else None
        pbc = value(gid, "pbc") if "pbc" in present else None
        try:
            lid, label_names, prefix = self._label_group(gid, present, policy, path)
        except RefusedInput as exc:
            raise self.ctx.error(index, exc.where, exc.problem, file_index=k) from None
        keys = {"positions": f"{path}/positions", "numbers": f"{path}/atomic_numbers"}
        labels: dict[str, Optional[np.ndarray]] = {}
        for label, candidates in self._candidates.items():
            # MACE stores every property, "None" where absent: take the first one with a value
            # (a configuration may carry virials while its stress is "None")
            for key in candidates:
                if key not in label_names:
                    continue
                v = value(lid, key)
                if v is not None:
                    labels[label] = v
                    keys[label] = f"{path}/{prefix}{key}"
                    break
        if cell is not None:
            cell = np.asarray(cell)
        return self.finish(
            index,
            positions=np.asarray(positions),
            numbers=np.asarray(numbers).astype(np.int64, copy=False).reshape(-1),
            cell=cell,
            pbc=pbc,
            keys=keys,
            file_index=k,
            **labels,
        )


#: datasets of a MACE configuration group that are not per-structure properties
_STRUCTURAL = ("atomic_numbers", "positions", "cell", "pbc", "properties", "property_weights")


class _MaceValues(dict):
    """Datasets ``names`` of one group read on access; MACE's ``"None"`` reads as None (absent)."""

    def __init__(self, gid, names, files: H5Files, where: str) -> None:
        super().__init__()
        self._gid, self._names, self._files, self._where = gid, set(names), files, where

    def __contains__(self, name) -> bool:
        return name in self._names

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, name: str):
        if name not in self._names:
            raise KeyError(name)
        reader = DatasetReader.open(self._gid, name, self._files.dtypes, where=f"{self._where}/{name}")
        self._files.policy.check_dataset(reader.ds, f"{self._where}/{name}")
        out = reader.all()
        return None if is_none_marker(out) else out

