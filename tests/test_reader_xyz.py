"""XyzReader against ASE's own extxyz reader: every value bit for bit, on written and real files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms, units
from ase.io import read, write
from ase.stress import voigt_6_to_full_3x3_stress

from mlff_distiller.data.errors import DataFormatError
from mlff_distiller.data.labels import LabelKeys
from mlff_distiller.data.readers import open_reader
from mlff_distiller.data.readers.xyz import XyzReader, index_frames


def _realdata() -> Path:
    env = os.environ.get("MLFF_REALDATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


REALDATA = _realdata()
XYZ_FILES = (
    sorted(str(p.relative_to(REALDATA)) for ext in ("*.xyz", "*.extxyz") for p in REALDATA.rglob(ext))
    if REALDATA.is_dir()
    else []
)
needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real data folder {REALDATA} is absent")

#: files ASE cannot read at all (checked below), compared with values taken from the raw text
ASE_FAILS = {"dpdata/stress_voigt.xyz", "dpdata/xyz_unittest.field.xyz"}
#: files ASE reads but loses labels of (plain XYZ energy + force columns)
ASE_LOSES = {"schnetpack/ethanol_snip.xyz"}
#: comment-line units -> (energy factor, force factor) to eV, eV/Å
UNIT_FILES = {
    "dpdata/virial_hartree.xyz": (units.Hartree, units.Hartree / units.Bohr),
    "dpdata/energy_kcal_mol.xyz": (units.kcal / units.mol, units.kcal / units.mol),
}
REF = dict(energy_key="REF_energy", forces_key="REF_forces", stress_key="REF_stress")
MACE_MP = dict(energy_key="mace_mp_energy", forces_key="mace_mp_forces", stress_key="mace_mp_stress")
#: key sets from MANIFEST.md beyond the defaults
EXTRA_KEYS = {
    "metatrain/pbesol_Au_alloys_MAD_compatible_100.xyz": [REF],
    "workflow/B_DFT_data.xyz": [REF],
    "metatrain/hydrogen.xyz": [dict(energy_key="DFT_energy", forces_key="DFT_forces")],
    "workflow/EMT_atoms.xyz": [dict(energy_key="DFT_energy", forces_key="DFT_forces", stress_key="DFT_stress")],
    "workflow/configs_for_error_test.xyz": [
        dict(energy_key="dft_energy", forces_key="dft_forces"),
        dict(energy_key="mace_energy", forces_key="mace_forces"),
    ],
    "workflow/simple_gap_training_set.xyz": [dict(energy_key="dft_energy", forces_key="dft_forces")],
    "janus-core/mlip_train.xyz": [dict(energy_key="dft_energy", forces_key="dft_forces", stress_key="dft_stress")],
    "janus-core/NaCl-results.extxyz": [MACE_MP],
    "janus-core/LiFePO4-neb-band.xyz": [MACE_MP],
    "metatrain/qm9_reduced_100.xyz": [dict(energy_key="U0")],
    "nequip/Cu-cubic.xyz": [dict(energy_key="free_energy")],
    "acepotentials/TiAl_tutorial_DB_tenth.xyz": [dict(forces_key="force", stress_key="virial")],
}
#: (file, keys index or None for defaults) -> frames carrying (energy, forces, stress), from MANIFEST.md
EXPECTED_COUNTS = {
    ("metatrain/carbon_reduced_100.xyz", None): (100, 100, 100),  # force + virial aliases
    ("acepotentials/TiAl_tutorial_DB_tenth.xyz", None): (33, 33, 33),
    ("acepotentials/TiAl_tutorial_DB_tenth.xyz", 0): (33, 33, 33),
    ("dpdata/energy_key_variants.xyz", None): (1, 1, 0),  # Energy + force
    ("dpdata/stresses_key.xyz", None): (1, 1, 1),
    ("dpdata/virials_key.xyz", None): (1, 1, 1),
    ("dpdata/stress_voigt.xyz", None): (1, 1, 1),
    ("dpdata/xyz_unittest.field.xyz", None): (3, 3, 3),
    ("dpdata/virial_hartree.xyz", None): (1, 1, 1),
    ("schnetpack/ethanol_snip.xyz", None): (3, 3, 0),
    ("janus-core/LiFePO4-neb-band.xyz", None): (5, 5, 5),
    ("janus-core/LiFePO4-neb-band.xyz", 0): (5, 5, 5),
    ("metatrain/pbesol_Au_alloys_MAD_compatible_100.xyz", 0): (100, 100, 100),
    ("workflow/B_DFT_data.xyz", 0): (39, 39, 30),
    ("workflow/simple_gap_training_set.xyz", 0): (18, 15, 0),
    ("janus-core/mlip_train.xyz", 0): (22, 22, 18),
    ("fairchem/toy_c3h8_relax.extxyz", None): (101, 101, 0),
    ("mace/validate.xyz", None): (200, 200, 200),
    ("metatrain/mixed_structures.xyz", None): (15, 15, 5),  # stress="nan ..." on 10 frames
    ("metatrain/qm9_reduced_100.xyz", 0): (100, 0, 0),
}

CASES = [(name, None) for name in XYZ_FILES] + [
    (name, k) for name in XYZ_FILES for k in range(len(EXTRA_KEYS.get(name, [])))
]


def _keys(name: str, k) -> dict:
    return {} if k is None else EXTRA_KEYS[name][k]


# ----------------------------------------------------------------------------------------
# The reference: what ASE reads, labels looked up where ASE put them
# ----------------------------------------------------------------------------------------


def ase_label(atoms: Atoms, keys: LabelKeys, label: str):
    """(key, value) of ``label`` in ASE's calc results, info or arrays, or (None, None)."""
    results = atoms.calc.results if atoms.calc is not None else {}
    for key in keys.candidates(label):
        for source in (results, atoms.info, atoms.arrays):
            if key in source:
                return key, source[key]
    return None, None


