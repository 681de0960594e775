"""Collate functions: padded and graph batches against the samples they were built from."""

from __future__ import annotations

import ase
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mlff_distiller.data import MolecularDataset, molecular_collate_fn, molecular_collate_fn_no_padding
from mlff_distiller.data.collate import Collater
from mlff_distiller.data.keys import Key


def _sample(n: int, idx: int, *, seed: int, dtype=torch.float64, labels=("energy", "forces", "stress"), periodic=True):
    g = torch.Generator().manual_seed(seed)
    s = {
        "positions": torch.randn(n, 3, generator=g, dtype=dtype),
        "species": torch.randint(1, 90, (n,), generator=g),
        "cell": (torch.eye(3, dtype=dtype) * 5.0) if periodic else torch.zeros(3, 3, dtype=dtype),
        "pbc": torch.full((3,), periodic),
        "natoms": torch.tensor(n),
        "idx": torch.tensor(idx),
    }
    if "energy" in labels:
        s["energy"] = torch.randn((), generator=g, dtype=dtype)
    if "forces" in labels:
        s["forces"] = torch.randn(n, 3, generator=g, dtype=dtype)
    if "stress" in labels:
        s["stress"] = torch.randn(3, 3, generator=g, dtype=dtype)
    return s


@pytest.fixture(scope="module")
def db_samples(data_files):
    ds = MolecularDataset(data_files["ase"], format="ase", dtype=torch.float64)
    return ds.__getitems__(list(range(len(ds))))


def test_padded_batch_is_the_samples_stacked_and_zero_padded(db_samples):
    samples = db_samples[:7]
    batch = molecular_collate_fn(samples)
    counts = [len(s["species"]) for s in samples]
    m = max(counts)
    assert batch["max_atoms"] == m and isinstance(batch["max_atoms"], int)
    assert batch["positions"].shape == (7, m, 3) and batch["forces"].shape == (7, m, 3)
    for b, s in enumerate(samples):
        n = counts[b]
        # reference: each sample written into a zero array by slicing (independent of the collate)
        ref_pos = np.zeros((m, 3))
        ref_pos[:n] = s["positions"].numpy()
        ref_z = np.zeros(m, dtype=np.int64)
        ref_z[:n] = s["species"].numpy()
        np.testing.assert_array_equal(batch["positions"][b].numpy(), ref_pos)
        np.testing.assert_array_equal(batch["species"][b].numpy(), ref_z)
        assert batch["mask"][b].tolist() == [True] * n + [False] * (m - n)
        if "forces" in s:
            ref_f = np.zeros((m, 3))
            ref_f[:n] = s["forces"].numpy()
            np.testing.assert_array_equal(batch["forces"][b].numpy(), ref_f)
        assert torch.equal(batch["cell"][b], s["cell"]) and torch.equal(batch["pbc"][b], s["pbc"])
        assert int(batch["natoms"][b]) == n and int(batch["idx"][b]) == int(s["idx"])
        assert batch["energy"][b].item() == s["energy"].item()
    assert batch["mask"].dtype == torch.bool and batch["species"].dtype == torch.int64
    assert batch["positions"].dtype == torch.float64  # float64 travels bit for bit
    assert "atoms" not in batch  # __getitems__ does not build Atoms for batches


def test_graph_batch_round_trips_to_the_samples(db_samples):
    samples = db_samples[2:9]
    batch = molecular_collate_fn_no_padding(samples)
    counts = torch.tensor([len(s["species"]) for s in samples])
    assert batch["total_atoms"] == int(counts.sum()) and isinstance(batch["total_atoms"], int)
    assert batch["ptr"].tolist() == [0] + np.cumsum(counts.numpy()).tolist()
    assert batch["batch"].dtype == torch.int64 and batch["ptr"].dtype == torch.int64
    for b, s in enumerate(samples):
        lo, hi = int(batch["ptr"][b]), int(batch["ptr"][b + 1])
        assert torch.equal(batch["positions"][lo:hi], s["positions"])
        assert torch.equal(batch["species"][lo:hi], s["species"])
        assert torch.equal(batch["forces"][lo:hi], s["forces"])
        assert (batch["batch"][lo:hi] == b).all()
        assert torch.equal(batch["cell"][b], s["cell"])
        assert batch["energy"][b].item() == s["energy"].item()
    assert "mask" not in batch and "max_atoms" not in batch


