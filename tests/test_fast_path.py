"""The batched fast path (``__getitems__`` -> ``SampleList.collate_fast``) against the per-sample path.

Every batch built from concatenated arrays must equal, key for key and bit for bit, the batch the
ordinary collate builds from the per-sample dicts (``dataset[i]``), for every format, cached or
not, float32 and float64, padded and graph, in the main process and in DataLoader workers.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mlff_distiller.data import (
    MolecularDataLoader,
    MolecularDataset,
    MolecularSubset,
    molecular_collate_fn,
    molecular_collate_fn_no_padding,
)
from mlff_distiller.data.collate import Collater
from mlff_distiller.data.packed import PackedStore, pack, write_packed
from mlff_distiller.data.structure import Structure
from mlff_distiller.data.samples import SampleList
from mlff_distiller.data.transfer import decode_batch, encode_batch


def assert_batches_equal(fast: dict, slow: dict, where: str = "") -> None:
    assert list(fast) == list(slow) or set(fast) == set(slow), f"{where}: keys {set(fast) ^ set(slow)}"
    for key in slow:
        a, b = fast[key], slow[key]
        if isinstance(b, torch.Tensor):
            assert isinstance(a, torch.Tensor), (where, key)
            assert a.dtype == b.dtype and a.shape == b.shape, (where, key, a.dtype, b.dtype, a.shape, b.shape)
            assert torch.equal(a, b), (where, key)
        else:
            assert a == b and type(a) is type(b), (where, key, a, b)


def per_sample(ds, indices) -> list[dict]:
    """The ordinary samples (``dataset[i]`` without ``atoms``), the reference for every batch."""
    return [{k: v for k, v in ds[int(i)].items() if k != "atoms"} for i in indices]


def structures_with_gaps(seed: int = 1) -> list[Structure]:
    """Molecules and cells where energy, forces and stress are each missing from some structures."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(17):
        n = int(rng.integers(1, 7))
        periodic = k % 2 == 0
        out.append(Structure(
            positions=rng.uniform(0, 4, size=(n, 3)),
            numbers=rng.integers(1, 30, size=n).astype(np.int64),
            cell=np.diag(rng.uniform(4.5, 6, size=3)) if periodic else np.zeros((3, 3)),
            pbc=np.array([periodic] * 3),
            energy=None if k % 4 == 1 else np.array(rng.normal()),
            forces=None if k % 5 == 2 else rng.normal(size=(n, 3)),
            stress=rng.normal(size=(3, 3)) if periodic and k % 3 else None,
        ))
    return out


@pytest.fixture(scope="module")
def files(data_files, tmp_path_factory):
    """The shared EMT files plus their packed conversion, and a packed file with missing labels."""
    root = tmp_path_factory.mktemp("fast")
    out = dict(data_files)
    out["packed"] = root / "emt.packed.h5"
    pack(data_files["ase"], out["packed"])
    out["gaps"] = root / "gaps.packed.h5"
    write_packed(out["gaps"], structures_with_gaps(), chunk=4)
    from mlff_distiller.data.writers import write_structures

    out["gaps_hdf5"] = root / "gaps.h5"
    write_structures(out["gaps_hdf5"], structures_with_gaps(), "hdf5")
    return out


CASES = [("ase", "ase"), ("xyz", "xyz"), ("hdf5", "hdf5"), ("packed", "packed"), ("gaps", "packed"), ("gaps_hdf5", "hdf5")]


@pytest.mark.parametrize("name,fmt", CASES)
@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_batches_equal_per_sample_batches(files, name, fmt, cache, dtype):
    ds = MolecularDataset(files[name], format=fmt, cache=cache, dtype=dtype)
    rng = np.random.default_rng(0)
    for size in (1, 5, len(ds)):
        idx = rng.permutation(len(ds))[:size].tolist()
        samples = ds.__getitems__(idx)
        assert isinstance(samples, SampleList)
        for padded in (True, False):
            fast = samples.collate(padded)
            collate = molecular_collate_fn if padded else molecular_collate_fn_no_padding
            assert_batches_equal(fast, collate(per_sample(ds, idx)), f"{name} cache={cache} padded={padded}")
            assert_batches_equal(collate(samples), fast, "the public collate takes the fast path")


