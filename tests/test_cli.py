"""The ``mlff-distiller`` command, run as a subprocess: generate -> stats -> convert -> validate,
bit-exact round trips checked against what ASE and h5py read, planted defects, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase.db import connect
from ase.io import read

from click.testing import CliRunner

from mlff_distiller.cli import cli
from mlff_distiller.data.structure import Structure
from mlff_distiller.data.writers import structure_difference
from mlff_distiller.generate import generate_dataset

N, SEED = 24, 5
COMMANDS = ("generate", "stats", "convert", "validate", "bench", "demo")


def run(*args, cwd=None, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "mlff_distiller.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**__import__("os").environ, "COLUMNS": "200"},
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def invoke(*args, rc: int = 0):
    """The same command in-process (click's runner): for the checks that need no fresh process."""
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, [str(a) for a in args], prog_name="mlff-distiller")
    assert result.exit_code == rc, (result.exit_code, result.output, result.exception)
    return result


def from_ase(atoms) -> Structure:
    """A Structure built from what ASE itself reads (the independent reference)."""
    res = atoms.calc.results if atoms.calc is not None else {}
    stress = atoms.get_stress(voigt=False) if "stress" in res else None
    return Structure(
        positions=atoms.positions,
        numbers=atoms.numbers.astype(np.int64),
        cell=atoms.cell.array,
        pbc=atoms.pbc,
        energy=np.asarray(res["energy"]) if "energy" in res else None,
        forces=res.get("forces"),
        stress=stress,
    )


def from_h5(path) -> list[Structure]:
    """Structures from the raw h5py arrays of a guide-layout file."""
    out = []
    with h5py.File(path, "r") as f:
        groups = f["structures"]
        for key in sorted(groups, key=int):
            g = groups[key]
            get = lambda k: g[k][()] if k in g else None  # noqa: E731
            out.append(Structure(get("positions"), get("species"), get("cell"), get("pbc"), get("energy"),
                                 get("forces"), get("stress")))
    return out


def assert_same(expected: list[Structure], got: list[Structure]) -> None:
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(expected, got)):
        difference = structure_difference(a, b, extras=False)  # the raw readers here read no extras
        assert difference is None, f"structure {i}: {difference}"


@pytest.fixture(scope="module")
def reference() -> list[Structure]:
    return generate_dataset(N, seed=SEED)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """generate -> db, then convert db -> xyz -> h5 -> db."""
    root = tmp_path_factory.mktemp("cli")
    run("generate", root / "gen.db", "-n", N, "--seed", SEED)
    out = {"gen": root / "gen.db"}
    chain = [("gen.db", "conv.xyz"), ("conv.xyz", "conv.h5"), ("conv.h5", "back.db")]
    for src, dst in chain:
        proc = run("convert", root / src, root / dst)
        assert f"Converted {N} structures" in proc.stdout
        out[dst] = root / dst
    return out


def test_help_on_every_subcommand():
    top = run("--help")  # the module entry point, in a fresh process
    for name in COMMANDS:
        assert name in top.stdout
        assert invoke(name, "--help").stdout.startswith(f"Usage: mlff-distiller {name}")


def test_console_script_installed():
    script = Path(sys.executable).parent / "mlff-distiller"
    if not script.exists():
        pytest.skip(f"{script} not installed (pip install -e .)")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "mlff-distiller" in proc.stdout


def test_generate_is_the_in_process_dataset(pipeline, reference):
    with connect(pipeline["gen"]) as db:
        got = [from_ase(row.toatoms()) for row in db.select(sort="id")]
    assert_same(reference, got)
    assert any(s.stress is not None for s in got) and any(s.stress is None for s in got)


def test_conversion_round_trips_are_bit_exact(pipeline, reference):
    assert_same(reference, [from_ase(a) for a in read(pipeline["conv.xyz"], ":")])
    assert_same(reference, from_h5(pipeline["conv.h5"]))
    with connect(pipeline["back.db"]) as db:
        assert_same(reference, [from_ase(row.toatoms()) for row in db.select(sort="id")])


def test_stats_json_and_table(pipeline, reference):
    proc = run("stats", pipeline["conv.h5"], "--json")
    stats = json.loads(proc.stdout)
    assert stats["num_samples"] == N
    assert stats["format"] == "hdf5" and stats["layout"] == "guide"
    counts = Counter(int(z) for s in reference for z in s.numbers)
    assert {int(z): c for z, c in stats["element_counts"].items()} == dict(counts)
    energies = np.array([float(s.energy) for s in reference])
    assert stats["energy_mean"] == pytest.approx(energies.mean(), rel=1e-12)
    assert stats["num_with_stress"] == sum(s.stress is not None for s in reference)
    assert set(stats["reference_energies"]) == {str(z) for z in counts}
    table = invoke("stats", pipeline["gen"]).stdout
    assert "Elements" in table and "E0 (eV)" in table
    from ase.data import chemical_symbols

    for z in counts:
        assert f" {chemical_symbols[z]} " in table


