"""MolecularDataLoader and create_dataloaders: the guide's snippets, workers, size-aware batching."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from mlff_distiller.data import (
    MolecularDataLoader,
    MolecularDataset,
    create_dataloaders,
    molecular_collate_fn,
    molecular_collate_fn_no_padding,
    train_test_split,
)
from mlff_distiller.data.loader import pin_memory_available


@pytest.fixture(scope="module")
def db_dataset(data_files):
    return MolecularDataset(data_files["ase"], format="ase")


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], torch.Tensor):
                assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key
            else:
                assert x[key] == y[key], key


def test_guide_quick_start_basic_usage(db_dataset):
    loader = MolecularDataLoader(db_dataset, batch_size=32, shuffle=True)
    assert isinstance(loader, DataLoader)
    for batch in loader:
        positions = batch['positions']  # [batch_size, max_atoms, 3]
        species = batch['species']      # [batch_size, max_atoms]
        mask = batch['mask']            # [batch_size, max_atoms]
        energy = batch['energy']        # [batch_size]
        forces = batch['forces']        # [batch_size, max_atoms, 3]
    n, m = len(db_dataset), int(db_dataset.natoms_array().max())
    assert positions.shape == (n, m, 3) and species.shape == mask.shape == (n, m)
    assert energy.shape == (n,) and forces.shape == (n, m, 3)
    assert sorted(batch["idx"].tolist()) == list(range(n))


def test_guide_batching_strategies(db_dataset):
    loader = MolecularDataLoader(db_dataset, batch_size=32, use_padding=True)
    batch = next(iter(loader))
    assert batch['positions'].shape == (len(db_dataset), batch['max_atoms'], 3)
    assert batch['mask'].sum() == int(db_dataset.natoms_array().sum())
    assert loader.collate_fn.collate_fn is molecular_collate_fn
    loader = MolecularDataLoader(db_dataset, batch_size=32, use_padding=False)
    batch = next(iter(loader))
    assert batch['positions'].shape == (batch['total_atoms'], 3)
    assert batch['batch'].shape == (batch['total_atoms'],)
    assert loader.collate_fn.collate_fn is molecular_collate_fn_no_padding


def test_guide_train_val_test_split_snippet(data_files):
    dataset = MolecularDataset(data_files["ase"], format='ase')
    train_dataset, val_dataset, test_dataset = train_test_split(
        dataset, train_ratio=0.8, val_ratio=0.1, test_ratio=0.1, shuffle=True, random_seed=42
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*worker processes in total.*")  # 4 workers on a small machine
        loaders = create_dataloaders(train_dataset, val_dataset, test_dataset, batch_size=32, num_workers=4)
        train_loader = loaders['train']
        val_loader = loaders['val']
        test_loader = loaders['test']
        batch = next(iter(train_loader))
        assert sorted(batch["idx"].tolist()) == sorted(train_dataset.indices)
        assert isinstance(train_loader.sampler, RandomSampler)
        for loader, subset in ((val_loader, val_dataset), (test_loader, test_dataset)):
            assert isinstance(loader.sampler, SequentialSampler)
            assert torch.cat([b["idx"] for b in loader]).tolist() == subset.indices  # not shuffled


def test_pin_memory_default_is_silent_without_an_accelerator(db_dataset):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = MolecularDataLoader(db_dataset, batch_size=4)
        batches = list(loader)
    assert loader.pin_memory_requested is True
    assert loader.pin_memory is pin_memory_available()
    if not pin_memory_available():
        assert not batches[0]["positions"].is_pinned()


def test_every_index_once_per_epoch_with_shuffle_and_drop_last(db_dataset):
    n = len(db_dataset)
    loader = MolecularDataLoader(db_dataset, batch_size=5, shuffle=True, seed=1)
    orders = []
    for _ in range(2):
        idx = torch.cat([b["idx"] for b in loader]).tolist()
        assert sorted(idx) == list(range(n))
        orders.append(idx)
    assert orders[0] != orders[1]
    loader = MolecularDataLoader(db_dataset, batch_size=5, shuffle=True, drop_last=True, seed=1)
    batches = list(loader)
    assert len(batches) == len(loader) == n // 5 and all(len(b["idx"]) == 5 for b in batches)
    idx = torch.cat([b["idx"] for b in batches]).tolist()
    assert len(set(idx)) == len(idx) == (n // 5) * 5


@pytest.mark.parametrize("use_padding", [True, False])
def test_size_aware_batching_in_the_loader(db_dataset, use_padding, monkeypatch):
    natoms = db_dataset.natoms_array()
    calls = []
    reader = db_dataset.reader
    monkeypatch.setattr(reader, "read", lambda i, _f=reader.read: calls.append(i) or _f(i))
    monkeypatch.setattr(reader, "read_many", lambda idx, _f=reader.read_many: calls.extend(idx) or _f(idx))
    budget = 40
    loader = MolecularDataLoader(db_dataset, shuffle=True, use_padding=use_padding, max_atoms_per_batch=budget, seed=0)
    len(loader)
    assert calls == []  # atom counts come from natoms_array, not from loading samples
    for epoch in range(2):
        loader.set_epoch(epoch)
        expected = len(loader)
        batches = list(loader)
        assert len(batches) == expected
        idx = torch.cat([b["idx"] for b in batches])
        assert sorted(idx.tolist()) == list(range(len(db_dataset)))
        for b in batches:
            cost = b["positions"].shape[0] * b["max_atoms"] if use_padding else b["total_atoms"]
            assert cost <= budget
            assert torch.equal(b["natoms"], torch.as_tensor(natoms[b["idx"].numpy()]))


def _batches(dataset, num_workers, **kwargs):
    loader = MolecularDataLoader(dataset, num_workers=num_workers, seed=123, shuffle=True, **kwargs)
    return [list(loader) for _ in range(2)]  # two epochs


@pytest.mark.parametrize("fmt", ["ase", "xyz", "hdf5"])
def test_workers_give_the_same_batches_as_the_main_process(data_files, fmt):
    dataset = MolecularDataset(data_files[fmt], format=fmt)
    for kwargs in ({"batch_size": 3}, {"use_padding": False, "max_atoms_per_batch": 30}):
        serial = _batches(dataset, 0, **kwargs)
        parallel = _batches(dataset, 2, **kwargs)
        for epoch_serial, epoch_parallel in zip(serial, parallel):
            _assert_same_batches(epoch_serial, epoch_parallel)
            assert sorted(torch.cat([b["idx"] for b in epoch_serial]).tolist()) == list(range(len(dataset)))
        assert [b["idx"].tolist() for b in serial[0]] != [b["idx"].tolist() for b in serial[1]]  # reshuffled


def test_workers_under_spawn_with_a_subset_and_edges(db_dataset):
    train, _, _ = train_test_split(db_dataset, 0.5, 0.25, 0.25, random_seed=0)
    kwargs = dict(batch_size=3, use_padding=False, cutoff=3.0, seed=5, shuffle=True)
    serial = MolecularDataLoader(train, **kwargs)
    reference = [b for _ in range(2) for b in serial]
    loader = MolecularDataLoader(
        train, num_workers=1, multiprocessing_context="spawn", persistent_workers=True, **kwargs
    )
    spawned = [b for _ in range(2) for b in loader]
    _assert_same_batches(reference, spawned)
    assert "edge_index" in spawned[0] and spawned[0]["edge_index"].max() < spawned[0]["total_atoms"]


def test_cutoff_needs_graph_batching(db_dataset):
    with pytest.raises(ValueError, match="use_padding=False"):
        MolecularDataLoader(db_dataset, cutoff=3.0)


def test_atoms_travel_only_when_asked(db_dataset):
    batch = next(iter(MolecularDataLoader(db_dataset, batch_size=4)))
    assert "atoms" not in batch
    batch = next(iter(MolecularDataLoader(db_dataset, batch_size=4, return_atoms=True)))
    assert len(batch["atoms"]) == 4
    for b, atoms in enumerate(batch["atoms"]):
        ref = db_dataset.get_atoms(int(batch["idx"][b]))
        np.testing.assert_array_equal(atoms.positions, ref.positions)
        assert atoms.get_potential_energy() == ref.get_potential_energy()
    assert "atoms" not in next(iter(MolecularDataLoader(db_dataset, batch_size=4)))


def test_dataloader_arguments_pass_through(db_dataset):
    order = [5, 3, 1]
    loader = MolecularDataLoader(db_dataset, batch_size=2, sampler=order)
    assert torch.cat([b["idx"] for b in loader]).tolist() == order
    loader = MolecularDataLoader(db_dataset, batch_sampler=[[0, 4], [2]])
    assert [b["idx"].tolist() for b in loader] == [[0, 4], [2]]
    a = MolecularDataLoader(db_dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(9))
    b = MolecularDataLoader(db_dataset, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(9))
    _assert_same_batches(list(a), list(b))
    first = [x["idx"].tolist() for x in MolecularDataLoader(db_dataset, batch_size=4, shuffle=True, seed=9)]
    again = [x["idx"].tolist() for x in MolecularDataLoader(db_dataset, batch_size=4, shuffle=True, seed=9)]
    other = [x["idx"].tolist() for x in MolecularDataLoader(db_dataset, batch_size=4, shuffle=True, seed=10)]
    assert first == again != other
    with pytest.raises(ValueError, match="seed"):
        MolecularDataLoader(db_dataset, seed=1, generator=torch.Generator())


def test_create_dataloaders_options(db_dataset):
    train, val, test = train_test_split(db_dataset, 0.5, 0.25, 0.25, random_seed=0)
    loaders = create_dataloaders(train, val, None, batch_size=2, use_padding=False, max_atoms_per_batch=30, seed=0)
    assert set(loaders) == {"train", "val", "test"} and loaders["test"] is None
    assert loaders["train"].batch_sampler.shuffle and not loaders["val"].batch_sampler.shuffle
    assert torch.cat([b["idx"] for b in loaders["val"]]).tolist() == val.indices


class _PidProbe(torch.utils.data.Dataset):
    """Wraps a dataset; each sample records the process that built it and the pid its reader's
    file handle was opened in (None when the reader keeps no handle)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        import os

        sample = self.dataset[i]
        sample.pop("atoms", None)
        handle_pid = getattr(self.dataset.reader, "_handle_pid", None)
        sample["worker_pid"] = os.getpid()
        sample["handle_pid"] = -1 if handle_pid is None else handle_pid
        return sample