def reference_stress(key: str, value, atoms: Atoms):
    """[3, 3] stress from a stored stress/virial: Voigt 6, column-major 9 (extxyz) or 3x3."""
    v = np.asarray(value, dtype=np.float64)
    if np.all(np.isnan(v)):
        return None
    if v.shape == (6,):
        m = voigt_6_to_full_3x3_stress(v)
    elif v.shape == (9,):
        m = v.reshape(3, 3, order="F")
    else:
        m = v.reshape(3, 3)
    if "virial" in key.lower():
        m = -m / atoms.get_volume()
    return m


def reference_labels(atoms: Atoms, keys: LabelKeys) -> dict:
    out = {}
    key, value = ase_label(atoms, keys, "energy")
    out["energy"] = None if key is None else np.float64(value)
    key, value = ase_label(atoms, keys, "forces")
    out["forces"] = None if key is None else np.asarray(value, dtype=np.float64)
    key, value = ase_label(atoms, keys, "stress")
    out["stress"] = None if key is None else reference_stress(key, value, atoms)
    return out


def assert_bits(actual, expected, what: str) -> None:
    """Equal float64 bit patterns (so -0.0 != 0.0 and NaN == NaN would be told apart)."""
    assert expected is not None, f"{what}: reader found a value ASE does not have"
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.dtype == np.float64, f"{what}: dtype {actual.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.array_equal(actual.view(np.int64), expected.astype(np.float64).view(np.int64)), what


def assert_same_structure(s, atoms: Atoms, labels: dict, what: str, *, factors=(1.0, 1.0)) -> None:
    assert_bits(s.positions, atoms.positions, f"{what} positions")
    assert s.numbers.dtype == np.int64 and np.array_equal(s.numbers, atoms.numbers), f"{what} numbers"
    assert_bits(s.cell, atoms.cell.array, f"{what} cell")
    assert s.pbc.dtype == bool and np.array_equal(s.pbc, atoms.pbc), f"{what} pbc"
    for label in ("energy", "forces", "stress"):
        expected = labels[label]
        actual = getattr(s, label)
        if expected is None:
            assert actual is None, f"{what} {label}: reader found a label ASE does not have"
            continue
        assert actual is not None, f"{what} {label}: missing"
        factor = factors[1] if label == "forces" else factors[0]
        if factor == 1.0:
            assert_bits(actual, expected, f"{what} {label}")
        else:  # converted units: value x factor
            np.testing.assert_allclose(actual, expected * factor, rtol=1e-14, atol=0, err_msg=f"{what} {label}")