def test_partial_labels_are_zero_filled_with_a_presence_mask():
    samples = [
        _sample(3, 0, seed=0),
        _sample(5, 1, seed=1, labels=("energy", "forces")),  # a molecule: no stress
        _sample(2, 2, seed=2, labels=("energy",), periodic=False),  # no forces either
    ]
    for collate in (molecular_collate_fn, molecular_collate_fn_no_padding):
        batch = collate(samples)
        assert batch["energy_mask"].tolist() == [True, True, True]
        assert batch["stress_mask"].tolist() == [True, False, False]
        assert batch["forces_mask"].tolist() == [True, True, False]
        assert torch.equal(batch["stress"][0], samples[0]["stress"])
        assert (batch["stress"][1:] == 0).all()
    padded = molecular_collate_fn(samples)
    assert torch.equal(padded["forces"][1, :5], samples[1]["forces"])
    assert (padded["forces"][2] == 0).all() and (padded["forces"][0, 3:] == 0).all()
    graph = molecular_collate_fn_no_padding(samples)
    assert torch.equal(graph["forces"][:3], samples[0]["forces"])
    assert torch.equal(graph["forces"][3:8], samples[1]["forces"])
    assert (graph["forces"][8:] == 0).all() and graph["forces"].shape == (10, 3)


def test_label_absent_everywhere_is_absent_from_the_batch():
    samples = [_sample(3, 0, seed=0, labels=("energy",)), _sample(4, 1, seed=1, labels=("energy",))]
    batch = molecular_collate_fn(samples)
    for key in ("forces", "forces_mask", "stress", "stress_mask"):
        assert key not in batch
    assert batch["energy_mask"].all()


def test_extra_keys_are_batched_by_kind_or_rejected_by_name():
    samples = [_sample(3, 0, seed=0), _sample(5, 1, seed=1)]
    for s in samples:
        n = len(s["species"])
        s["charges"] = torch.arange(n, dtype=torch.float64)  # registered per-atom
        s["my_atomic"] = torch.ones(n, 2)  # unregistered, first dim = natoms -> per-atom
        s["my_global"] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # unregistered, same shape -> per-structure
        s["config_type"] = "bulk"  # non-tensor -> list
    padded = molecular_collate_fn(samples)
    assert padded["charges"].tolist()[0] == [0, 1, 2, 0, 0]
    assert padded["my_atomic"].shape == (2, 5, 2) and padded["my_atomic"][0, 3:].abs().sum() == 0
    assert padded["my_global"].shape == (2, 4)
    assert padded["config_type"] == ["bulk", "bulk"]
    graph = molecular_collate_fn_no_padding(samples)
    assert graph["my_atomic"].shape == (8, 2) and graph["my_global"].shape == (2, 4)

    bad = [_sample(3, 0, seed=0), _sample(5, 1, seed=1)]
    bad[0]["weird"], bad[1]["weird"] = torch.zeros(2), torch.zeros(7)
    with pytest.raises(ValueError, match="'weird'"):
        molecular_collate_fn(bad)
    keys = [Key("weird_registered", "structure", (3,))]
    for s in bad:
        del s["weird"]
    bad[0]["weird_registered"], bad[1]["weird_registered"] = torch.zeros(3), torch.zeros(5)
    with pytest.raises(ValueError, match="weird_registered"):
        molecular_collate_fn(bad, keys=keys)