def test_missing_labels_are_zero_filled_with_masks(files):
    ds = MolecularDataset(files["gaps"], format="packed", dtype=torch.float64)
    structures = structures_with_gaps()
    batch = ds.__getitems__(list(range(len(ds)))).collate(False)
    for label in ("energy", "forces", "stress"):
        present = [getattr(s, label) is not None for s in structures]
        assert batch[f"{label}_mask"].tolist() == present
    natoms = [s.natoms for s in structures]
    ptr = np.concatenate([[0], np.cumsum(natoms)])
    for b, s in enumerate(structures):
        forces = batch["forces"][ptr[b] : ptr[b + 1]].numpy()
        assert np.array_equal(forces, s.forces if s.forces is not None else np.zeros((s.natoms, 3)))
        assert batch["energy"][b].item() == (float(s.energy) if s.energy is not None else 0.0)
        stress = batch["stress"][b].numpy()
        assert np.array_equal(stress, s.stress if s.stress is not None else np.zeros((3, 3)))


def test_cache_holds_packed_arrays_and_gives_the_same_values(files):
    plain = MolecularDataset(files["ase"], format="ase", dtype=torch.float64)
    cached = MolecularDataset(files["ase"], format="ase", dtype=torch.float64, cache=True)
    assert isinstance(cached._cache, PackedStore)  # packed arrays, not a list of dicts
    assert cached._cache.arrays["positions"].shape == (int(plain.natoms_array().sum()), 3)
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert set(a) == set(b)
        for key in a:
            if key != "atoms":
                assert torch.equal(a[key], b[key]), key
        assert np.array_equal(a["atoms"].get_forces(), b["atoms"].get_forces())
    sa, sb = plain.get_statistics(), cached.get_statistics()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert repr(sa[key]) == repr(sb[key]), key
    packed_cached = MolecularDataset(files["packed"], format="packed", cache=True)
    assert isinstance(packed_cached._cache, PackedStore) and packed_cached._cache._mm is None  # in RAM


def test_sample_list_is_a_sequence_of_the_usual_samples(files):
    ds = MolecularDataset(files["gaps"], format="packed")
    idx = [4, 0, 9]
    samples = ds.__getitems__(idx)
    assert len(samples) == 3
    reference = per_sample(ds, idx)
    for got, ref in zip(list(samples), reference):
        assert got.keys() == ref.keys()
        for key in ref:
            assert got[key].dtype == ref[key].dtype and torch.equal(got[key], ref[key])
    assert torch.equal(samples[-1]["positions"], reference[-1]["positions"])
    assert [int(s["idx"]) for s in samples[1:]] == [0, 9]
    with pytest.raises(IndexError):
        samples[3]
    # a user's own collate function sees plain sample dicts
    loader = MolecularDataLoader(ds, batch_size=4, collate_fn=lambda s: [d["natoms"] for d in s])
    assert [int(n) for n in next(iter(loader))] == [s.natoms for s in structures_with_gaps()[:4]]


def test_transform_and_atoms_go_through_the_same_collate(files):
    def shift(sample):
        sample["positions"] = sample["positions"] + 1.0
        return sample

    ds = MolecularDataset(files["packed"], format="packed", transform=shift, dtype=torch.float64)
    samples = ds.__getitems__([0, 2])
    assert isinstance(samples, SampleList)
    plain = MolecularDataset(files["packed"], format="packed", dtype=torch.float64)
    assert torch.equal(samples[0]["positions"], plain[0]["positions"] + 1.0)
    assert samples[0] is samples[0]  # built once: a random transform gives one sample per entry
    for padded in (True, False):
        collate = molecular_collate_fn if padded else molecular_collate_fn_no_padding
        assert_batches_equal(samples.collate(padded), collate(per_sample(ds, [0, 2])), "transformed")
    with_atoms = plain.__getitems__([1]).collate(False, with_atoms=True)
    assert [a.get_potential_energy() for a in with_atoms["atoms"]] == [plain.get_atoms(1).get_potential_energy()]
    assert "atoms" not in plain.__getitems__([1]).collate(False)


