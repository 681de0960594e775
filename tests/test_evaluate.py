"""evaluate: every number recomputed independently (direct model calls, numpy statistics, own fits)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect

from mlff_distiller.calculator import StudentCalculator
from mlff_distiller.evaluation import compare_speed, compute_errors, evaluate, nve_stability
from mlff_distiller.models import atoms_to_batch, build_model, predict, save
from mlff_distiller.structures import builtin


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("schnet", species=[1, 6, 8], cutoff=4.0)
    model.set_scale_shift(0.3, 0.0)
    path = tmp_path_factory.mktemp("student") / "student.safetensors"
    save(model, path)
    return model, path


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """Five rattled ethanol structures labeled by EMT, in an ASE database."""
    path = tmp_path_factory.mktemp("data") / "test.db"
    rng = np.random.default_rng(0)
    structures = []
    with connect(path) as db:
        for _ in range(5):
            atoms = builtin("ethanol")
            atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
            atoms.calc = EMT()
            e, f = atoms.get_potential_energy(), atoms.get_forces()
            atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
            db.write(atoms, sample_temperature=350.0, sample_method="md", sample_group="seed0")
            structures.append((atoms.copy(), e, f))
    return path, structures


def test_evaluate_numbers_recomputed(student, labeled, tmp_path):
    model, path = student
    data, structures = labeled
    out = tmp_path / "eval"
    report = evaluate(path, data, teacher="emt", out_dir=out, speed_structures=3, speed_rounds=2, md_steps=40,
                      md_interval=10, md_timestep_fs=0.5, batch_size=4)
    # accuracy: direct model calls and numpy
    de, df = [], []
    for atoms, e, f in structures:
        out_direct = predict(model, atoms_to_batch(atoms, model.cutoff))
        de.append((float(out_direct["energy"][0]) - e) / len(atoms))
        df.append(out_direct["forces"].double().numpy() - f)
    de, df = np.array(de), np.concatenate(df)
    acc = report["accuracy"]
    np.testing.assert_allclose(acc["energy_per_atom"]["mae"], np.abs(de).mean(), rtol=1e-5)
    np.testing.assert_allclose(acc["energy_per_atom"]["rmse"], np.sqrt((de**2).mean()), rtol=1e-5)
    np.testing.assert_allclose(acc["forces"]["mae"], np.abs(df).mean(), rtol=1e-5)
    np.testing.assert_allclose(acc["forces"]["rmse"], np.sqrt((df**2).mean()), rtol=1e-5)
    assert acc["forces"]["count"] == df.size and acc["stress"]["count"] == 0
    # speed: like for like, the ratio is the ratio of the medians
    speed = report["speed"]
    assert speed["teacher"]["calls"] > 0 and speed["student"]["calls"] > 0
    assert speed["speedup"] == pytest.approx(speed["teacher"]["ms_per_call"] / speed["student"]["ms_per_call"])
    assert report["teacher"]["name"] == "emt"
    # provenance made it into the description; MD temperature defaults to the data's
    assert "350" in report["data"]["held_out"]
    md = report["md"]
    assert md["temperature_K"] == 350.0 and md["steps_done"] == 40
    t = np.array(md["trace"]["time_ps"])
    e = np.array(md["trace"]["total_energy_per_atom"])
    slope = ((t - t.mean()) * (e - e.mean())).sum() / ((t - t.mean()) ** 2).sum()
    assert md["drift_ev_per_atom_per_ps"] == pytest.approx(slope, rel=1e-6, abs=1e-12)
    for name in ("report.md", "report.json", "parity_energy.png", "parity_forces.png", "error_vs_size.png", "nve.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "report.json").read_text())
    assert saved["accuracy"]["forces"]["mae"] == acc["forces"]["mae"]
    assert "| ms per single point" in (out / "report.md").read_text()


def test_compute_errors_with_stress():
    rng = np.random.default_rng(1)
    refs, preds = [], []
    for n in (3, 5):
        refs.append({"energy": 1.0, "forces": rng.normal(size=(n, 3)), "stress": rng.normal(size=(3, 3))})
        preds.append({"energy": 1.0 + n * 0.01, "forces": refs[-1]["forces"] + 0.1, "stress": refs[-1]["stress"] - 0.2})
    errors = compute_errors(preds, refs)
    assert errors.summary["energy_per_atom"]["mae"] == pytest.approx(0.01)
    assert errors.summary["forces"]["rmse"] == pytest.approx(0.1)
    assert errors.summary["stress"]["mae"] == pytest.approx(0.2) and errors.summary["stress"]["count"] == 18
    with pytest.raises(ValueError, match="structure 1"):
        compute_errors(preds, [refs[0], {"energy": 1.0, "forces": np.zeros((4, 3))}])


def test_nve_stability_flags_unphysical_and_conserves_emt():
    atoms = builtin("cu32")
    ok = nve_stability(EMT(), atoms, temperature=300, timestep_fs=2.0, steps=60, interval=10)
    assert ok["stable"] and ok["reason"] is None
    assert abs(ok["drift_ev_per_atom_per_ps"]) < 5e-3  # EMT is smooth: velocity Verlet conserves energy
    bad = nve_stability(EMT(), atoms, temperature=300, steps=20, interval=10, min_distance_threshold=3.0)
    assert not bad["stable"] and "closer than 3.0" in bad["reason"] and bad["steps_done"] == 0
    hot = nve_stability(EMT(), atoms, temperature=300, steps=20, interval=10, max_temperature=1.0)
    assert not hot["stable"] and "temperature" in hot["reason"]


def test_compare_speed_same_structures_and_threads(student):
    model, _ = student
    structures = [builtin("ethanol"), builtin("water")]
    before = torch.get_num_threads()
    seen = []

    class Spy(EMT):
        def calculate(self, atoms=None, properties=("energy",), system_changes=()):
            seen.append((len(atoms), torch.get_num_threads()))
            super().calculate(atoms, properties, system_changes)

    result = compare_speed(Spy(), StudentCalculator(model), structures, rounds=2, warmup=1, num_threads=1)
    assert result["threads"] == 1 and torch.get_num_threads() == before
    assert sorted({n for n, _ in seen}) == [3, 9] and {t for _, t in seen} == {1}
    assert result["teacher"]["calls"] == 3 and result["student"]["calls"] == 3  # 2 rounds × 2 structures − warm-up


def test_evaluate_cli_json(student, labeled):
    from click.testing import CliRunner

    from mlff_distiller.cli import cli

    _, path = student
    data, structures = labeled
    result = CliRunner().invoke(cli, ["evaluate", str(path), str(data), "--md-steps", "20", "--speed-structures", "2",
                                      "--speed-rounds", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["accuracy"]["structures"] == len(structures) and "teacher" not in report
    missing = CliRunner().invoke(cli, ["evaluate", str(path), "nope.db"])
    assert missing.exit_code == 2 and "nope.db" in missing.output
