"""Neighbor lists against ASE's ``neighbor_list('ijSD')`` on every kind of cell, and in batches."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import ase
import ase.build
import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list

from mlff_distiller.data.neighbors import (
    NeighborList,
    batch_neighbors,
    compute_edge_vectors,
    compute_neighbors,
    require_graph_mode,
)

REALDATA = Path(
    os.environ.get("MLFF_REALDATA", Path(__file__).resolve().parents[1].parent / "shared" / "realdata")
)


# --------------------------------------------------------------------------- helpers
def triples(edge_index, shifts) -> set:
    edge_index, shifts = np.asarray(edge_index), np.asarray(shifts)
    return set(zip(edge_index[0].tolist(), edge_index[1].tolist(), map(tuple, shifts.tolist())))


def ase_reference(atoms: ase.Atoms, cutoff: float):
    i, j, S, D = neighbor_list("ijSD", atoms, cutoff)
    return np.stack([i, j]), S, D


def assert_matches_ase(atoms: ase.Atoms, cutoff: float) -> int:
    """Our edge set equals ASE's, vectors and lengths agree, and the list is full and sorted."""
    ours = compute_neighbors(atoms.positions, atoms.cell.array, atoms.pbc, cutoff, with_vectors=True)
    ref_index, ref_shifts, ref_vectors = ase_reference(atoms, cutoff)
    assert ours.edge_index.dtype == np.int64 and ours.shifts.dtype == np.int64
    assert ours.edge_index.shape == (2, len(ref_shifts)) and ours.shifts.shape == (len(ref_shifts), 3)
    assert triples(ours.edge_index, ours.shifts) == triples(ref_index, ref_shifts)
    i, j = ours.edge_index
    # Edge vectors recomputed from the contract formula; lengths within the cutoff.
    recomputed = atoms.positions[j] - atoms.positions[i] + ours.shifts @ atoms.cell.array
    np.testing.assert_allclose(ours.vectors, recomputed, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.distances, np.linalg.norm(recomputed, axis=1), rtol=0, atol=1e-12)
    assert np.all(ours.distances <= cutoff) and np.all(ours.distances > 0)
    # The same vectors ASE gives for the same triple.
    ref_order = np.lexsort((ref_shifts[:, 2], ref_shifts[:, 1], ref_shifts[:, 0], ref_index[1], ref_index[0]))
    np.testing.assert_allclose(ours.vectors, ref_vectors[ref_order], rtol=0, atol=1e-10)
    # Full list: (j, i, -S) for every (i, j, S); no (i, i, 0).
    assert triples(ours.edge_index[::-1], -ours.shifts) == triples(ours.edge_index, ours.shifts)
    assert not np.any((i == j) & np.all(ours.shifts == 0, axis=1))
    # Deterministic order: sorted by (i, j, S0, S1, S2).
    order = np.lexsort((ours.shifts[:, 2], ours.shifts[:, 1], ours.shifts[:, 0], j, i))
    np.testing.assert_array_equal(order, np.arange(len(order)))
    return len(ref_shifts)


def rattled(atoms: ase.Atoms, seed: int, stdev: float = 0.05) -> ase.Atoms:
    atoms = atoms.copy()
    atoms.rattle(stdev, seed=seed)
    return atoms


def triclinic(n_atoms: int, seed: int, pbc=True) -> ase.Atoms:
    rng = np.random.default_rng(seed)
    cell = np.array([[5.0, 0.0, 0.0], [1.7, 4.6, 0.0], [-1.3, 0.9, 4.2]]) + rng.normal(0, 0.3, (3, 3))
    return ase.Atoms("Cu" * n_atoms, scaled_positions=rng.uniform(size=(n_atoms, 3)), cell=cell, pbc=pbc)