@pytest.mark.parametrize("fmt", ["ase", "xyz", "hdf5"])
def test_file_handles_are_opened_per_worker(data_files, fmt):
    import os

    dataset = MolecularDataset(data_files[fmt], format=fmt)
    dataset[0]  # the main process opens its handle before the workers fork
    batches = list(MolecularDataLoader(_PidProbe(dataset), batch_size=2, num_workers=2))
    worker_pids = torch.cat([b["worker_pid"] for b in batches])
    handle_pids = torch.cat([b["handle_pid"] for b in batches])
    assert len(set(worker_pids.tolist())) == 2 and os.getpid() not in worker_pids.tolist()
    opened = handle_pids != -1
    assert torch.equal(handle_pids[opened], worker_pids[opened])  # never the parent's handle


def test_mixed_sizes_real_run_with_workers(tmp_path):
    """10-atom clusters and 1372-atom cells in one file, size-aware batches, two workers."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase import Atoms
    from ase.db import connect

    rng = np.random.default_rng(0)
    path = tmp_path / "mixed.db"
    with connect(path) as db:
        for k in range(24):
            if k % 8 == 7:
                atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((7, 7, 7))  # 1372 atoms
            else:
                cube = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
                atoms = Atoms("Cu10", positions=cube.positions[:10])  # a 10-atom cluster, no cell
            atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
            atoms.calc = EMT()
            results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
            if atoms.pbc.all():
                results["stress"] = atoms.get_stress()
            atoms.calc = SinglePointCalculator(atoms, **results)
            db.write(atoms)
    dataset = MolecularDataset(path, format="ase", dtype=torch.float64)
    natoms = dataset.natoms_array()
    assert sorted(set(natoms.tolist())) == [10, 1372]
    for use_padding, budget in ((False, 1500), (True, 2800)):
        loader = MolecularDataLoader(
            dataset, shuffle=True, use_padding=use_padding, max_atoms_per_batch=budget, num_workers=2, seed=0
        )
        seen = []
        for batch in loader:
            idx = batch["idx"].tolist()
            seen += idx
            if use_padding:
                assert len(idx) * batch["max_atoms"] <= budget
                sizes = natoms[idx]
                assert sizes.min() == sizes.max()  # no molecule padded up to a 1372-atom cell
            else:
                assert batch["total_atoms"] <= budget
            b = int(rng.integers(len(idx)))  # one structure per batch against ASE's own reading
            row = connect(path).get(id=idx[b] + 1)
            n = row.natoms
            rows = slice(0, n) if use_padding else slice(int(batch["ptr"][b]), int(batch["ptr"][b + 1]))
            pos = batch["positions"][b, rows] if use_padding else batch["positions"][rows]
            frc = batch["forces"][b, rows] if use_padding else batch["forces"][rows]
            np.testing.assert_array_equal(pos.numpy(), row.positions)
            np.testing.assert_array_equal(frc.numpy(), row.forces)
            assert batch["energy"][b].item() == row.energy
            has_stress = batch.get("stress_mask", torch.zeros(len(idx), dtype=torch.bool))
            assert bool(has_stress[b]) == (n == 1372)  # only the periodic cells carry stress
        assert sorted(seen) == list(range(len(dataset)))


def _rotated_epochs(loader, epochs=2, user_draws=0):
    """Positions of every batch, per epoch; ``user_draws`` torch.rand calls between batches (like dropout)."""
    out = []
    for _ in range(epochs):
        epoch = []
        for batch in loader:
            epoch.append(batch["positions"])
            torch.rand(user_draws)
        out.append(epoch)
    return out


def test_loader_seed_makes_main_process_transforms_reproducible(data_files):
    from mlff_distiller.data import RandomRotation

    dataset = MolecularDataset(data_files["ase"], format="ase", transform=RandomRotation(p=1.0))
    raw = MolecularDataset(data_files["ase"], format="ase")
    kwargs = dict(batch_size=4, shuffle=True, num_workers=0, seed=0)
    torch.manual_seed(1)
    a = _rotated_epochs(MolecularDataLoader(dataset, **kwargs), user_draws=0)
    torch.manual_seed(2)  # another global state and other user draws between batches: same batches
    b = _rotated_epochs(MolecularDataLoader(dataset, **kwargs), user_draws=3)
    for epoch_a, epoch_b in zip(a, b):
        assert len(epoch_a) == len(epoch_b) == 3
        for x, y in zip(epoch_a, epoch_b):
            assert torch.equal(x, y)
    # rotations really happen, and differ between epochs (same shuffle order is not needed to see it)
    first = next(iter(MolecularDataLoader(raw, **kwargs)))
    assert not torch.allclose(a[0][0], first["positions"])
    assert not torch.equal(torch.cat([x.flatten() for x in a[0]]), torch.cat([x.flatten() for x in a[1]]))
    # another loader seed, other rotations
    c = _rotated_epochs(MolecularDataLoader(dataset, **{**kwargs, "seed": 1}), epochs=1)
    assert not torch.equal(a[0][0], c[0][0])


def test_loader_seed_leaves_the_global_rng_to_the_user(data_files):
    from mlff_distiller.data import RandomRotation

    dataset = MolecularDataset(data_files["ase"], format="ase", transform=RandomRotation(p=1.0))
    torch.manual_seed(5)
    expected = torch.rand(2 * 3 * 4)  # the user's own draws: 4 per batch, 3 batches, 2 epochs
    expected_state = torch.get_rng_state()
    torch.manual_seed(5)
    drawn = []
    loader = MolecularDataLoader(dataset, batch_size=4, shuffle=True, num_workers=0, seed=0)
    for _ in range(2):
        for _batch in loader:
            drawn.append(torch.rand(4))
    assert torch.equal(torch.cat(drawn), expected)  # the loader's rotations did not shift them
    assert torch.equal(torch.get_rng_state(), expected_state)
    # an iterator stopped early restores the user's state too
    torch.manual_seed(5)
    iterator = iter(loader)
    next(iterator)
    assert torch.equal(torch.rand(24), expected)
    assert len(iterator) == 3


# --------------------------------------------------------------------------- issue 17, faults 1 and 3
def test_two_loaders_on_one_dataset_keep_their_own_options(db_dataset):
    """Fault 1: a loader's return_atoms lives in its collate function; starting another loader on the
    same dataset does not take the atoms out of the first loader's batches."""
    with_atoms = MolecularDataLoader(db_dataset, batch_size=4, return_atoms=True)
    without = MolecularDataLoader(db_dataset, batch_size=4)
    iterator = iter(with_atoms)
    first = next(iterator)
    plain = next(iter(without))  # the second loader starts on the same dataset
    second = next(iterator)
    assert len(first["atoms"]) == 4 and len(second["atoms"]) == 4
    assert "atoms" not in plain and "atoms" not in next(iter(without))
    assert second["atoms"][0].get_potential_energy() == db_dataset.get_atoms(4).get_potential_energy()
    assert not hasattr(db_dataset, "atoms_in_batches")