def test_validate_clean_files(pipeline):
    assert "no problems" in run("validate", pipeline["conv.h5"]).stdout
    for name in ("gen", "conv.xyz", "back.db"):
        assert "no problems" in invoke("validate", pipeline[name]).stdout


def test_validate_finds_planted_defects(tmp_path, reference):
    path = tmp_path / "defects.h5"
    structures = reference[:10]
    planted = {2: "non-finite", 4: "overlapping-atoms", 5: "duplicate", 6: "shape-mismatch", 8: "missing-label"}
    with h5py.File(path, "w") as f:
        root = f.create_group("structures")
        for i, s in enumerate(structures):
            positions, forces, energy = s.positions.copy(), s.forces, s.energy
            if i == 2:
                energy = np.float64(np.nan)
            if i == 4:
                positions[3] = positions[1] + [0.1, 0.05, 0.0]
            if i == 5:
                positions = structures[1].positions  # structure 5 repeats structure 1 ...
                s = structures[1]
                forces, energy = s.forces, s.energy
            if i == 6:
                forces = forces[:-1]
            g = root.create_group(str(i))
            g.create_dataset("positions", data=positions)
            g.create_dataset("species", data=s.numbers)
            g.create_dataset("cell", data=s.cell)
            g.create_dataset("pbc", data=s.pbc)
            if i != 8:
                g.create_dataset("energy", data=energy)
            g.create_dataset("forces", data=forces)
    proc = run("validate", path, "--json", check_rc=1)
    problems = json.loads(proc.stdout)["problems"]
    found = {(p["index"], p["kind"]) for p in problems}
    assert found == set(planted.items()), problems
    by_index = {p["index"]: p for p in problems}
    assert by_index[2]["key"].endswith("energy")
    assert by_index[6]["key"].endswith("forces")
    assert by_index[8]["key"] == "energy"
    assert "atoms 1 and 3" in by_index[4]["message"]
    assert "structure 1" in by_index[5]["message"]
    table = invoke("validate", path, rc=1).stdout
    assert "5 problem(s)" in table
    # the threshold is honoured: with 0.05 Å the 0.11 Å pair is accepted
    loose = json.loads(invoke("validate", path, "--json", "--overlap-threshold", "0.05", rc=1).stdout)
    assert 4 not in {p["index"] for p in loose["problems"]}


def _one_line_error(result, *words: str) -> str:
    """Exit code 2 and exactly one line ``Error: ...`` on stderr naming ``words``."""
    rc = result.returncode if hasattr(result, "returncode") else result.exit_code
    assert rc == 2, (rc, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for w in words:
        assert w in lines[0]
    return lines[0]


def test_missing_file_and_unknown_format_in_a_subprocess(tmp_path, pipeline):
    _one_line_error(run("stats", tmp_path / "nope.db", check_rc=None), "nope.db")
    _one_line_error(run("convert", pipeline["gen"], tmp_path / "out.foo", check_rc=None), "'.foo'")
    _one_line_error(run("validate", pipeline["gen"], "--format", "cif", check_rc=None), "'cif'")
    assert not (tmp_path / "out.foo").exists()


def _err(*args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args], prog_name="mlff-distiller")
    assert "Traceback" not in result.output
    return _one_line_error(result)


@pytest.mark.parametrize("command", ["stats", "validate", "bench"])
def test_missing_file_is_a_one_line_error(tmp_path, command):
    assert "nope.db" in _err(command, tmp_path / "nope.db")


def test_clean_errors(tmp_path, pipeline):
    assert "nope.xyz" in _err("convert", tmp_path / "nope.xyz", tmp_path / "x.h5")
    assert "'cif'" in _err("convert", pipeline["gen"], tmp_path / "o.h5", "--to", "cif")
    assert "'cif'" in _err("stats", pipeline["gen"], "--format", "cif")
    assert "'.cif'" in _err("generate", tmp_path / "g.cif", "-n", "2")
    assert "nope" in _err("generate", tmp_path / "g.xyz", "--teacher", "nope:Calc")
    assert "JSON" in _err("generate", tmp_path / "g.xyz", "--teacher-kwargs", "{bad")
    assert "--cutoff" in _err("convert", pipeline["gen"], tmp_path / "c.xyz", "--cutoff", "3")
    assert "--workers" in _err("bench", pipeline["gen"], "--workers", "two")
    # a label key that is in no structure is an error, not an unlabeled dataset
    assert "energy_key='dft_energy' not found" in _err("stats", pipeline["gen"], "--energy-key", "dft_energy")
    assert "dft_energy" in _err("convert", pipeline["gen"], tmp_path / "k.xyz", "--energy-key", "dft_energy")
    # never overwrites unless asked
    before = pipeline["conv.h5"].read_bytes()
    assert "already exists" in _err("convert", pipeline["gen"], pipeline["conv.h5"])
    assert pipeline["conv.h5"].read_bytes() == before
    # a file that is not what its suffix says
    fake = tmp_path / "fake.h5"
    fake.write_text("not hdf5\n")
    assert "fake.h5" in _err("validate", fake)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.h5"]


