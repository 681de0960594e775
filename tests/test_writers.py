"""Writers: what ASE / h5py read back from our files is bit-for-bit what was written."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.db import connect
from ase.io import read, write

from mlff_distiller.data.structure import Structure
from mlff_distiller.data.writers import structure_difference, to_atoms, write_structures


def _hard_floats(shape, rng) -> np.ndarray:
    """float64 values that '%16.8f' or '%.15g' would not keep: thirds, tiny, huge, -0.0."""
    values = rng.normal(size=shape) / 3.0
    flat = values.reshape(-1)
    flat[:4] = [1.0 / 3.0, 1e-300, -0.0, 0.1 + 0.2][: flat.size]
    return values


def _structures() -> list[Structure]:
    """Periodic (with stress), molecular (no stress) and unlabeled structures with awkward floats."""
    from ase.build import bulk, molecule

    rng = np.random.default_rng(7)
    out = []
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    cu.positions += rng.normal(scale=0.05, size=cu.positions.shape) / 3.0
    cu.cell = cu.cell.array + np.triu(rng.normal(scale=1e-3, size=(3, 3))) / 7.0
    cu.calc = EMT()
    out.append(
        Structure(
            positions=cu.positions.copy(),
            numbers=cu.numbers.astype(np.int64),
            cell=cu.cell.array.copy(),
            pbc=cu.pbc.copy(),
            energy=np.asarray(cu.get_potential_energy()),
            forces=cu.get_forces().copy(),
            stress=cu.get_stress(voigt=False).copy(),
        )
    )
    h2o = molecule("H2O")
    n = len(h2o)
    out.append(
        Structure(
            positions=h2o.positions + _hard_floats((n, 3), rng),
            numbers=h2o.numbers.astype(np.int64),
            cell=np.zeros((3, 3)),
            pbc=np.zeros(3, bool),
            energy=np.asarray(-14.0 / 3.0),
            forces=_hard_floats((n, 3), rng),
        )
    )
    # mixed pbc, no labels at all
    out.append(
        Structure(
            positions=_hard_floats((2, 3), rng),
            numbers=np.array([29, 79], np.int64),
            cell=np.diag([5.0 / 3.0, 7.1, 0.0]),
            pbc=np.array([True, True, False]),
        )
    )
    return out


def _check_atoms(structure: Structure, atoms) -> None:
    np.testing.assert_array_equal(atoms.numbers, structure.numbers)
    assert np.array_equal(atoms.positions, structure.positions)
    assert np.array_equal(atoms.cell.array, structure.cell)
    assert np.array_equal(atoms.pbc, structure.pbc)
    results = atoms.calc.results if atoms.calc is not None else {}
    if structure.energy is None:
        assert "energy" not in results
    else:
        assert atoms.get_potential_energy() == float(structure.energy)
    if structure.forces is None:
        assert "forces" not in results
    else:
        assert np.array_equal(atoms.get_forces(), structure.forces)
    if structure.stress is None:
        assert "stress" not in results
    else:
        assert np.array_equal(atoms.get_stress(voigt=False), structure.stress)


def test_xyz_is_bit_exact_where_ase_writer_is_not(tmp_path):
    structures = _structures()
    path = tmp_path / "s.xyz"
    assert write_structures(path, structures) == len(structures)
    images = read(path, ":")
    assert len(images) == len(structures)
    for s, atoms in zip(structures, images):
        _check_atoms(s, atoms)
    # the reference: ASE's own writer rounds per-atom columns to 8 decimals
    write(tmp_path / "ase.xyz", [to_atoms(s) for s in structures])
    lossy = read(tmp_path / "ase.xyz", ":")
    assert not np.array_equal(lossy[1].positions, structures[1].positions)


def test_ase_db_labels_in_calculator(tmp_path):
    structures = _structures()
    path = tmp_path / "s.db"
    write_structures(path, structures)
    with connect(path) as db:
        rows = list(db.select(sort="id"))
    assert len(rows) == len(structures)
    for s, row in zip(structures, rows):
        _check_atoms(s, row.toatoms())
    # ase.io.read of the database sees the same
    for s, atoms in zip(structures, read(path, ":")):
        _check_atoms(s, atoms)


def test_hdf5_guide_layout_raw_arrays(tmp_path):
    structures = _structures()
    structures[0].forces = structures[0].forces.astype(np.float32)  # dtype kept as given
    path = tmp_path / "s.h5"
    write_structures(path, structures, "hdf5")
    with h5py.File(path, "r") as f:
        groups = f["structures"]
        assert list(groups) == ["0", "1", "2"]
        for i, s in enumerate(structures):
            g = groups[str(i)]
            assert np.array_equal(g["positions"][()], s.positions)
            assert g["species"].dtype == np.int64 and np.array_equal(g["species"][()], s.numbers)
            assert np.array_equal(g["cell"][()], s.cell)
            assert np.array_equal(g["pbc"][()], s.pbc)
            for label in ("energy", "forces", "stress"):
                value = getattr(s, label)
                if value is None:
                    assert label not in g
                else:
                    assert g[label].dtype == value.dtype
                    assert g[label].shape == np.shape(value)
                    assert np.array_equal(g[label][()], value)


def test_many_groups_keep_numeric_order(tmp_path):
    s = _structures()[1]
    path = tmp_path / "many.h5"
    structures = []
    for k in range(12):
        structures.append(Structure(s.positions + k, s.numbers, s.cell, s.pbc, np.asarray(float(k))))
    write_structures(path, structures, "hdf5")
    with h5py.File(path, "r") as f:
        energies = [float(f["structures"][str(k)]["energy"][()]) for k in range(12)]
    assert energies == list(range(12))


def test_never_overwrites_unless_asked(tmp_path):
    structures = _structures()
    path = tmp_path / "s.xyz"
    path.write_text("precious\n")
    with pytest.raises(FileExistsError, match="s.xyz"):
        write_structures(path, structures)
    assert path.read_text() == "precious\n"
    write_structures(path, structures, overwrite=True)
    assert len(read(path, ":")) == 3


@pytest.mark.parametrize("fmt", ["ase", "xyz", "hdf5"])
def test_failed_write_leaves_nothing(tmp_path, fmt):
    structures = _structures()

    def broken():
        yield structures[0]
        raise ValueError("teacher exploded")

    path = tmp_path / f"s.{ {'ase': 'db', 'xyz': 'xyz', 'hdf5': 'h5'}[fmt] }"
    with pytest.raises(ValueError, match="teacher exploded"):
        write_structures(path, broken(), fmt)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", ["db", "xyz"])
def test_asymmetric_stress_refused_by_ase_formats(tmp_path, suffix):
    s = _structures()[0]
    s.stress = s.stress.copy()
    s.stress[0, 1] += 1e-9
    with pytest.raises(ValueError, match="structure 0, key 'stress'.*not symmetric"):
        write_structures(tmp_path / f"s.{suffix}", [s])
    assert not (tmp_path / f"s.{suffix}").exists()
    write_structures(tmp_path / "s.h5", [s])  # hdf5 keeps all 9 values
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert np.array_equal(f["structures/0/stress"][()], s.stress)


def test_unknown_format_and_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="unknown format 'cif'"):
        write_structures(tmp_path / "s.xyz", _structures(), "cif")
    with pytest.raises(ValueError, match="suffix '.foo'"):
        write_structures(tmp_path / "s.foo", _structures())
    with pytest.raises(FileNotFoundError):
        write_structures(tmp_path / "nowhere" / "s.xyz", _structures())


def test_structure_difference():
    a, b = _structures()[:2]
    assert structure_difference(a, a) is None
    c = Structure(a.positions.copy(), a.numbers, a.cell, a.pbc, a.energy, a.forces, None)
    assert "stress" in structure_difference(a, c)
    c.stress = a.stress
    c.positions[0, 0] = np.nextafter(c.positions[0, 0], 1.0)
    assert "positions" in structure_difference(a, c)
    assert "numbers" in structure_difference(a, b)


def test_packed_delegates_to_the_packed_writer(tmp_path):
    structures = _structures()
    path = tmp_path / "s.h5"
    assert write_structures(path, structures, "packed") == 3
    with h5py.File(path, "r") as f:  # raw arrays: concatenated atoms, per-structure rows
        assert f.attrs["mlff_distiller_format"] in ("packed", b"packed")
        offsets = f["offsets"][()]
        assert offsets.tolist() == [0, 8, 11, 13]
        assert np.array_equal(f["positions"][()], np.concatenate([s.positions for s in structures]))
        assert f["energy_present"][()].tolist() == [True, True, False]
        assert f["stress_present"][()].tolist() == [True, False, False]
        assert np.array_equal(f["stress"][0], structures[0].stress)
    with pytest.raises(FileExistsError):
        write_structures(path, structures, "packed")


@pytest.mark.parametrize("fmt, suffix", [("ase", ".db"), ("xyz", ".xyz"), ("hdf5", ".h5"), ("packed", ".h5")])
@pytest.mark.parametrize("key", ["positions", "cell", "energy", "forces", "stress"])
def test_non_finite_values_are_never_written(tmp_path, fmt, suffix, key):
    """A NaN/inf anywhere: DataFormatError naming the file, structure index and key; no file left."""
    from mlff_distiller.data.errors import DataFormatError

    structures = _structures()
    bad = structures[0]  # the periodic one carries every key
    value = np.array(getattr(bad, key), dtype=np.float64)
    value.reshape(-1)[-1] = np.nan if key != "cell" else np.inf
    setattr(bad, key, value)
    ordered = [structures[1], bad, structures[2]]  # the bad one is structure 1
    path = tmp_path / f"out{suffix}"
    with pytest.raises(DataFormatError) as info:
        write_structures(path, ordered, fmt)
    message = str(info.value)
    assert str(path) in message and "structure 1" in message and f"key '{key}'" in message, message
    assert list(tmp_path.iterdir()) == []