def test_indices_tensor_negative_out_of_range_and_subset(files):
    ds = MolecularDataset(files["packed"], format="packed")
    n = len(ds)
    a = ds.__getitems__(torch.tensor([1, -1])).collate(False)
    assert a["idx"].tolist() == [1, n - 1]
    with pytest.raises(IndexError, match="out of range"):
        ds.__getitems__([0, n])
    with pytest.raises(TypeError):
        ds.__getitems__([0.5])
    sub = MolecularSubset(ds, [5, 3, 8])
    fast = sub.__getitems__([2, 0]).collate(True)
    assert fast["idx"].tolist() == [8, 5]
    assert_batches_equal(fast, molecular_collate_fn(per_sample(ds, [8, 5])))


@pytest.mark.parametrize("padded", [True, False])
def test_workers_give_the_same_batches(files, padded):
    ds = MolecularDataset(files["gaps"], format="packed", dtype=torch.float64)
    kwargs = dict(batch_size=5, shuffle=True, seed=3, use_padding=padded, pin_memory=False)
    main = list(MolecularDataLoader(ds, num_workers=0, **kwargs))
    workers = list(MolecularDataLoader(ds, num_workers=2, **kwargs))
    assert len(main) == len(workers) == 4
    for a, b in zip(main, workers):
        assert type(b) is dict  # decoded from the transfer format
        assert_batches_equal(b, a, "workers")


def test_transfer_format_round_trips_as_one_buffer(files):
    ds = MolecularDataset(files["gaps"], format="packed", dtype=torch.float64)
    batch = ds.__getitems__([0, 1, 2, 3]).collate(True)
    batch["tag"] = ["a", "b", "c", "d"]
    encoded = encode_batch(batch)
    clone = decode_batch(pickle.loads(pickle.dumps(encoded)))
    assert type(clone) is dict and list(clone) == list(batch)
    assert_batches_equal(clone, batch)
    storages = {t.untyped_storage().data_ptr() for t in clone.values() if isinstance(t, torch.Tensor)}
    assert len(storages) == 1  # every tensor is a view of the one received buffer
    clone["positions"] += 1.0  # views are writable and independent of each other
    assert torch.equal(clone["forces"], batch["forces"])
    assert decode_batch(batch) is batch  # anything else passes through


def test_neighbor_lists_on_the_fly_and_stored(files, tmp_path):
    cutoff = 4.0
    ds = MolecularDataset(files["packed"], format="packed", dtype=torch.float64)
    idx = [3, 0, 7, 11]
    samples = ds.__getitems__(idx)
    fast = samples.collate(False, cutoff=cutoff)
    slow = Collater(use_padding=False, cutoff=cutoff)(per_sample(ds, idx))
    assert_batches_equal(fast, slow, "on the fly")
    assert fast["edge_index"].shape[1] > 0
    stored_path = tmp_path / "nl.h5"
    pack(files["ase"], stored_path, cutoff=cutoff)
    stored = MolecularDataset(stored_path, format="packed", dtype=torch.float64).__getitems__(idx)
    assert stored.edges_cutoff == cutoff
    assert_batches_equal(stored.collate(False, cutoff=cutoff), slow, "stored")
    cached = MolecularDataset(stored_path, format="packed", dtype=torch.float64, cache=True).__getitems__(idx)
    assert cached.edges_cutoff == cutoff and cached.batch.edge_index is not None  # the cache keeps the edges
    assert_batches_equal(cached.collate(False, cutoff=cutoff), slow, "stored, cached")
    loader = MolecularDataLoader(MolecularDataset(stored_path, format="packed", dtype=torch.float64), batch_size=4,
                                 use_padding=False, cutoff=cutoff, sampler=idx)
    assert_batches_equal(next(iter(loader)), slow, "through the loader")
    # another cutoff than the stored one is computed, not taken from the file
    assert_batches_equal(stored.collate(False, cutoff=3.0), Collater(False, 3.0)(per_sample(ds, idx)))
    with pytest.raises(ValueError, match="graph"):
        samples.collate(True, cutoff=cutoff)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_dtypes_round_like_the_samples(files, dtype):
    ds = MolecularDataset(files["gaps"], format="packed", dtype=dtype)
    idx = list(range(len(ds)))
    samples = ds.__getitems__(idx)
    for padded in (True, False):
        collate = molecular_collate_fn if padded else molecular_collate_fn_no_padding
        assert_batches_equal(samples.collate(padded), collate(per_sample(ds, idx)), str(dtype))