def test_overwrite_flag(tmp_path, pipeline, reference):
    target = tmp_path / "o.xyz"
    target.write_text("old\n")
    invoke("convert", pipeline["conv.h5"], target, "--overwrite")
    assert_same(reference, [from_ase(a) for a in read(target, ":")])


def test_bench_json(pipeline):
    proc = invoke("bench", pipeline["conv.h5"], "--workers", "0", "--epochs", "1", "--batch-size", "8", "--json")
    result = json.loads(proc.stdout)
    modes = [(r["mode"], r["workers"]) for r in result["results"]]
    assert ("padded", 0) in modes and ("graph", 0) in modes
    for r in result["results"]:
        assert r["samples_per_s"] > 0 and np.isfinite(r["atoms_per_s"])
        if r["mode"] in ("padded", "graph"):
            assert r["batches"] == -(-N // 8)


def test_demo(tmp_path):
    out = tmp_path / "demo"
    proc = run("demo", "--data-only", "--out", out, "-n", "30")
    text = proc.stdout
    for name in ("structures.db", "structures.xyz", "structures.h5"):
        assert (out / name).is_file()
    assert text.count("bit-identical") >= 3 and "✗" not in text
    assert "Elements" in text and "samples/s" in text and "no problems" in text
    assert len(read(out / "structures.xyz", ":")) == 30
    # a second run refuses to clobber, with a one-line message
    assert "--overwrite" in _err("demo", "--data-only", "--out", out, "-n", "30")


def test_convert_to_and_from_packed(tmp_path, pipeline, reference):
    packed = tmp_path / "p.h5"
    invoke("convert", pipeline["conv.h5"], packed, "--to", "packed")
    stats = json.loads(invoke("stats", packed, "--json").stdout)
    assert (stats["format"], stats["layout"], stats["num_samples"]) == ("hdf5", "packed", N)
    invoke("convert", packed, tmp_path / "p.xyz")
    assert_same(reference, [from_ase(a) for a in read(tmp_path / "p.xyz", ":")])


def test_validate_overlap_sees_periodic_images(tmp_path):
    """Atoms 0.2 Å apart through the cell boundary overlap only when the cell is periodic."""
    from mlff_distiller.data.writers import write_structures

    positions = np.array([[0.1, 1.0, 1.0], [5.9, 1.0, 1.0], [3.0, 3.0, 3.0]])
    numbers = np.array([29, 29, 29])
    periodic = Structure(positions, numbers, np.eye(3) * 6.0, np.ones(3, bool))
    isolated = Structure(positions + [0.0, 0.0, 1e-3], numbers, np.zeros((3, 3)), np.zeros(3, bool))
    path = tmp_path / "pbc.xyz"
    write_structures(path, [periodic, isolated])
    problems = json.loads(invoke("validate", path, "--json", "--allow-unlabeled", rc=1).stdout)["problems"]
    assert [(p["index"], p["kind"]) for p in problems] == [(0, "overlapping-atoms")]
    assert "atoms 0 and 1 at 0.2 Å" in problems[0]["message"]


# -- usage errors, option ranges ---------------------------------------------------------------
USAGE_ERRORS = [
    (("stats",), "stats", "Missing argument"),
    (("generate", "{tmp}/g.db", "-n", "0"), "generate", "--num-structures"),
    (("demo", "--out", "{tmp}/somefile.db"), "demo", "--out"),
    (("validate", "{gen}", "--decimals", "-3"), "validate", "--decimals"),
    (("validate", "{gen}", "--max-show", "-1"), "validate", "--max-show"),
    (("validate", "{gen}", "--overlap-threshold", "nan"), "validate", "--overlap-threshold"),
    (("convert", "{gen}", "{tmp}/c.h5", "--to", "packed", "--cutoff", "-1"), "convert", "--cutoff"),
    (("convert", "{gen}", "{tmp}/c.h5", "--to", "packed", "--cutoff", "inf"), "convert", "--cutoff"),
    (("bench", "{gen}", "--cutoff", "0"), "bench", "--cutoff"),
    (("generate", "{tmp}/g.xyz", "-n", "3", "--temperature", "-5"), "generate", "--temperature"),
    (("generate", "{tmp}/g.xyz", "-n", "3", "--temperature", "nan"), "generate", "--temperature"),
    (("stats", "{gen}", "--no-such-option"), "stats", "--no-such-option"),
    (("no-such-command",), None, "no-such-command"),
]


@pytest.mark.parametrize("args, command, word", USAGE_ERRORS, ids=[f"{a[0]} {w}" for a, _, w in USAGE_ERRORS])
def test_usage_errors_are_one_line(tmp_path, pipeline, args, command, word):
    """Bad usage or an option out of range: one line naming the option and the command's help,
    exit code 2, nothing written (a negative temperature used to write NaN structures, rc 0)."""
    (tmp_path / "somefile.db").write_bytes(b"")
    line = _err(*(a.format(tmp=tmp_path, gen=pipeline["gen"]) for a in args))
    assert word in line
    prog = "mlff-distiller" + (f" {command}" if command else "")
    assert line.endswith(f"(see '{prog} --help')"), line
    assert [p.name for p in tmp_path.iterdir()] == ["somefile.db"]


def test_usage_error_in_a_subprocess():
    line = _one_line_error(run("stats", check_rc=None), "Missing argument")
    assert line == "Error: Missing argument 'PATH...'. (see 'mlff-distiller stats --help')"


def test_validate_reader_refuses_bad_settings(pipeline):
    from mlff_distiller.data.readers import open_reader
    from mlff_distiller.data.validate import validate_reader

    reader = open_reader(pipeline["gen"])
    with pytest.raises(ValueError, match="decimals"):
        validate_reader(reader, decimals=-3)
    with pytest.raises(ValueError, match="overlap_threshold"):
        validate_reader(reader, float("nan"))


def test_bench_on_an_empty_file(tmp_path):
    from mlff_distiller.data.readers import open_reader
    from mlff_distiller.data.throughput import time_reader

    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    assert _err("bench", empty) == f"Error: {empty}: no structures"
    with pytest.raises(ValueError, match="no structures"):
        time_reader(open_reader(empty), 1)


# -- several files: a glob pattern or a list ---------------------------------------------------
def test_glob_and_list_inputs(tmp_path, reference):
    from mlff_distiller.data.writers import write_structures

    shards = tmp_path / "shards"
    shards.mkdir()
    write_structures(shards / "part-0.xyz", reference[:10])
    write_structures(shards / "part-1.xyz", reference[10:])
    pattern = str(shards / "part-*.xyz")  # quoted: the command expands it, not the shell
    energies = np.array([float(s.energy) for s in reference])

    stats = json.loads(invoke("stats", pattern, "--json").stdout)
    assert stats["num_samples"] == N and stats["energy_mean"] == pytest.approx(energies.mean(), rel=1e-12)
    assert stats["files"] == [str(shards / "part-0.xyz"), str(shards / "part-1.xyz")]
    assert stats["file"] == pattern
    assert "part-0.xyz + " in invoke("stats", pattern).stdout

    assert "no problems" in invoke("validate", pattern).stdout
    assert json.loads(invoke("validate", pattern, "--json").stdout)["num_structures"] == N

    invoke("convert", pattern, tmp_path / "all.xyz")
    assert_same(reference, [from_ase(a) for a in read(tmp_path / "all.xyz", ":")])
    # a list of files, mixed formats: one dataset, files in the order given
    write_structures(tmp_path / "part-1.h5", reference[10:])
    invoke("convert", shards / "part-0.xyz", tmp_path / "part-1.h5", tmp_path / "all.h5")
    assert_same(reference, from_h5(tmp_path / "all.h5"))
    # the output among the inputs is refused
    assert "same file" in _err("convert", pattern, shards / "part-1.xyz", "--overwrite")

    bench = json.loads(
        invoke("bench", pattern, "--json", "--workers", "0", "--epochs", "1", "--modes", "padded").stdout
    )
    assert bench["num_structures"] == N and len(bench["files"]) == 2

    assert "matches" in _err("stats", str(shards / "nothing-*.xyz"))


def test_database_url_passwords_hidden_without_a_server(pipeline):
    """A URL as output is refused, and an unreachable URL as input is reported, password hidden."""
    url = "postgresql://bob:hunter2-secret@127.0.0.1:1/nowhere"
    for args in (("convert", pipeline["gen"], url), ("generate", url, "-n", "2")):
        line = _err(*args)
        assert "hunter2" not in line and "bob:***@127.0.0.1:1/nowhere" in line and "not supported" in line
    pytest.importorskip("ase_db_backends", reason="ase-db-backends opens postgresql URLs")
    line = _err("stats", url)
    assert "hunter2" not in line and "bob:***@" in line
