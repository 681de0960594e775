"""Raw structures -> samples, in one place; and the lazy batch of samples a dataset hands the loader.

A sample is a dict: ``positions`` [N, 3] Å, ``species`` [N] int64, ``cell`` [3, 3] Å, ``pbc`` [3]
bool, ``natoms`` [] int64, ``idx`` [] int64, the labels the structure carries (``energy`` [] eV,
``forces`` [N, 3] eV/Å, ``stress`` [3, 3] eV/Å³, ``energies`` [N] eV, ``hvp`` /
``hvp_directions`` [N, K, 3]) and its other declared extras (numbers as tensors, strings as
``str``). Float values are in the dataset's dtype, integers int64.

``SampleList`` is what ``MolecularDataset.__getitems__`` returns for a batch of indices: the raw
structures as one ``StructureBatch`` plus what makes samples of them (dtype, transform, keys). A
collate function that just indexes it sees the usual sample dicts; the project's collate calls
:meth:`SampleList.collate`, which batches the raw columns directly when there is no transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional

import numpy as np
import torch

from .collate import collate_columns
from .indices import check_index
from .keys import DEFAULT_KEYS, LIST, STRUCTURE_LABELS, KeyRegistry
from .structure import Structure, structure_to_atoms
from .structure_batch import Column, StructureBatch

#: numpy float dtypes converted exactly as torch rounds them (others are converted by torch)
_NUMPY_FLOAT = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


class SampleSpec:
    """What turns raw structures into samples: the float ``dtype``, the ``transform`` and the
    ``keys`` registry (declarations of every key the structures may carry)."""

    __slots__ = ("dtype", "transform", "keys")

    def __init__(self, dtype: torch.dtype = torch.float32, transform: Optional[Callable] = None,
                 keys: KeyRegistry = DEFAULT_KEYS) -> None:
        self.dtype = dtype
        self.transform = transform
        self.keys = keys


def _float_tensor(value: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(np.asarray(value), dtype=dtype)


def sample_dict(structure: Structure, index: int, dtype: torch.dtype, keys: KeyRegistry = DEFAULT_KEYS) -> dict:
    """The sample dict of ``structure`` without transform and atoms (fresh tensors)."""
    sample = {
        "positions": _float_tensor(structure.positions, dtype),
        "species": torch.tensor(np.asarray(structure.numbers), dtype=torch.int64),
        "cell": _float_tensor(structure.cell, dtype),
        "pbc": torch.tensor(np.asarray(structure.pbc), dtype=torch.bool),
        "natoms": torch.tensor(structure.natoms, dtype=torch.int64),
        "idx": torch.tensor(index, dtype=torch.int64),
    }
    for label in STRUCTURE_LABELS:
        value = getattr(structure, label)
        if value is not None:
            sample[label] = _float_tensor(value, dtype)
    for name, value in structure.extras.items():
        key = keys.require(name)
        if key.kind == LIST:
            sample[name] = value
        elif key.dtype == "float":
            sample[name] = _float_tensor(value, dtype)
        elif key.dtype == "bool":
            sample[name] = torch.tensor(np.asarray(value), dtype=torch.bool)
        else:
            sample[name] = torch.tensor(np.asarray(value), dtype=torch.int64)
    return sample


def apply_transform(transform: Callable, sample: dict, generator: Optional[torch.Generator]) -> dict:
    """``transform(sample)``; a transform with ``apply(sample, generator)`` (the project's random
    transforms and ``Compose``) draws from ``generator`` when one is given."""
    if generator is not None:
        apply = getattr(transform, "apply", None)
        if callable(apply):
            return apply(sample, generator)
    return transform(sample)


def make_sample(
    structure: Structure,
    index: int,
    spec: SampleSpec,
    *,
    with_atoms: bool = False,
    generator: Optional[torch.Generator] = None,
    atoms=None,
) -> dict:
    """The sample of ``structure``: ``sample_dict``, plus ``atoms`` when asked (``atoms``: the
    Atoms to use, e.g. ``data.atoms.full_atoms``'s), then the transform."""
    sample = sample_dict(structure, index, spec.dtype, spec.keys)
    if with_atoms:
        sample["atoms"] = atoms if atoms is not None else structure_to_atoms(structure, keys=spec.keys)
    if spec.transform is not None:
        sample = apply_transform(spec.transform, sample, generator)
    return sample


class SampleList(Sequence):
    """The samples of a ``StructureBatch`` (see module docstring), built on access.

    Indexing builds sample dicts (without ``atoms``; with a transform, all of them once, so two
    reads of one entry agree). :meth:`collate` gives the padded or graph batch dict.
    """

    def __init__(self, batch: StructureBatch, spec: SampleSpec) -> None:
        self.batch = batch
        self.spec = spec
        self._built: Optional[list[dict]] = None

    @property
    def dtype(self) -> torch.dtype:
        return self.spec.dtype

    @property
    def edges_cutoff(self) -> Optional[float]:
        """Cutoff (Å) of the neighbor lists stored with these structures (None: none stored)."""
        return self.batch.edges_cutoff

    def __len__(self) -> int:
        return len(self.batch)

    def _index(self, b: int) -> int:
        return int(self.batch.indices[b]) if self.batch.indices is not None else b

    def samples(self, *, with_atoms: bool = False, generator: Optional[torch.Generator] = None) -> list[dict]:
        """Every sample of the batch (transformed when the dataset has a transform)."""
        return [make_sample(self.batch.structure(b), self._index(b), self.spec, with_atoms=with_atoms,
                            generator=generator) for b in range(len(self))]

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        k = check_index(k, len(self), "batch")
        if self.spec.transform is None:
            return make_sample(self.batch.structure(k), self._index(k), self.spec)
        if self._built is None:
            self._built = self.samples()
        return self._built[k]

    def collate(
        self,
        use_padding: bool,
        *,
        cutoff: Optional[float] = None,
        with_atoms: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> dict:
        """The padded (``use_padding``) or graph batch dict of these samples.

        ``cutoff`` (Å, graph batches only) adds ``edge_index`` [2, E] and ``shifts`` [E, 3]: the
        stored neighbor lists when they were stored for this cutoff and are exact for the batch's
        values, else computed from the batch's positions. ``with_atoms`` adds ``atoms`` (a list of
        ``ase.Atoms`` holding the labels; transformed with the samples). ``generator`` feeds the
        random transforms (None: their own or torch's global RNG).
        """
        if cutoff is not None:
            from .neighbors import require_graph_mode

            require_graph_mode(use_padding, cutoff)
        spec = self.spec
        if spec.transform is not None:
            samples = self._built if (self._built is not None and not with_atoms and generator is None) else \
                self.samples(with_atoms=with_atoms, generator=generator)
            out = collate_columns(StructureBatch.from_samples(samples, spec.keys), use_padding, None, spec.keys)
        else:
            batch = self.batch
            if with_atoms:
                atoms = [structure_to_atoms(s, keys=spec.keys) for s in batch.structures()]
                batch = StructureBatch(batch.indices, batch.natoms, {**batch.columns, "atoms": Column(atoms, kind=LIST)},
                                       ptr=batch.ptr)
            out = collate_columns(batch, use_padding, spec.dtype, spec.keys)
            if cutoff is not None and self._stored_edges_fit(cutoff):
                return self._with_stored_edges(out)
        if cutoff is not None:
            from .neighbors import add_edges

            add_edges(out, cutoff)
        return out

    # -- stored neighbor lists ---------------------------------------------------------------
    def _stored_edges_fit(self, cutoff: float) -> bool:
        """Stored lists are used for ``cutoff`` when they were stored for it and are exact for the
        batch's values: the batch holds the file's values exactly (float64 batches, or a float32
        file), or it is float32 and the packer found every structure's list unchanged by rounding
        the file's positions and cell to float32 (``edge_exact32``). Otherwise they are computed."""
        batch = self.batch
        if batch.stored_edges is None or batch.edges_cutoff is None or float(cutoff) != float(batch.edges_cutoff):
            return False
        np_dtype = _NUMPY_FLOAT.get(self.spec.dtype)
        if np_dtype is None:
            return False
        if np.can_cast(batch.positions.dtype, np_dtype, "safe") and np.can_cast(batch.cell.dtype, np_dtype, "safe"):
            return True  # the batch holds the file's values exactly
        # float32 batches of a float64 file: the packer checked each structure's list on float32-rounded values
        return np_dtype == np.float32 and batch.edges_exact is not None and bool(batch.edges_exact.all())

    def _with_stored_edges(self, out: dict) -> dict:
        batch = self.batch
        edge_index, shifts = batch.stored_edges
        offsets = batch.ptr[:-1].repeat(batch.num_edges)
        out["edge_index"] = torch.from_numpy(np.add(edge_index, offsets, dtype=np.int64))
        out["shifts"] = torch.from_numpy(np.array(shifts, dtype=np.int64))
        return out

    def __repr__(self) -> str:
        return f"SampleList(n={len(self)}, atoms={int(self.batch.natoms.sum())})"


__all__ = ["SampleSpec", "SampleList", "sample_dict", "make_sample", "apply_transform"]