def test_periodic_axis_without_a_cell_vector_names_the_structure(tmp_path):
    bad = Structure(positions=np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]], numbers=np.array([1, 1]),
                    cell=np.diag([5.0, 5.0, 0.0]), pbc=np.array([True, True, True]))
    good = structures_with_gaps()[0]
    write_packed(tmp_path / "bad.h5", [good, bad])
    ds = MolecularDataset(tmp_path / "bad.h5", format="packed")
    with pytest.raises(ValueError, match=r"structure 1: pbc is True along axis \[2\]"):
        ds.__getitems__([0, 1]).collate(False, cutoff=3.0)


@pytest.mark.parametrize("stored", [False, True])
def test_graph_edges_are_offset_to_their_structure(files, tmp_path, stored):
    """Every edge of a graph batch joins two atoms of one structure, and minus that structure's first
    atom it is the structure's own neighbor list (ASE's), for edges computed on the fly and stored ones."""
    from ase.neighborlist import neighbor_list

    cutoff = 3.5
    path = tmp_path / "nl.h5"
    pack(files["ase"], path, cutoff=cutoff if stored else None)
    ds = MolecularDataset(path, format="packed", dtype=torch.float64)
    idx = [9, 2, 11, 2, 0]  # shuffled, with a repeat
    batch = ds.__getitems__(idx).collate(False, cutoff=cutoff)
    i, j = batch["edge_index"]
    assert torch.equal(batch["batch"][i], batch["batch"][j])
    for b, k in enumerate(idx):
        mine = batch["batch"][i] == b
        local = batch["edge_index"][:, mine] - batch["ptr"][b]
        atoms = ds.get_atoms(k)
        ri, rj, rs = neighbor_list("ijS", atoms, cutoff)
        expected = sorted(zip(ri.tolist(), rj.tolist(), map(tuple, rs.tolist())))
        got = sorted(zip(local[0].tolist(), local[1].tolist(), map(tuple, batch["shifts"][mine].tolist())))
        assert got == expected, (b, k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_batch_whatever_the_path(files, dtype):
    """Transform or not, workers or not, stored lists or computed: the same values give the same batch
    (the one collate implementation; edges from the values the batch holds)."""
    cutoff = 4.0
    kwargs = dict(batch_size=5, shuffle=True, seed=11, use_padding=False, cutoff=cutoff, pin_memory=False)
    reference = None
    for transform in (None, lambda sample: sample):
        for workers in (0, 2):
            ds = MolecularDataset(files["gaps"], format="packed", dtype=dtype, transform=transform)
            batches = list(MolecularDataLoader(ds, num_workers=workers, **kwargs))
            if reference is None:
                reference = batches
                continue
            for a, b in zip(reference, batches):
                assert_batches_equal(b, a, f"transform={transform is not None} workers={workers}")


def test_seeded_random_transforms_in_workers_are_reproducible_and_leave_the_global_rng(files):
    from mlff_distiller.data import RandomRotation

    ds = MolecularDataset(files["gaps"], format="packed", transform=RandomRotation(p=1.0))
    kwargs = dict(batch_size=5, shuffle=True, seed=2, num_workers=2, pin_memory=False)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = [b["positions"] for b in MolecularDataLoader(ds, **kwargs)]
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)  # another global state: same rotations
    again = [b["positions"] for b in MolecularDataLoader(ds, **kwargs)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    plain = [b["positions"] for b in MolecularDataLoader(MolecularDataset(files["gaps"], format="packed"), **kwargs)]
    assert not any(torch.equal(a, b) for a, b in zip(first, plain) if a.numel() > 3)
