"""Every reader option of ``stats``/``validate``/``convert`` run as a subprocess (--energy-key,
--forces-key, --stress-key, --energy-unit, --forces-unit, --stress-unit, --length-unit, --layout,
--nan-as-missing, --select, --properties, --e0, --exclude-isolated, --allow-unlabeled), checked
against ASE / h5py / the raw database; candidate-key notes; notes only for real conversions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from ase import units
from ase.db import connect
from ase.io import read

from conftest import realdata_dir
from mlff_distiller.data.packed import write_packed
from mlff_distiller.data.readers import open_reader
from mlff_distiller.data.structure import Structure
from mlff_distiller.data.writers import write_structures

REALDATA = realdata_dir()
pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata not present")


def cli(*args, rc: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mlff_distiller.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env={**__import__("os").environ, "COLUMNS": "200"})
    assert proc.returncode == rc, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_stats_keys_units_isolated_atoms_and_properties():
    path = REALDATA / "workflow/EMT_atoms.xyz"
    frames = read(path, ":")
    out = json.loads(cli("stats", path, "--json", "--energy-key", "DFT_energy", "--forces-key", "DFT_forces",
                         "--stress-key", "DFT_stress", "--energy-unit", "kcal/mol", "--forces-unit", "kcal/mol/Å",
                         "--stress-unit", "kcal/mol/Å^3", "--length-unit", "Å", "--e0", "isolated",
                         "--exclude-isolated", "--properties", "config_type").stdout)
    kcal = units.kcal / units.mol
    isolated = [i for i, a in enumerate(frames) if a.info.get("config_type") == "isolated_atom"]
    assert out["isolated_atoms"] == isolated == [0] and out["num_samples"] == len(frames) - 1
    assert out["reference_energies"] == {"29": frames[0].info["DFT_energy"] * kcal}
    energies = [a.info["DFT_energy"] * kcal for a in frames[1:]]
    assert out["energy_mean"] == pytest.approx(np.mean(energies), rel=1e-14)
    assert out["label_keys"] == {"energy": "DFT_energy", "forces": "DFT_forces", "stress": "DFT_stress",
                                 "config_type": "config_type"}
    assert "[energy_unit=]" in out["units"]["energy"] and out["warnings"] == []


def test_stats_hdf5_layout_nan_as_missing_properties_and_default_key_notes():
    spice = REALDATA / "modelforge/SPICE-1.1.4_n2.hdf5"
    out = json.loads(cli("stats", spice, "--json", "--layout", "spice", "--nan-as-missing",
                         "--properties", "charges,dipole=scf_dipole,total_charge").stdout)
    with h5py.File(spice) as f:
        assert out["num_samples"] == sum(f[g]["conformations"].shape[0] for g in f)
    assert out["label_keys"]["charges"] == "mbis_charges" and out["label_keys"]["dipole"] == "scf_dipole"
    assert out["layout"] == "spice"
    plain = json.loads(cli("stats", REALDATA / "janus-core/mlip_train.xyz", "--json").stdout)
    assert plain["num_with_energy"] == 0 and plain["candidates"]["energy"] == ["dft_energy"]
    assert any("--energy-key dft_energy" in w for w in plain["warnings"])
    table = invoke("stats", REALDATA / "janus-core/mlip_train.xyz").stdout
    assert "candidates: dft_energy" in " ".join(table.split())


def test_stats_select_on_an_ase_database():
    db = REALDATA / "fairchem/data.db"
    rows = list(connect(db).select("natoms<10"))
    out = json.loads(cli("stats", db, "--json", "--select", "natoms<10").stdout)
    assert out["num_samples"] == len(rows) == 5
    assert out["energy_mean"] == pytest.approx(np.mean([r.energy for r in rows]), rel=1e-14)
    bad = invoke("stats", REALDATA / "nequip/aspirin.xyz", "--select", "natoms<10", rc=2)
    assert "does not take option(s) 'select'" in bad.stderr


def invoke(*args, rc: int = 0):
    """The same command in-process (click's runner), for checks that need no fresh process."""
    from click.testing import CliRunner

    from mlff_distiller.cli import cli as group

    result = CliRunner(env={"COLUMNS": "200"}).invoke(group, [str(a) for a in args], prog_name="mlff-distiller")
    assert result.exit_code == rc, (result.exit_code, result.output, result.exception)
    return result


def _molecule(z, x, energy, **extras):
    return Structure(np.asarray(x, dtype=np.float64), np.asarray(z), np.zeros((3, 3)), np.zeros(3, bool),
                     energy=None if energy is None else np.float64(energy), extras=extras)


def test_validate_conflicts_no_labels_and_member_files(tmp_path):
    x = [[0, 0, 0], [0, 0, 1.1], [0, 1.1, 0]]
    write_structures(tmp_path / "a.db", [_molecule([6, 1, 1], x, -10.0, spin=np.float64(1)),
                                         _molecule([6, 1, 1], x, -9.0, spin=np.float64(3))])
    write_structures(tmp_path / "b.db", [_molecule([6, 1, 1], x, -10.0, spin=np.float64(1)),
                                         _molecule([6, 1, 1], x, -10.5, spin=np.float64(1))])
    report = json.loads(cli("validate", tmp_path / "a.db", tmp_path / "b.db", "--json", "--allow-unlabeled",
                            rc=1).stdout)
    problems = {(p["index"], p["kind"]): p for p in report["problems"]}
    assert set(problems) == {(1, "conflicting-labels"), (2, "duplicate"), (3, "conflicting-labels")}
    assert problems[1, "conflicting-labels"]["key"] == "spin"  # another electronic state
    assert problems[3, "conflicting-labels"]["key"] == "energy"  # the same input, two targets
    assert problems[3, "conflicting-labels"]["file"].endswith("b.db") and problems[3, "conflicting-labels"]["file_index"] == 1
    unlabeled = tmp_path / "u.xyz"
    shutil.copy(REALDATA / "workflow/simple_gap_training_set.xyz", unlabeled)
    out = json.loads(invoke("validate", unlabeled, "--json", "--overlap-threshold", "0", rc=1).stdout)
    assert [p["kind"] for p in out["problems"]] == ["no-labels"] and "dft_energy" in out["problems"][0]["message"]
    invoke("validate", unlabeled, "--allow-unlabeled", "--overlap-threshold", "0")


def test_convert_reads_units_and_properties_and_notes_only_real_conversions(tmp_path):
    src = REALDATA / "metatrain/qm9_reduced_100.xyz"
    out = tmp_path / "q.h5"
    proc = cli("convert", src, out, "--to", "packed", "--energy-key", "U0", "--energy-unit", "hartree",
               "--properties", "mu")
    assert "note: energy converted on reading" in proc.stderr and "positions" not in proc.stderr
    frames = read(src, ":")
    packed = open_reader(out, "packed")
    for i in (0, 99):
        s = packed.read(i)
        assert s.energy == frames[i].info["U0"] * units.Hartree and s.extras["mu"] == frames[i].info["mu"]
    with h5py.File(out) as f:
        stored = json.loads(f.attrs["stored_units"])
        assert stored["energy"] == "eV" and stored["positions"] == "Å"
        assert "x27.2113" in json.loads(f.attrs["units"])["energy"]  # the original conversion, as provenance
    again = invoke("convert", out, tmp_path / "q.xyz")
    assert "when the file was packed" in again.stderr
    ani = invoke("convert", REALDATA / "modelforge/ani2x_minimal.hdf5", tmp_path / "a.h5", "--to", "packed")
    assert "positions" not in ani.stderr and "energy converted" in ani.stderr  # angstrom x1: no note


def test_write_packed_reports_progress(tmp_path):
    reader = open_reader(REALDATA / "nequip/aspirin.xyz")
    seen = []
    assert write_packed(tmp_path / "p.h5", reader, chunk=4, progress=seen.append) == len(reader)
    assert sum(seen) == len(reader) and len(seen) == -(-len(reader) // 4)