# --------------------------------------------------------------------------- the cases of the issue
CASES = {
    "molecule": (lambda: ase.build.molecule("C6H6"), 3.0),
    "molecule_in_box_no_pbc": (lambda: ase.build.molecule("CH3CH2OH", vacuum=2.0), 2.5),
    "fcc_supercell": (lambda: rattled(ase.build.bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2), 0), 4.0),
    "slab_TTF_vacuum": (lambda: rattled(ase.build.fcc111("Al", (3, 3, 3), vacuum=6.0), 1), 4.5),
    "slab_TTF_zero_third_vector": (lambda: rattled(ase.build.fcc111("Al", (2, 2, 3)), 2), 4.5),
    "triclinic": (lambda: triclinic(12, 3), 4.0),
    "triclinic_TFT": (lambda: triclinic(12, 4, pbc=[True, False, True]), 4.0),
    "wire_FFT": (lambda: triclinic(6, 5, pbc=[False, False, True]), 5.0),
    "primitive_cell_cutoff_6": (lambda: ase.build.bulk("Cu", "fcc", a=3.6), 6.0),
    "skewed_small_cell": (
        lambda: ase.Atoms("Si3", scaled_positions=[[0, 0, 0], [0.3, 0.6, 0.1], [0.8, 0.2, 0.5]],
                          cell=[[3.03, 0, 0], [2.81, 0.62, 0], [0.41, 0.33, 2.57]], pbc=True),
        5.0,
    ),
    "unwrapped_positions": (
        lambda: ase.Atoms("Cu4", positions=np.random.default_rng(6).normal(0, 6.0, (4, 3)),
                          cell=3.0 * np.eye(3), pbc=True),
        3.5,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_edges_equal_ase(name):
    build, cutoff = CASES[name]
    assert assert_matches_ase(build(), cutoff) > 0


def test_cell_smaller_than_cutoff_has_many_images_of_one_pair():
    atoms = ase.build.bulk("Cu", "fcc", a=3.6)  # one atom, primitive cell 2.55 Å vectors
    edges = compute_neighbors(atoms.positions, atoms.cell.array, atoms.pbc, 6.0)
    assert edges.edge_index.shape[1] == assert_matches_ase(atoms, 6.0) > 12
    assert set(edges.edge_index.ravel().tolist()) == {0}
    assert len(triples(edges.edge_index, edges.shifts)) == edges.edge_index.shape[1]  # all images distinct


def test_single_atom_sees_its_own_images_but_not_itself():
    atoms = ase.Atoms("Ar", positions=[[0.3, 0.2, 0.1]], cell=2.5 * np.eye(3), pbc=True)
    edges = compute_neighbors(atoms.positions, atoms.cell.array, atoms.pbc, 3.0)
    expected = {(0, 0, s) for s in [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]}
    assert triples(edges.edge_index, edges.shifts) == expected
    assert_matches_ase(atoms, 3.0)


def test_isolated_atoms_give_empty_arrays_of_the_right_shape():
    atoms = ase.Atoms("H2", positions=[[0, 0, 0], [10.0, 0, 0]])
    edges = compute_neighbors(atoms.positions, atoms.cell.array, atoms.pbc, 3.0, with_vectors=True)
    assert len(neighbor_list("i", atoms, 3.0)) == 0
    assert edges.edge_index.shape == (2, 0) and edges.edge_index.dtype == np.int64
    assert edges.shifts.shape == (0, 3) and edges.shifts.dtype == np.int64
    assert edges.vectors.shape == (0, 3) and edges.distances.shape == (0,)
    out = NeighborList(3.0, with_vectors=True)(
        {"positions": torch.tensor(atoms.positions), "cell": torch.zeros(3, 3, dtype=torch.float64),
         "pbc": torch.zeros(3, dtype=torch.bool)}
    )
    assert out["edge_index"].shape == (2, 0) and out["shifts"].shape == (0, 3)
    assert out["edge_vectors"].shape == (0, 3) and out["edge_lengths"].shape == (0,)


def test_one_isolated_atom_among_neighbours():
    atoms = ase.Atoms("H3", positions=[[0, 0, 0], [0.9, 0, 0], [20.0, 0, 0]])
    edges = compute_neighbors(atoms.positions, atoms.cell.array, atoms.pbc, 3.0)
    assert triples(edges.edge_index, edges.shifts) == {(0, 1, (0, 0, 0)), (1, 0, (0, 0, 0))}
    assert_matches_ase(atoms, 3.0)


def test_large_periodic_cell():
    atoms = rattled(ase.build.bulk("Cu", "fcc", a=3.6, cubic=True) * (7, 7, 7), 7)
    assert len(atoms) >= 1000
    assert assert_matches_ase(atoms, 5.0) > 40 * len(atoms)


def test_large_cluster_without_pbc():
    # ASE's neighbor_list takes seconds on a 1000-atom cluster; an all-pairs distance matrix is exact.
    atoms = rattled(ase.build.bulk("Cu", "fcc", a=3.6, cubic=True) * (7, 7, 7), 8)
    atoms.pbc, atoms.cell = False, np.zeros((3, 3))
    assert len(atoms) >= 1000
    edges = compute_neighbors(atoms.positions, atoms.cell.array, atoms.pbc, 4.0)
    distances = np.linalg.norm(atoms.positions[None, :, :] - atoms.positions[:, None, :], axis=-1)
    i, j = np.nonzero((distances < 4.0) & ~np.eye(len(atoms), dtype=bool))
    np.testing.assert_array_equal(edges.edge_index, np.stack([i, j]))  # nonzero's order is (i, j) sorted
    assert not edges.shifts.any()


def test_sorting_falls_back_when_bits_do_not_fit():
    # A huge atom count forces the general lexsort path; both paths must give ASE's set, sorted.
    atoms = ase.Atoms("H", positions=[[0, 0, 0]], cell=0.4 * np.eye(3), pbc=True)
    ours = compute_neighbors(atoms.positions, atoms.cell.array, atoms.pbc, 3.0)
    ref_index, ref_shifts, _ = ase_reference(atoms, 3.0)
    assert len(ref_shifts) > 1000
    assert triples(ours.edge_index, ours.shifts) == triples(ref_index, ref_shifts)
    from mlff_distiller.data import neighbors

    i, j, s = ours.edge_index[0][::-1].copy(), ours.edge_index[1][::-1].copy(), ours.shifts[::-1].copy()
    fast = neighbors._sorted_edges(i, j, s, 1)
    slow = neighbors._sorted_edges(i, j, s, 2**40)  # 2 * 40 index bits > 62: lexsort path
    for a, b, c in zip(fast, slow, (ours.edge_index, ours.shifts)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


# --------------------------------------------------------------------------- real files
def _realdata_structures():
    if not REALDATA.is_dir():
        return []
    out = []
    readers = [
        ("mace/validate.xyz", lambda p: ase.io.read(p, ":3")),
        ("metatrain/mixed_structures.xyz", lambda p: ase.io.read(p, ":")),
        ("metatrain/carbon_allotropes.xyz", lambda p: ase.io.read(p, ":6")),
        ("nequip/Cu-cubic.xyz", lambda p: ase.io.read(p, ":2")),
        ("fairchem/oxides.db", lambda p: [row.toatoms() for row in ase.db.connect(p).select(limit=5)]),
        ("fairchem/bulks.db", lambda p: [row.toatoms() for row in ase.db.connect(p).select(limit=5)]),
    ]
    for rel, read in readers:
        path = REALDATA / rel
        if path.exists():
            out.extend((f"{rel}[{k}]", atoms) for k, atoms in enumerate(read(path)))
    return out


@pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real data folder {REALDATA} is absent")
def test_real_periodic_files_match_ase():
    structures = _realdata_structures()
    periodic = [(name, a) for name, a in structures if a.pbc.any()]
    assert len(periodic) >= 15
    assert any(not a.pbc.all() for _, a in periodic)  # mixed pbc is covered
    for name, atoms in structures:
        for cutoff in (3.0, 5.0):
            try:
                assert_matches_ase(atoms, cutoff)
            except AssertionError as exc:
                raise AssertionError(f"{name}, cutoff {cutoff}: {exc}") from exc


# --------------------------------------------------------------------------- input errors
def test_periodic_axis_without_cell_vector_is_an_error():
    with pytest.raises(ValueError, match=r"pbc is True along axis \[2\]"):
        compute_neighbors(np.zeros((2, 3)), np.diag([5.0, 5.0, 0.0]), [True, True, True], 3.0)


@pytest.mark.parametrize("cutoff", [0.0, -1.0, float("nan"), float("inf"), True, "3"])
def test_bad_cutoff(cutoff):
    with pytest.raises(ValueError, match="cutoff"):
        compute_neighbors(np.zeros((2, 3)), np.zeros((3, 3)), False, cutoff)
    with pytest.raises(ValueError, match="cutoff"):
        NeighborList(cutoff)


def test_bad_shapes_and_non_finite_positions():
    with pytest.raises(ValueError, match=r"positions must have shape \[N, 3\]"):
        compute_neighbors(np.zeros((2, 2)), np.zeros((3, 3)), False, 3.0)
    with pytest.raises(ValueError, match="cell must have shape"):
        compute_neighbors(np.zeros((2, 3)), np.zeros(3), False, 3.0)
    with pytest.raises(ValueError, match="non-finite"):
        compute_neighbors(np.array([[0, 0, np.nan], [0, 0, 0]]), np.zeros((3, 3)), False, 3.0)


def test_transform_error_names_structure_index():
    sample = {"positions": torch.zeros(2, 3), "cell": torch.zeros(3, 3),
              "pbc": torch.ones(3, dtype=torch.bool), "idx": torch.tensor(17)}
    with pytest.raises(ValueError, match="structure 17"):
        NeighborList(3.0)(sample)
    with pytest.raises(KeyError, match="'cell'"):
        NeighborList(3.0)({"positions": torch.zeros(2, 3), "pbc": torch.zeros(3, dtype=torch.bool)})


def test_padded_mode_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match=r"use_padding=False"):
        require_graph_mode(use_padding=True, cutoff=5.0)
    require_graph_mode(use_padding=False, cutoff=5.0)
    require_graph_mode(use_padding=True, cutoff=None)


# --------------------------------------------------------------------------- transform
def sample_of(atoms: ase.Atoms, idx: int = 0, dtype=torch.float64) -> dict:
    return {
        "positions": torch.tensor(atoms.positions, dtype=dtype),
        "species": torch.tensor(atoms.numbers, dtype=torch.int64),
        "cell": torch.tensor(atoms.cell.array, dtype=dtype),
        "pbc": torch.tensor(atoms.pbc, dtype=torch.bool),
        "natoms": torch.tensor(len(atoms)),
        "idx": torch.tensor(idx),
    }


def test_transform_adds_edges_without_touching_the_input():
    atoms = CASES["slab_TTF_vacuum"][0]()
    sample = sample_of(atoms)
    before = {k: v.clone() for k, v in sample.items()}
    out = NeighborList(4.5, with_vectors=True)(sample)
    assert set(sample) == set(before)  # input dict not extended
    for key, value in before.items():
        assert torch.equal(sample[key], value) and out[key] is sample[key]
    assert out["edge_index"].dtype == torch.int64 and out["shifts"].dtype == torch.int64
    assert out["edge_vectors"].dtype == torch.float64 and out["edge_lengths"].dtype == torch.float64
    ref_index, ref_shifts, _ = ase_reference(atoms, 4.5)
    assert triples(out["edge_index"], out["shifts"]) == triples(ref_index, ref_shifts)
    i, j = out["edge_index"]
    expected = atoms.positions[j] - atoms.positions[i] + out["shifts"].numpy() @ atoms.cell.array
    np.testing.assert_allclose(out["edge_vectors"].numpy(), expected, rtol=0, atol=1e-12)
    assert float(out["edge_lengths"].max()) <= 4.5
    assert repr(NeighborList(4.5, with_vectors=True)) == "NeighborList(cutoff=4.5, with_vectors=True)"


def test_float32_sample_uses_the_stored_coordinates():
    atoms = CASES["triclinic"][0]()
    sample = sample_of(atoms, dtype=torch.float32)
    out = NeighborList(4.0, with_vectors=True)(sample)
    widened = atoms.copy()
    widened.positions = sample["positions"].double().numpy()
    widened.cell = sample["cell"].double().numpy()
    ref_index, ref_shifts, _ = ase_reference(widened, 4.0)
    assert triples(out["edge_index"], out["shifts"]) == triples(ref_index, ref_shifts)
    assert out["edge_vectors"].dtype == torch.float32 and out["edge_lengths"].dtype == torch.float32


def test_transform_after_rotation_rotates_edge_vectors():
    atoms = CASES["triclinic_TFT"][0]()
    rotation = torch.tensor(_rotation_matrix(0.7, [1.0, 2.0, -0.5]), dtype=torch.float64)
    sample = sample_of(atoms)
    rotated = dict(sample, positions=sample["positions"] @ rotation.T, cell=sample["cell"] @ rotation.T)
    nl = NeighborList(4.0, with_vectors=True)
    plain, turned = nl(sample), nl(rotated)
    assert torch.equal(plain["edge_index"], turned["edge_index"])
    assert torch.equal(plain["shifts"], turned["shifts"])
    torch.testing.assert_close(turned["edge_vectors"], plain["edge_vectors"] @ rotation.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(turned["edge_lengths"], plain["edge_lengths"], rtol=0, atol=1e-12)


def _rotation_matrix(angle: float, axis) -> np.ndarray:
    axis = np.asarray(axis) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def test_edge_vectors_are_differentiable():
    atoms = CASES["fcc_supercell"][0]()
    sample = NeighborList(4.0)(sample_of(atoms))
    positions = sample["positions"].clone().requires_grad_(True)
    vectors = compute_edge_vectors(positions, sample["edge_index"], sample["shifts"], sample["cell"])
    energy = (torch.linalg.vector_norm(vectors, dim=1) ** 2).sum()
    (grad,) = torch.autograd.grad(energy, positions)
    # d/dpos of sum |D|^2 over a full list: each atom gets -4 * sum_j D_ij (both directions counted).
    expected = torch.zeros_like(positions).index_add_(0, sample["edge_index"][0], -4 * vectors.detach())
    torch.testing.assert_close(grad, expected)


# --------------------------------------------------------------------------- batches
def graph_collate(samples: list[dict]) -> dict:
    """Minimal graph collate for these tests: concatenate atoms, offset edges by ptr."""
    natoms = torch.stack([s["natoms"] for s in samples])
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(natoms, 0)])
    batch = {
        "positions": torch.cat([s["positions"] for s in samples]),
        "species": torch.cat([s["species"] for s in samples]),
        "batch": torch.repeat_interleave(torch.arange(len(samples)), natoms),
        "ptr": ptr,
        "natoms": natoms,
        "cell": torch.stack([s["cell"] for s in samples]),
        "pbc": torch.stack([s["pbc"] for s in samples]),
        "idx": torch.stack([s["idx"] for s in samples]),
        "energy": torch.arange(len(samples), dtype=torch.float64),
        "total_atoms": int(ptr[-1]),
    }
    if "edge_index" in samples[0]:
        batch["edge_index"] = torch.cat([s["edge_index"] + p for s, p in zip(samples, ptr[:-1])], dim=1)
        for key in ("shifts", "edge_vectors", "edge_lengths"):
            if key in samples[0]:
                batch[key] = torch.cat([s[key] for s in samples])
    return batch