# ----------------------------------------------------------------------------------------
# Real files
# ----------------------------------------------------------------------------------------


@needs_realdata
def test_realdata_has_xyz_files():
    assert len(XYZ_FILES) >= 30, XYZ_FILES


@needs_realdata
@pytest.mark.parametrize("name,k", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_realdata_matches_ase(name, k):
    path = REALDATA / name
    keys = _keys(name, k)
    reader = XyzReader(path, **keys)
    label_keys = LabelKeys(**{key.split("_")[0]: v for key, v in keys.items()})
    if name in ASE_FAILS:
        with pytest.raises(Exception):
            read(path, ":", format="extxyz")
        frames = _ase_frames_of_repaired_copy(name, path)
    else:
        frames = read(path, ":", format="extxyz")
    assert len(reader) == len(frames)
    assert reader.natoms_array().dtype == np.int64
    assert np.array_equal(reader.natoms_array(), [len(a) for a in frames])
    counts = [0, 0, 0]
    for i, atoms in enumerate(frames):
        s = reader.read(i)
        if name in ASE_LOSES:
            assert atoms.calc is None and "forces" not in atoms.arrays  # what ASE drops
            labels = _plain_xyz_labels(path, i)
        else:
            labels = reference_labels(atoms, label_keys)
        if name == "dpdata/stress_voigt.xyz":
            labels["stress"] = reference_stress("stress", atoms.info["REF_stress"], atoms)
        assert_same_structure(s, atoms, labels, f"{name}[{i}]", factors=UNIT_FILES.get(name, (1.0, 1.0)))
        for j, label in enumerate(("energy", "forces", "stress")):
            counts[j] += getattr(s, label) is not None
    if (name, k) in EXPECTED_COUNTS:
        assert tuple(counts) == EXPECTED_COUNTS[(name, k)]


def _ase_frames_of_repaired_copy(name: str, path: Path) -> list[Atoms]:
    """ASE's reading of the same content, edited by hand into something ASE accepts."""
    text = path.read_text()
    if name == "dpdata/stress_voigt.xyz":
        text = text.replace(" stress=", " REF_stress=")  # 6 Voigt values under a non-special key
    elif name == "dpdata/xyz_unittest.field.xyz":
        text = "".join(line for line in text.splitlines(True) if line.strip() and not line.startswith("#"))
    return read(__import__("io").StringIO(text), ":", format="extxyz")


def _plain_xyz_labels(path: Path, i: int) -> dict:
    """schnetpack's plain XYZ: comment line = energy, columns 5-7 = forces (taken from the text)."""
    lines = path.read_text().splitlines()
    natoms = int(lines[0])
    start = i * (natoms + 2)
    rows = [line.split() for line in lines[start + 2 : start + 2 + natoms]]
    return {
        "energy": np.float64(float(lines[start + 1])),
        "forces": np.array([[float(x) for x in row[4:7]] for row in rows]),
        "stress": None,
    }


def _same_info(mine: dict, theirs: dict) -> bool:
    if mine.keys() != theirs.keys():
        return False
    for key, value in theirs.items():
        other = mine[key]
        if type(other) is not type(value):
            return False
        if isinstance(value, np.ndarray):
            if value.dtype != other.dtype or not np.array_equal(value, other, equal_nan=value.dtype.kind == "f"):
                return False
        elif value != other:
            return False
    return True


TRICKY_COMMENTS = [
    'a = b c="x"y d=e=f g=[1, 2] h={3 4} flag energy=1.5',
    r'name="say \"hi\"" energy=-2',
    "Lattice='1 0 0 0 1 0 0 0 1' pbc=[T,T,F] energy=1e-3 stress=\"1 2 3 4 5 6 7 8 9\"",
    'energy=2 energy=3 x=_JSON',
]


@needs_realdata
def test_comment_keys_cut_out_parse_as_in_the_whole_line():
    """parse_comment(only=...) gives ASE's values for the wanted keys, on every real header."""
    from ase.io.extxyz import key_val_str_to_dict

    from mlff_distiller.data.readers.xyz import parse_comment

    headers = list(TRICKY_COMMENTS)
    for name in XYZ_FILES:
        if name in ASE_FAILS or name in ASE_LOSES:
            continue
        reader = XyzReader(REALDATA / name)
        raw = (REALDATA / name).read_bytes()
        for i in range(len(reader)):
            text = raw[reader._index.start[i] : reader._index.stop[i]].decode()
            headers.append(text.split("\n")[1].strip())
    for line in headers:
        full = key_val_str_to_dict(line) if line else {}
        wanted = sorted(full)
        for only in (frozenset(wanted), frozenset(wanted[::2]), frozenset(wanted[1::2])):
            part = parse_comment(line, path="x", index=0, only=only)
            assert _same_info(part, {k: v for k, v in full.items() if k in only}), (line, sorted(only))


@needs_realdata
def test_raw_values_of_files_ase_cannot_read():
    voigt = XyzReader(REALDATA / "dpdata/stress_voigt.xyz").read(0)
    assert_bits(voigt.stress, [[0.01, 0.006, 0.005], [0.006, 0.02, 0.004], [0.005, 0.004, 0.03]], "voigt")
    assert_bits(voigt.energy, -1.5, "energy")
    assert_bits(voigt.forces, [[0.1, 0, 0], [-0.1, 0, 0], [0, 0, 0]], "forces")

    field = XyzReader(REALDATA / "dpdata/xyz_unittest.field.xyz")
    assert field.natoms_array().tolist() == [12, 10, 10]
    s0 = field.read(0)
    # first atom line: force columns first, then pos, species, Z
    assert_bits(s0.forces[0], [-7.255659, -8.829194, 4.687432], "field forces")
    assert_bits(s0.positions[0], [3.19567, 0.97965, 1.5225], "field positions")
    assert s0.numbers[0] == 5
    assert_bits(s0.energy, 2.397023, "field energy")

    snip = XyzReader(REALDATA / "schnetpack/ethanol_snip.xyz").read(0)
    assert_bits(snip.energy, -97208.40600498248, "snip energy")
    assert_bits(snip.forces[0], [1.4517297437249999, 6.01923561735, 5.2067503058e-07], "snip forces")


@needs_realdata
def test_units_recorded():
    hartree = XyzReader(REALDATA / "dpdata/virial_hartree.xyz")
    assert "hartree -> eV" in hartree.units["energy"]
    assert "hartree/bohr -> eV/Å" in hartree.units["forces"]
    assert "stress" in hartree.units
    s = hartree.read(0)
    assert_bits(s.energy, -1.0 * units.Hartree, "energy")
    np.testing.assert_allclose(s.stress, -np.eye(3) * units.Hartree / 125.0, rtol=1e-15)
    kcal = XyzReader(REALDATA / "dpdata/energy_kcal_mol.xyz")
    assert "kcal/mol -> eV" in kcal.units["energy"]
    assert XyzReader(REALDATA / "mace/validate.xyz").units == {}


@needs_realdata
def test_explicit_key_is_matched_exactly():
    path = REALDATA / "metatrain/hydrogen.xyz"  # has energy/forces and DFT_energy/DFT_forces
    default = XyzReader(path).read(0)
    dft = XyzReader(path, energy_key="DFT_energy", forces_key="DFT_forces").read(0)
    atoms = read(path, 0)
    assert_bits(default.energy, atoms.calc.results["energy"], "energy")
    assert_bits(dft.energy, atoms.info["DFT_energy"], "DFT_energy")
    assert_bits(dft.forces, atoms.arrays["DFT_forces"], "DFT_forces")
    # a configured key that is absent gives no label: no fallback to 'energy' / 'force'
    assert XyzReader(path, energy_key="REF_energy").read(0).energy is None
    variants = REALDATA / "dpdata/energy_key_variants.xyz"  # Energy= and a 'force' column
    assert XyzReader(variants).read(0).energy is not None
    assert XyzReader(variants, forces_key="Forces").read(0).forces is None
    assert XyzReader(variants, energy_key="Energy").read(0).energy is not None


@needs_realdata
def test_label_keys_lists_what_a_frame_carries():
    keys = XyzReader(REALDATA / "metatrain/hydrogen.xyz").label_keys(0)
    assert set(keys) == {"DFT_energy", "energy", "DFT_forces", "forces"}
    keys = XyzReader(REALDATA / "janus-core/LiFePO4-neb-band.xyz").label_keys(1)
    assert {"mace_mp_energy", "mace_mp_forces", "mace_mp_stress", "energy", "stress", "forces"} <= set(keys)
    assert "model_path" not in keys  # a string, not a label


@needs_realdata
def test_read_atoms_is_ases_atoms():
    path = REALDATA / "mace/validate.xyz"
    reader = XyzReader(path)
    mine, theirs = reader.read_atoms(3), read(path, 3, format="extxyz")
    assert np.array_equal(mine.positions, theirs.positions)
    assert mine.calc.results.keys() == theirs.calc.results.keys()
    for key, value in theirs.calc.results.items():
        assert np.array_equal(mine.calc.results[key], value), key
    voigt = XyzReader(REALDATA / "dpdata/stress_voigt.xyz").read_atoms(0)
    assert np.array_equal(voigt.calc.results["stress"], [0.01, 0.02, 0.03, 0.004, 0.005, 0.006])
    snip = XyzReader(REALDATA / "schnetpack/ethanol_snip.xyz").read_atoms(1)
    assert snip.get_potential_energy() == -97208.37630463531 and snip.get_forces().shape == (9, 3)


# ----------------------------------------------------------------------------------------
# Files written by ASE
# ----------------------------------------------------------------------------------------


def _compare_with_ase(path: Path, **keys) -> XyzReader:
    reader = XyzReader(path, **keys)
    frames = read(path, ":", format="extxyz")
    assert len(reader) == len(frames)
    lk = LabelKeys(**{key.split("_")[0]: v for key, v in keys.items()})
    for i, atoms in enumerate(frames):
        assert_same_structure(reader.read(i), atoms, reference_labels(atoms, lk), f"{path.name}[{i}]")
    return reader


def test_written_multi_frame_periodic_and_molecular(tmp_path, emt_atoms):
    path = tmp_path / "emt.xyz"
    write(path, emt_atoms, format="extxyz")
    reader = _compare_with_ase(path)
    periodic = [i for i, a in enumerate(emt_atoms) if a.pbc.all()]
    molecular = [i for i, a in enumerate(emt_atoms) if not a.pbc.any()]
    assert periodic and molecular
    for i in periodic:
        s = reader.read(i)
        assert s.stress is not None and s.stress.shape == (3, 3)
        # stress went through the file as a calculator result: same as the Voigt vector, up to 8 digits written
        np.testing.assert_allclose(s.stress, voigt_6_to_full_3x3_stress(emt_atoms[i].get_stress()), atol=1e-9)
    for i in molecular:
        s = reader.read(i)
        assert s.stress is None and not s.pbc.any() and not s.cell.any()
        np.testing.assert_allclose(s.forces, emt_atoms[i].get_forces(), atol=1e-7)


def test_written_single_frame(tmp_path, emt_atoms):
    path = tmp_path / "one.extxyz"
    write(path, emt_atoms[0], format="extxyz")
    reader = _compare_with_ase(path)
    assert len(reader) == 1 and reader.natoms_array().tolist() == [len(emt_atoms[0])]
    assert open_reader(path, format="extxyz").read(0).numbers.tolist() == emt_atoms[0].numbers.tolist()


def test_full_precision_floats_round_trip(tmp_path):
    """Values written with repr() (17 digits, extreme exponents) come back bit for bit."""
    rng = np.random.default_rng(1)
    n = 7
    pos = rng.normal(size=(n, 3)) * 10.0 ** rng.integers(-12, 12, size=(n, 3))
    forces = rng.normal(size=(n, 3)) * 10.0 ** rng.integers(-300, 300, size=(n, 3))
    stress = rng.normal(size=6)
    energy = -1234.5678901234567 * np.pi
    lattice = " ".join(repr(float(x)) for x in (np.eye(3) * 7.3).T.reshape(-1))
    header = (
        f'Lattice="{lattice}" Properties=species:S:1:pos:R:3:REF_forces:R:3 REF_energy={energy!r} '
        f'REF_stress="{" ".join(repr(float(x)) for x in stress)}" pbc="T T F"'
    )
    rows = ["Si " + " ".join(repr(float(x)) for x in (*p, *f)) for p, f in zip(pos, forces)]
    path = tmp_path / "exact.xyz"
    path.write_text(f"{n}\n{header}\n" + "\n".join(rows) + "\n")
    s = _compare_with_ase(path, **REF).read(0)
    assert_bits(s.positions, pos, "positions")
    assert_bits(s.forces, forces, "forces")
    assert_bits(s.energy, energy, "energy")
    assert_bits(s.stress, voigt_6_to_full_3x3_stress(stress), "stress")
    assert s.pbc.tolist() == [True, True, False]


def test_nine_value_tensors_follow_extxyz_order(tmp_path):
    """9 values are column-major like Lattice; 'stress' is what ASE's calculator keeps (Voigt)."""
    nine = '"1.0 2.0 3.0 4.0 5.0 6.0 7.0 8.0 9.0"'  # not symmetric: the order matters
    head = 'Lattice="2.0 0.0 0.0 0.0 2.0 0.0 0.0 0.0 2.0" Properties=species:S:1:pos:R:3'
    keys = ("stress", "virial", "virials", "REF_stress")
    text = "".join(f"1\n{head} {key}={nine}\nH 0.0 0.0 0.0\n" for key in keys)
    path = _write(tmp_path, text, "nine.xyz")
    frames = read(path, ":", format="extxyz")
    reader = XyzReader(path)
    stress = reader.read(0).stress
    assert_bits(stress, voigt_6_to_full_3x3_stress(frames[0].calc.results["stress"]), "stress")
    w = frames[1].info["virial"]  # ASE's own 3x3 reading of the nine values
    assert w[0, 1] == 4.0  # column-major
    volume = frames[1].get_volume()  # ASE: abs(det(cell)), 7.999999999999998 here
    assert_bits(reader.read(1).stress, -w / volume, "virial")
    assert_bits(reader.read(2).stress, -w / volume, "virials")
    assert_bits(XyzReader(path, stress_key="REF_stress").read(3).stress, w, "REF_stress")
    assert_bits(reader.read(3).stress, w, "REF_stress")  # found by default too: MACE's convention


def test_vec_cell_lines(tmp_path, emt_atoms):
    atoms = emt_atoms[0].copy()
    path = tmp_path / "vec.xyz"
    write(path, [atoms, atoms], format="extxyz", vec_cell=True)
    reader = _compare_with_ase(path)
    assert_bits(reader.read(1).cell, read(path, 1, format="extxyz").cell.array, "cell")


def test_labels_on_some_frames_only(tmp_path, emt_atoms):
    frames = [a.copy() for a in emt_atoms[:3]]
    frames[0].calc = emt_atoms[0].calc  # labelled; the others carry no calculator
    path = tmp_path / "partial.xyz"
    write(path, frames, format="extxyz")
    reader = _compare_with_ase(path)
    assert reader.read(0).energy is not None
    assert reader.read(1).energy is None and reader.read(1).forces is None and reader.read(2).stress is None


def test_random_access_order_independent(tmp_path, emt_atoms):
    path = tmp_path / "emt.xyz"
    write(path, emt_atoms, format="extxyz")
    sequential = [XyzReader(path).read(i) for i in range(len(emt_atoms))]
    reader = XyzReader(path)
    for i in (5, 2, 11, 0, 5, -1):
        s = reader.read(i)
        ref = sequential[i]
        assert np.array_equal(s.positions, ref.positions) and np.array_equal(s.forces, ref.forces)
        assert s.energy == ref.energy
    assert [x.energy for x in reader.read_many([3, 1])] == [sequential[3].energy, sequential[1].energy]


def test_pickle_without_handle(tmp_path, emt_atoms):
    path = tmp_path / "emt.xyz"
    write(path, emt_atoms, format="extxyz")
    reader = XyzReader(path)
    before = reader.read(4)
    assert reader._handle is not None
    state = pickle.dumps(reader)
    assert b"BufferedReader" not in state and b"FileIO" not in state
    clone = pickle.loads(state)
    assert clone._handle is None
    after = clone.read(4)
    assert np.array_equal(after.positions, before.positions) and after.energy == before.energy
    assert np.array_equal(clone.natoms_array(), reader.natoms_array())


def test_blank_and_comment_lines_between_frames(tmp_path, emt_atoms):
    one = tmp_path / "one.xyz"
    write(one, emt_atoms[:2], format="extxyz")
    text = one.read_text()
    n0 = len(emt_atoms[0])
    lines = text.splitlines(True)
    edited = ["# made by hand\n", *lines[: n0 + 2], "   \n", "\n", *lines[n0 + 2 :], "\n"]
    path = tmp_path / "edited.xyz"
    path.write_text("".join(edited))
    reader = XyzReader(path)
    ref = XyzReader(one)
    assert len(reader) == 2
    for i in range(2):
        assert np.array_equal(reader.read(i).positions, ref.read(i).positions)
        assert reader.read(i).energy == ref.read(i).energy


@pytest.mark.parametrize("block", [1, 7, 64, 1000])
def test_index_in_small_blocks_equals_one_block(tmp_path, emt_atoms, block):
    """The newline scan works block by block; frames spanning blocks are indexed the same."""
    path = tmp_path / "emt.xyz"
    write(path, emt_atoms, format="extxyz")
    lines = path.read_text().splitlines(True)
    n0 = len(emt_atoms[0])
    edited = ["# comment\n", "\n", *lines[: n0 + 2], "  \n", *lines[n0 + 2 :]]
    path.write_text("".join(edited)[:-1])  # blank lines between frames, no final newline
    whole, small = index_frames(str(path)), index_frames(str(path), block=block)
    for field in ("start", "stop", "natoms", "line", "nvec"):
        assert np.array_equal(getattr(whole, field), getattr(small, field)), field
    assert whole.natoms.tolist() == [len(a) for a in emt_atoms]


def test_windows_line_endings(tmp_path, emt_atoms):
    path = tmp_path / "crlf.xyz"
    write(path, emt_atoms[:4], format="extxyz")
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    _compare_with_ase(path)


def test_empty_file_has_no_structures(tmp_path):
    reader = XyzReader(_write(tmp_path, "", "empty.xyz"))
    assert len(reader) == 0 and reader.natoms_array().shape == (0,)
    with pytest.raises(IndexError):
        reader.read(0)


def test_file_without_trailing_newline(tmp_path):
    path = tmp_path / "nonl.xyz"
    path.write_text("2\nenergy=-1.25\nH 0 0 0\nH 0 0 0.74")
    s = XyzReader(path).read(0)
    assert s.energy == -1.25 and s.positions[1, 2] == 0.74


# ----------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------


def _write(tmp_path, text: str, name: str = "bad.xyz") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = 'Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.0 pbc="F F F"'
ATOM = "H 0.0 0.0 0.0 0.1 0.2 0.3"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.xyz"
    with pytest.raises(FileNotFoundError, match="nope.xyz"):
        XyzReader(path)
    with pytest.raises(IsADirectoryError):
        XyzReader(tmp_path)


def test_first_frame_is_checked_at_construction(tmp_path):
    path = _write(tmp_path, "1\nProperties=species:S:1:pos:R:3:forces:R:2\nH 0 0 0 1 2\n")
    with pytest.raises(DataFormatError, match=r"structure 0, key 'forces'"):
        XyzReader(path)


def test_bare_word_is_not_a_label(tmp_path):
    s = XyzReader(_write(tmp_path, "1\nenergy from step 3\nH 0 0 0\n")).read(0)
    assert s.energy is None and s.forces is None


def test_truncated_file(tmp_path):
    path = _write(tmp_path, f"1\n{GOOD}\n{ATOM}\n3\n{GOOD}\n{ATOM}\n{ATOM}\n")
    with pytest.raises(DataFormatError, match=r"bad\.xyz, structure 1: truncated frame.*declares 3 .*after 2 atom"):
        XyzReader(path)


def test_non_numeric_atom_count(tmp_path):
    path = _write(tmp_path, f"1\n{GOOD}\n{ATOM}\nthree\n{GOOD}\n{ATOM}\n")
    with pytest.raises(DataFormatError, match=r"bad\.xyz, structure 1: line 4: expected the atom count"):
        XyzReader(path)


def test_forces_shape_mismatch(tmp_path):
    path = _write(tmp_path, '1\nProperties=species:S:1:pos:R:3:forces:R:2 energy=1.0\nH 0 0 0 1 2\n')
    with pytest.raises(DataFormatError, match=r"structure 0, key 'forces': forces have shape \(1, 2\)"):
        XyzReader(path).read(0)


@pytest.mark.parametrize(
    "header,atom,key",
    [
        (GOOD.replace("energy=-1.0", "energy=nan"), ATOM, "energy"),
        (GOOD, "H 0.0 0.0 0.0 0.1 inf 0.3", "forces"),
        (GOOD + ' stress="1 2 3 4 nan 6"', ATOM, "stress"),
    ],
)
def test_nan_and_inf_labels(tmp_path, header, atom, key):
    path = _write(tmp_path, f"1\n{GOOD}\n{ATOM}\n1\n{header}\n{atom}\n")
    reader = XyzReader(path)
    reader.read(0)
    with pytest.raises(DataFormatError, match=rf"bad\.xyz, structure 1, key '{key}': .*NaN or inf"):
        reader.read(1)


def test_index_out_of_range(tmp_path):
    reader = XyzReader(_write(tmp_path, f"1\n{GOOD}\n{ATOM}\n"))
    with pytest.raises(IndexError, match="out of range"):
        reader.read(1)
    with pytest.raises(IndexError):
        reader.read(-2)


def test_wrong_column_count(tmp_path):
    path = _write(tmp_path, f"2\n{GOOD}\n{ATOM}\nH 0.0 0.0 0.0 0.1 0.2\n")
    with pytest.raises(DataFormatError, match=r"structure 0, key 'Properties': line 4 has 6 columns, expected 7"):
        XyzReader(path).read(0)
    plain = _write(tmp_path, "1\n\nH 0 0 0 0.5 1\n", "plain.xyz")
    with pytest.raises(DataFormatError, match="add a Properties= key"):
        XyzReader(plain).read(0)


def test_bad_number_and_element(tmp_path):
    path = _write(tmp_path, f"1\n{GOOD}\n{ATOM}\n1\n{GOOD}\nH 0.0 zero 0.0 0.1 0.2 0.3\n1\n{GOOD}\nQq {ATOM[2:]}\n")
    reader = XyzReader(path)
    with pytest.raises(DataFormatError, match=r"structure 1, key 'positions': line 6: 'zero'"):
        reader.read(1)
    with pytest.raises(DataFormatError, match=r"structure 2, key 'species': line 9: unknown element 'Qq'"):
        reader.read(2)


def test_unknown_unit(tmp_path):
    path = _write(tmp_path, f"1\n{GOOD} energy-unit=furlong\n{ATOM}\n")
    with pytest.raises(DataFormatError, match=r"structure 0, key 'energy-unit': unknown unit 'furlong'"):
        XyzReader(path)


def test_bad_lattice(tmp_path):
    path = _write(tmp_path, f'1\nLattice="1 0 0 0 1 0" {GOOD}\n{ATOM}\n')
    with pytest.raises(DataFormatError, match=r"structure 0, key 'Lattice'"):
        XyzReader(path).read(0)


def test_unit_conversion_needs_force_unit(tmp_path):
    path = _write(tmp_path, f"1\n{GOOD} energy-unit=hartree\n{ATOM}\n")
    with pytest.raises(DataFormatError, match="force-unit"):
        XyzReader(path).read(0)
