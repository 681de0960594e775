"""Extended XYZ files that ASE refuses are refused here too (issue 12, items 4-6), with the file,
structure and key named; reading work is bounded by the file's size."""

from __future__ import annotations

import signal
from contextlib import contextmanager

import pytest
from ase.io import read

from mlff_distiller.data.errors import DataFormatError
from mlff_distiller.data.readers.xyz import XyzReader

PROPS = "Properties=species:S:1:pos:R:3:energies:R:1:mace_mp_forces:R:3:forces:R:3"
ATOM = "H 0.0 0.0 0.0 0.5 1.0 2.0 3.0 0.1 0.2 0.3"


def _write(tmp_path, text: str, name: str = "bad.xyz"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _frame(header: str = f"{PROPS} energy=-1.0", atoms=(ATOM,)) -> str:
    return f"{len(atoms)}\n{header}\n" + "\n".join(atoms) + "\n"


def _ase_refuses(path) -> None:
    with pytest.raises(Exception):
        read(path, index=":", format="extxyz")


@contextmanager
def _no_hang(seconds: float):
    """Turn a reader that never returns into a failure (the old index looped over every
    declared atom: hours for 10**12) instead of a stuck test run."""

    def handler(signum, frame):
        raise AssertionError(f"still reading after {seconds} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_good_frame_reads(tmp_path):
    s = XyzReader(_write(tmp_path, _frame())).read(0)
    assert s.energy == -1.0 and s.forces.tolist() == [[0.1, 0.2, 0.3]]


@pytest.mark.parametrize(
    "atom,key",
    [
        ("H 0.0 0.0 0.0 0.5x 1.0 2.0 3.0 0.1 0.2 0.3", "energies"),
        ("H 0.0 0.0 0.0 0.5 1.0 ++2.0 3.0 0.1 0.2 0.3", "mace_mp_forces"),
    ],
)
def test_corrupt_number_in_a_column_no_sample_needs(tmp_path, atom, key):
    """Item 5: ASE raises on it; we used to return clean data."""
    path = _write(tmp_path, _frame() + _frame(atoms=(ATOM, atom)))
    _ase_refuses(path)
    reader = XyzReader(path)
    with pytest.raises(DataFormatError, match=rf"bad\.xyz, structure 1, key '{key}': line 7: .* is not a valid float"):
        reader.read(1)


@pytest.mark.parametrize(
    "props,message",
    [
        ("species:S:1:pos:R:3:pos:R:3", "field 'pos0' occurs more than once"),
        ("species:S:1:pos:R:3:pos0:R:1:x:R:2", "field 'pos0' occurs more than once"),
        ("species:S:1:pos:R:3:positions:R:3", "'pos' and 'positions' are the same column"),
        ("species:S:1:pos:R:3:forces:R:1:forces:R:2", "'forces' is listed twice"),
        ("species:R:1:pos:R:3:x:R:3", "'species' must be species:S:1"),
        ("species:S:1:pos:R:3:x:R:0:y:R:3", "column count 0 of 'x' must be at least 1"),
    ],
)
def test_properties_ase_refuses_or_misreads(tmp_path, props, message):
    """Item 5: a duplicated Properties field used to give the first column silently."""
    path = _write(tmp_path, _frame(f"Properties={props} energy=1.0", ("H 0 0 0 1 2 3",)))
    with pytest.raises(DataFormatError, match=rf"bad\.xyz, structure 0, key 'Properties': .*{message}"):
        XyzReader(path)


def test_energy_written_as_a_logical_value(tmp_path):
    """Item 5: ``energy=T`` is True in ASE; we used to treat the frame as unlabeled."""
    path = _write(tmp_path, _frame(f"{PROPS} energy=T"))
    with pytest.raises(DataFormatError, match=r"bad\.xyz, structure 0, key 'energy': energy must be a number.*True"):
        XyzReader(path)
    # a bare word in a free-text comment stays no label (documented)
    plain = _write(tmp_path, "1\nenergy from step 3\nH 0 0 0\n", "plain.xyz")
    assert XyzReader(plain).read(0).energy is None


def test_malformed_json_value_in_a_key_no_sample_needs(tmp_path):
    path = _write(tmp_path, _frame(f'{PROPS} energy=-1.0 note="_JSON {{bad"'))
    _ase_refuses(path)
    with pytest.raises(DataFormatError, match=r"bad\.xyz, structure 0: cannot parse the comment line"):
        XyzReader(path)


def test_malformed_stress_with_another_stress_key(tmp_path):
    """``stress=`` must be 9 numbers for ASE even when the labels are read from other keys."""
    path = _write(tmp_path, _frame(f'{PROPS} energy=-1.0 dft_energy=2.0 stress="1 2 3"'))
    _ase_refuses(path)
    with pytest.raises(DataFormatError, match=r"bad\.xyz, structure 0, key 'stress'"):
        XyzReader(path, energy_key="dft_energy", stress_key="dft_stress")


@pytest.mark.parametrize("z,what", [("99999999999", "out of range for an integer column"),
                                    ("0", "atomic number 0 is not in 1..118"),
                                    ("119", "atomic number 119 is not in 1..118"),
                                    ("-1", "atomic number -1 is not in 1..118")])
def test_atomic_numbers_out_of_range(tmp_path, z, what):
    """Item 4 (xyz): Z = 99999999999 passed (read through float64); 0 and 119 are no elements."""
    path = _write(tmp_path, _frame("Properties=Z:I:1:pos:R:3 energy=1.0", (f"{z} 0 0 0",)))
    with pytest.raises(DataFormatError, match=rf"bad\.xyz, structure 0, key '(Z|numbers)': line 3: .*{what}"):
        XyzReader(path)


def test_dummy_atom_symbol_is_refused(tmp_path):
    path = _write(tmp_path, _frame("Properties=species:S:1:pos:R:3", ("X 0 0 0",)))
    with pytest.raises(DataFormatError, match=r"structure 0, key 'species': line 3: unknown element 'X'"):
        XyzReader(path)


def test_integer_column_beyond_int32_is_refused_as_in_ase(tmp_path):
    path = _write(tmp_path, _frame("Properties=species:S:1:pos:R:3:tag:I:1 energy=1.0", ("H 0 0 0 4294967296",)))
    _ase_refuses(path)
    with pytest.raises(DataFormatError, match=r"key 'tag': line 3: '4294967296' is out of range"):
        XyzReader(path)


@pytest.mark.parametrize("count", [10**12, 10**18])
def test_huge_declared_atom_count_fails_fast(tmp_path, count):
    """Item 6: a header claiming 10**12 atoms used to loop over every declared atom (~22 h)."""
    path = _write(tmp_path, _frame() + f"{count}\nx\n{ATOM}\n{ATOM}\n")
    with _no_hang(30.0):
        with pytest.raises(DataFormatError, match=rf"structure 1: truncated frame: line 4 declares {count} atoms "
                                                  r"but the file ends after 2 atom lines"):
            XyzReader(path)