def test_structural_keys_must_be_in_all_samples_or_none():
    samples = [_sample(3, 0, seed=0), _sample(4, 1, seed=1)]
    del samples[1]["cell"]
    with pytest.raises(ValueError, match="'cell'.*structure 1"):
        molecular_collate_fn(samples)
    with pytest.raises(KeyError, match="positions"):
        molecular_collate_fn([{"species": torch.ones(2, dtype=torch.long)}])
    wrong = _sample(3, 7, seed=0)
    wrong["natoms"] = torch.tensor(4)
    with pytest.raises(ValueError, match="structure 7.*natoms=4"):
        molecular_collate_fn([wrong])


def test_edges_are_offset_in_graph_mode_and_refused_in_padded_mode(db_samples):
    from ase.neighborlist import neighbor_list

    from mlff_distiller.data.neighbors import NeighborList

    nl = NeighborList(cutoff=3.0)
    samples = [nl(s) for s in db_samples[:4]]
    batch = molecular_collate_fn_no_padding(samples)
    ptr = batch["ptr"].tolist()
    e0 = 0
    for b, s in enumerate(samples):
        e = s["edge_index"].shape[1]
        assert torch.equal(batch["edge_index"][:, e0 : e0 + e], s["edge_index"] + ptr[b])
        assert torch.equal(batch["shifts"][e0 : e0 + e], s["shifts"])
        e0 += e
    assert e0 == batch["edge_index"].shape[1]
    # independent check: edge vectors from the batch equal ASE's distances
    pos, cell = batch["positions"], batch["cell"][batch["batch"][batch["edge_index"][0]]]
    i, j = batch["edge_index"]
    vec = pos[j] - pos[i] + torch.einsum("ek,ekl->el", batch["shifts"].to(pos.dtype), cell)
    ref = []
    for s in db_samples[:4]:
        atoms = ase.Atoms(numbers=s["species"].numpy(), positions=s["positions"].numpy(),
                          cell=s["cell"].numpy(), pbc=s["pbc"].numpy())
        ref.append(np.sort(neighbor_list("d", atoms, 3.0)))
    got = torch.linalg.vector_norm(vec, dim=1).numpy()
    e0 = 0
    for b, s in enumerate(samples):
        e = s["edge_index"].shape[1]
        np.testing.assert_allclose(np.sort(got[e0 : e0 + e]), ref[b], rtol=1e-12)
        e0 += e
    with pytest.raises(ValueError, match=r"neighbor lists need graph batching \(use_padding=False\)"):
        molecular_collate_fn(samples)


def test_fast_path_hook_is_used_when_present():
    class Packed(list):
        def collate_fast(self, use_padding: bool) -> dict:
            return {"fast": use_padding}

    assert molecular_collate_fn(Packed()) == {"fast": True}
    assert molecular_collate_fn_no_padding(Packed()) == {"fast": False}


def test_collate_functions_work_with_a_plain_torch_dataloader(data_files):
    ds = MolecularDataset(data_files["ase"], format="ase")
    n = len(ds)
    loader = DataLoader(ds, batch_size=5, collate_fn=molecular_collate_fn)
    seen = torch.cat([b["idx"] for b in loader])
    assert seen.tolist() == list(range(n))
    graph = next(iter(DataLoader(ds, batch_size=4, collate_fn=molecular_collate_fn_no_padding)))
    assert graph["ptr"][-1] == graph["positions"].shape[0] == int(ds.natoms_array()[:4].sum())


def test_collater_with_cutoff_needs_graph_mode():
    with pytest.raises(ValueError, match="use_padding=False"):
        Collater(use_padding=True, cutoff=3.0)
    with pytest.raises(ValueError, match="cutoff"):
        Collater(use_padding=False, cutoff=-1.0)


def test_collater_passes_the_cutoff_to_the_fast_path():
    class Packed(list):
        def collate_fast(self, use_padding: bool, cutoff=None) -> dict:
            return {"fast": use_padding, "cutoff": cutoff}

    assert Collater(use_padding=False, cutoff=2.5)(Packed()) == {"fast": False, "cutoff": 2.5}
    assert Collater(use_padding=True)(Packed()) == {"fast": True, "cutoff": None}