def mixed_structures() -> list[ase.Atoms]:
    names = ("molecule", "slab_TTF_vacuum", "triclinic", "primitive_cell_cutoff_6")
    isolated = ase.Atoms("H2", positions=[[0, 0, 0], [10.0, 0, 0]])  # a structure with no edges
    return [CASES[name][0]() for name in names] + [isolated]


def test_batch_neighbors_equals_per_structure_lists_offset():
    structures = mixed_structures()
    samples = [sample_of(a, k) for k, a in enumerate(structures)]
    batch = graph_collate(samples)
    edges = batch_neighbors(batch, 4.0, with_vectors=True)
    expected = graph_collate([NeighborList(4.0, with_vectors=True)(s) for s in samples])
    for key in ("edge_index", "shifts", "edge_vectors", "edge_lengths"):
        torch.testing.assert_close(edges[key], expected[key], rtol=0, atol=1e-12)
    # Per structure, the offset edges equal ASE's.
    for b, atoms in enumerate(structures):
        mask = batch["batch"][edges["edge_index"][0]] == b
        local = edges["edge_index"][:, mask] - batch["ptr"][b]
        ref_index, ref_shifts, _ = ase_reference(atoms, 4.0)
        assert triples(local, edges["shifts"][mask]) == triples(ref_index, ref_shifts)
    # Without ptr, natoms is enough.
    no_ptr = {k: v for k, v in batch.items() if k != "ptr"}
    assert torch.equal(batch_neighbors(no_ptr, 4.0)["edge_index"], edges["edge_index"])