def _pair_just_inside(cutoff: float):
    """Two atoms 1e-7 Å inside ``cutoff`` in float64 whose float32 distance rounds onto the cutoff,
    in a periodic cell (so several images are near the cutoff too), and a plain molecule."""
    from mlff_distiller.data.structure import Structure

    d = cutoff - 1e-7
    assert np.float32(d) >= np.float32(cutoff)  # float32 rounding moves the pair onto the cutoff
    pair = Structure(positions=np.array([[0.0, 0.0, 0.0], [d, 0.0, 0.0]]), numbers=np.array([1, 1]),
                     cell=np.diag([2 * d, 20.0, 20.0]), pbc=np.array([True, False, False]), energy=np.array(0.0))
    water = Structure(positions=np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]),
                      numbers=np.array([8, 1, 1]), cell=np.zeros((3, 3)), pbc=np.zeros(3, bool), energy=np.array(1.0))
    return [pair, water]


@pytest.mark.parametrize("stored", [False, True])
def test_edges_come_from_the_values_a_batch_holds(tmp_path, stored):
    """Fault 3: with cutoff=, a float32 batch gets the edges of its float32 positions whichever way
    it was built (no transform, an identity transform, stored lists, batch_neighbors afterwards)."""
    from mlff_distiller.data.neighbors import batch_neighbors
    from mlff_distiller.data.packed import write_packed

    cutoff = 3.0
    path = tmp_path / "pair.h5"
    write_packed(path, _pair_just_inside(cutoff), cutoff=cutoff if stored else None)
    batches = {}
    for dtype in (torch.float32, torch.float64):
        for name, transform in (("plain", None), ("identity", lambda sample: sample)):
            ds = MolecularDataset(path, format="packed", dtype=dtype, transform=transform)
            loader = MolecularDataLoader(ds, batch_size=2, use_padding=False, cutoff=cutoff)
            batch = next(iter(loader))
            again = batch_neighbors(batch, cutoff)
            assert torch.equal(batch["edge_index"], again["edge_index"]), (dtype, name)
            assert torch.equal(batch["shifts"], again["shifts"]), (dtype, name)
            batches[dtype, name] = batch
    for dtype in (torch.float32, torch.float64):
        a, b = batches[dtype, "plain"], batches[dtype, "identity"]
        assert torch.equal(a["edge_index"], b["edge_index"]) and torch.equal(a["shifts"], b["shifts"])
    pair_edges = lambda batch: int((batch["edge_index"][0] < 2).sum())  # noqa: E731  (edges of structure 0)
    assert pair_edges(batches[torch.float64, "plain"]) > 0  # the float64 pair is inside the cutoff
    assert pair_edges(batches[torch.float32, "plain"]) == 0  # its float32 copy is not
