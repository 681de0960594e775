"""MolecularDataset over every format: values equal what ASE/h5py read, the guide's snippets, bad input."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch
from ase.io import read

from mlff_distiller.data import MolecularDataset, MolecularSubset

FORMATS = ["ase", "xyz", "hdf5"]


def reference_atoms(fmt, path):
    """What ASE (or h5py for the guide layout) reads, as (positions, numbers, cell, pbc, energy, forces, stress)."""
    if fmt == "ase":
        from ase.db import connect

        with connect(path) as db:
            frames = [row.toatoms() for row in db.select(sort="id")]
    elif fmt == "xyz":
        frames = read(path, ":")
    else:
        out = []
        with h5py.File(path, "r") as f:
            for name in sorted(f["structures"], key=int):
                g = f["structures"][name]
                out.append(
                    dict(
                        positions=g["positions"][()],
                        numbers=g["species"][()],
                        cell=g["cell"][()],
                        pbc=g["pbc"][()],
                        energy=g["energy"][()],
                        forces=g["forces"][()],
                        stress=None,
                    )
                )
        return out
    return [
        dict(
            positions=a.positions,
            numbers=a.numbers,
            cell=a.cell.array,
            pbc=a.pbc,
            energy=a.get_potential_energy(),
            forces=a.get_forces(),
            stress=a.get_stress(voigt=False) if "stress" in a.calc.results else None,
        )
        for a in frames
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_float64_samples_equal_what_ase_reads(fmt, data_files):
    ds = MolecularDataset(data_files[fmt], format=fmt, dtype=torch.float64)
    ref = reference_atoms(fmt, data_files[fmt])
    assert len(ds) == len(ref)
    for i, r in enumerate(ref):
        s = ds[i]
        assert torch.equal(s["positions"], torch.from_numpy(r["positions"]))
        assert torch.equal(s["species"], torch.from_numpy(r["numbers"]).long())
        assert torch.equal(s["cell"], torch.from_numpy(np.asarray(r["cell"], dtype=np.float64)))
        assert torch.equal(s["pbc"], torch.from_numpy(np.asarray(r["pbc"])))
        assert s["energy"].item() == float(r["energy"])
        assert torch.equal(s["forces"], torch.from_numpy(r["forces"]))
        if r["stress"] is None:
            assert "stress" not in s
        else:
            assert torch.equal(s["stress"], torch.from_numpy(r["stress"]))
        assert s["natoms"].item() == len(r["numbers"]) and s["idx"].item() == i
        atoms = s["atoms"]
        assert atoms.get_potential_energy() == float(r["energy"])
        assert np.array_equal(atoms.get_forces(), r["forces"])
        assert np.array_equal(atoms.positions, r["positions"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_default_dtype_float32_and_dtypes(fmt, data_files):
    s = MolecularDataset(data_files[fmt], format=fmt)[0]
    assert s["positions"].dtype == torch.float32 and s["energy"].dtype == torch.float32
    assert s["species"].dtype == torch.int64 and s["pbc"].dtype == torch.bool
    assert s["positions"].shape == (s["natoms"].item(), 3) and s["cell"].shape == (3, 3)


@pytest.mark.parametrize("fmt", FORMATS)
def test_cache_returns_the_same_values(fmt, data_files):
    plain = MolecularDataset(data_files[fmt], format=fmt, dtype=torch.float64, return_atoms=False)
    cached = MolecularDataset(data_files[fmt], format=fmt, dtype=torch.float64, return_atoms=False, cache=True)
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    # a transform changing a cached sample in place must not corrupt the cache
    s = cached[0]
    s["positions"] += 1.0
    assert torch.equal(cached[0]["positions"], plain[0]["positions"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_negative_index_get_atoms_and_natoms(fmt, data_files):
    ds = MolecularDataset(data_files[fmt], format=fmt, dtype=torch.float64)
    assert torch.equal(ds[-1]["positions"], ds[len(ds) - 1]["positions"])
    assert ds[-len(ds)]["idx"].item() == 0
    atoms = ds.get_atoms(2)
    assert np.array_equal(atoms.positions, ds[2]["positions"].numpy())
    assert np.array_equal(ds.natoms_array(), [ds[i]["natoms"].item() for i in range(len(ds))])
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(IndexError):
        ds[-len(ds) - 1]


@pytest.mark.parametrize("fmt", FORMATS)
def test_dataset_pickles_and_reads_after_unpickling(fmt, data_files):
    ds = MolecularDataset(data_files[fmt], format=fmt, dtype=torch.float64)
    ds[0]  # open the handle first: it must not travel
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3]["forces"], ds[3]["forces"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_statistics_match_the_reference(fmt, data_files):
    ds = MolecularDataset(data_files[fmt], format=fmt)
    ref = reference_atoms(fmt, data_files[fmt])
    stats = ds.get_statistics()
    natoms = np.array([len(r["numbers"]) for r in ref])
    energies = np.array([float(r["energy"]) for r in ref])
    forces = np.concatenate([r["forces"] for r in ref])
    assert stats["num_samples"] == len(ref)
    assert stats["natoms_min"] == natoms.min() and stats["natoms_max"] == natoms.max()
    assert stats["natoms_mean"] == pytest.approx(natoms.mean())
    assert stats["energy_mean"] == pytest.approx(energies.mean())
    assert stats["energy_per_atom_mean"] == pytest.approx((energies / natoms).mean())
    assert stats["energy_per_atom_std"] == pytest.approx((energies / natoms).std())
    assert stats["forces_rms"] == pytest.approx(np.sqrt((forces**2).mean()))
    assert set(stats["reference_energies"]) == set(np.unique(np.concatenate([r["numbers"] for r in ref])))


def test_guide_variable_sizes_snippet(data_files, capsys):
    dataset = MolecularDataset(data_files["ase"], format="ase")
    for i in range(len(dataset)):
        sample = dataset[i]
        print(f"Sample {i}: {sample['natoms']} atoms")
    stats = dataset.get_statistics()
    print(f"System sizes: {stats['natoms_min']} - {stats['natoms_max']} atoms")
    print(f"Mean size: {stats['natoms_mean']:.1f} atoms")
    assert "System sizes" in capsys.readouterr().out


def test_subset_maps_indices(data_files):
    ds = MolecularDataset(data_files["ase"], format="ase", dtype=torch.float64)
    sub = MolecularSubset(ds, [5, 1, -1])
    assert len(sub) == 3 and sub.indices == [5, 1, len(ds) - 1]
    assert torch.equal(sub[1]["positions"], ds[1]["positions"])
    assert sub[-1]["idx"].item() == len(ds) - 1
    assert np.array_equal(sub.natoms_array(), ds.natoms_array()[[5, 1, len(ds) - 1]])
    assert sub.get_statistics()["num_samples"] == 3
    with pytest.raises(IndexError):
        sub[3]
    with pytest.raises(IndexError):
        MolecularSubset(ds, [len(ds)])


# -- bad input ------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(FileNotFoundError, match="nope.db"):
        MolecularDataset(missing, format="ase")
    assert not missing.exists()  # nothing was created on the way


def test_unknown_format(data_files):
    with pytest.raises(ValueError, match="supported formats: ase, hdf5, packed, xyz"):
        MolecularDataset(data_files["ase"], format="parquet")


def test_mismatched_format(data_files):
    with pytest.raises(ValueError, match=r"format='ase' does not match.*format='xyz'"):
        MolecularDataset(data_files["xyz"], format="ase")


def test_auto_format(data_files):
    assert len(MolecularDataset(data_files["xyz"], format=None)) == len(MolecularDataset(data_files["xyz"], format="xyz"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_explicit_key_absent_lists_the_keys_found(fmt, data_files):
    with pytest.raises(KeyError, match=r"energy_key='dft_energy' not found.*energy"):
        MolecularDataset(data_files[fmt], format=fmt, energy_key="dft_energy")


def test_bad_dtype(data_files):
    with pytest.raises(ValueError, match="floating"):
        MolecularDataset(data_files["ase"], format="ase", dtype=torch.int64)


@pytest.mark.parametrize("fmt", FORMATS)
def test_dropping_a_dataset_closes_its_file(fmt, data_files):
    import subprocess
    import sys

    code = (
        "import gc\n"
        "from mlff_distiller.data import MolecularDataset\n"
        f"d = MolecularDataset({str(data_files[fmt])!r}, format={fmt!r}); d[0]\n"
        "d = None; gc.collect()\n"
    )
    run = subprocess.run([sys.executable, "-W", "error::ResourceWarning", "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "ResourceWarning" not in run.stderr


def test_explicit_key_first_present_late_in_the_file(tmp_path):
    """stress only on the periodic frames at the end (as in janus-core's mlip_train.xyz): still loads."""
    from ase.build import bulk, molecule
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for k in range(30):
        atoms = molecule("CH4") if k < 28 else bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.01, seed=k)
        atoms.calc = EMT()
        atoms.info["dft_energy"] = atoms.get_potential_energy()
        atoms.arrays["dft_forces"] = atoms.get_forces()
        if atoms.pbc.all():
            atoms.info["dft_stress"] = atoms.get_stress()
        atoms.calc = None
        frames.append(atoms)
    path = tmp_path / "late.xyz"
    write(path, frames)
    keys = dict(energy_key="dft_energy", forces_key="dft_forces", stress_key="dft_stress")
    ds = MolecularDataset(path, format="xyz", dtype=torch.float64, **keys)
    assert "stress" in ds[-1] and "stress" not in ds[0]
    from ase.stress import voigt_6_to_full_3x3_stress

    assert np.array_equal(ds[-1]["stress"].numpy(), voigt_6_to_full_3x3_stress(read(path, -1).info["dft_stress"]))
    with pytest.raises(KeyError, match=r"stress_key='no_stress' not found in any of its 30 structures.*dft_energy"):
        MolecularDataset(path, format="xyz", **{**keys, "stress_key": "no_stress"})