def test_batch_neighbors_error_names_the_structure():
    bad = sample_of(ase.Atoms("H2", positions=[[0, 0, 0], [1.0, 0, 0]]), idx=41)
    bad["pbc"] = torch.ones(3, dtype=torch.bool)
    batch = graph_collate([sample_of(ase.build.molecule("H2O"), 3), bad])
    with pytest.raises(ValueError, match="structure 41"):
        batch_neighbors(batch, 3.0)


class _AtomsDataset(torch.utils.data.Dataset):
    def __init__(self, structures, transform):
        self.structures, self.transform = structures, transform

    def __len__(self):
        return len(self.structures)

    def __getitem__(self, i):
        return self.transform(sample_of(self.structures[i], i))


def test_transform_in_dataloader_workers():
    structures = mixed_structures() * 2
    # Use vesin in the parent (all threads) before forking workers: they must not hang or differ.
    compute_neighbors(structures[1].positions, structures[1].cell.array, structures[1].pbc, 4.0, n_threads=0)
    dataset = _AtomsDataset(structures, NeighborList(4.0))
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=graph_collate)
    batches = list(loader)
    assert sum(len(b["natoms"]) for b in batches) == len(structures)
    for batch in batches:
        direct = batch_neighbors(batch, 4.0)
        assert torch.equal(batch["edge_index"], direct["edge_index"])
        assert torch.equal(batch["shifts"], direct["shifts"])


# --------------------------------------------------------------------------- PyG interop
def test_to_pyg_batch():
    pyg = pytest.importorskip("torch_geometric")
    from mlff_distiller.data.interop import to_pyg_batch

    structures = mixed_structures()
    samples = [NeighborList(4.0, with_vectors=True)(sample_of(a, k)) for k, a in enumerate(structures)]
    batch = graph_collate(samples)
    out = to_pyg_batch(batch)
    assert isinstance(out, pyg.data.Batch) and out.num_graphs == len(structures)
    assert torch.equal(out.pos, batch["positions"]) and torch.equal(out.z, batch["species"])
    assert torch.equal(out.batch, batch["batch"]) and torch.equal(out.ptr, batch["ptr"])
    same = ("edge_index", "shifts", "edge_vectors", "edge_lengths", "cell", "pbc", "energy", "natoms", "idx")
    for key in same:
        assert torch.equal(out[key], batch[key]), key
    # Structure 1 round-trips through PyG's own un-batching with local indices.
    data = out.to_data_list()[1]
    assert torch.equal(data.edge_index, samples[1]["edge_index"])
    assert torch.equal(data.pos, samples[1]["positions"]) and data.cell.shape == (1, 3, 3)
    renamed = to_pyg_batch(batch, key_map={"species": "atomic_numbers"})
    assert torch.equal(renamed.atomic_numbers, batch["species"])


def test_to_pyg_batch_rejects_ambiguous_keys():
    pytest.importorskip("torch_geometric")
    from mlff_distiller.data.interop import to_pyg_batch

    batch = graph_collate([sample_of(ase.Atoms("H", cell=2 * np.eye(3), pbc=True), k) for k in range(2)])
    batch["mystery"] = torch.zeros(2)  # 2 atoms and 2 structures: cannot tell
    with pytest.raises(ValueError, match="mystery"):
        to_pyg_batch(batch)


def test_to_pyg_batch_without_pyg_names_the_install(monkeypatch):
    from mlff_distiller.data.interop import to_pyg_batch

    monkeypatch.setitem(sys.modules, "torch_geometric", None)  # makes `import torch_geometric` fail
    monkeypatch.setitem(sys.modules, "torch_geometric.data", None)
    with pytest.raises(ImportError, match="pip install torch_geometric"):
        to_pyg_batch(graph_collate([sample_of(ase.build.molecule("H2O"))]))


@pytest.mark.parametrize("tiny_cell", [False, True])
def test_batch_edges_equal_per_structure_lists(tiny_cell):
    # The packed fast path builds one sorted key per structure (shift-table path, |S| <= 7);
    # a cell much smaller than the cutoff (|S| > 7) takes the general path. Both must give
    # exactly the per-structure lists, offset by ptr, in the same (i, j, S) order.
    from mlff_distiller.data.neighbors import batch_edges
    from mlff_distiller.data.structure import Structure
    from mlff_distiller.data.structure_batch import StructureBatch

    structures = [
        Structure(positions=a.positions, numbers=a.numbers, cell=a.cell.array, pbc=a.pbc)
        for a in (rattled(ase.build.bulk("Cu", "fcc", a=3.6) * (2, 2, 2), 1), rattled(ase.build.molecule("CH3CH2OH"), 2))
    ]
    if tiny_cell:
        structures.insert(1, Structure(positions=np.zeros((1, 3)), numbers=np.array([1]), cell=0.35 * np.eye(3),
                                       pbc=np.array([True, True, True])))
    batch = StructureBatch.from_structures(structures, range(len(structures)))
    edge_index, shifts = batch_edges(batch.positions, batch.cell, batch.pbc, batch.ptr, 3.0)
    parts = [compute_neighbors(s.positions, s.cell, s.pbc, 3.0) for s in structures]
    starts = batch.ptr[:-1]
    np.testing.assert_array_equal(edge_index, np.concatenate([p.edge_index + a for p, a in zip(parts, starts)], axis=1))
    np.testing.assert_array_equal(shifts, np.concatenate([p.shifts for p in parts]))
    assert edge_index.dtype == shifts.dtype == np.int64
    assert (np.abs(shifts).max() > 7) == tiny_cell
