"""Teachers: every built-in teacher labels like a direct call of its calculator; optional extras fail
with one line naming the extra; MACE's process-wide environment change is undone."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from mlff_distiller.structures import builtin
from mlff_distiller.teachers import MissingExtraError, get_teacher, label_structure


def _direct(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress(voigt=False)
    return out


def _assert_same(structure, direct, exact=True):
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(float(structure.energy), direct["energy"], **tol)
    np.testing.assert_allclose(structure.forces, direct["forces"], **tol)
    if "stress" in direct:
        np.testing.assert_allclose(structure.stress, direct["stress"], **tol)
    else:
        assert structure.stress is None


@pytest.mark.parametrize("name", ["cu32", "ethanol"])
def test_emt_labels_equal_a_direct_call(name):
    atoms = builtin(name)
    atoms.rattle(0.05, seed=1)
    s = label_structure(get_teacher("emt"), atoms)
    _assert_same(s, _direct(EMT(), atoms))
    assert s.energy.dtype == np.float64 and s.forces.dtype == np.float64
    np.testing.assert_allclose(s.extras["energies"].sum(), float(s.energy), rtol=1e-12)
    assert s.stress is None if name == "ethanol" else s.stress.shape == (3, 3)


def test_import_path_teacher_with_options_and_info():
    options = {"sigma": 2.3, "epsilon": 0.2, "rc": 7.0}
    teacher = get_teacher("ase.calculators.lj:LennardJones", **options)
    atoms = builtin("cu32")
    atoms.rattle(0.05, seed=2)
    _assert_same(label_structure(teacher, atoms), _direct(LennardJones(**options), atoms))
    info = json.loads(json.dumps(teacher.info()))
    assert info["name"] == "ase.calculators.lj:LennardJones" and info["options"] == options
    assert info["units"]["energy"] == "eV" and info["units"]["hvp"] == "eV/Å^2"
    assert info["version"] == __import__("ase").__version__
    assert get_teacher("lj", **options).info()["calculator"] == "ase.calculators.lj.LennardJones"


def test_gfn2_xtb_labels_equal_a_direct_call_whatever_came_before():
    """tblite restarts each SCF from the last one by default; the teacher's labels do not depend on it
    (one OpenMP thread: tblite's threaded reductions differ in the last bits from run to run)."""
    from tblite.ase import TBLite
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        _xtb_history_check(TBLite)


def _xtb_history_check(TBLite):
    teacher = get_teacher("gfn2-xtb")
    water, ethanol = builtin("water"), builtin("ethanol")
    ethanol.rattle(0.02, seed=3)
    fresh = _direct(TBLite(method="GFN2-xTB", verbosity=0), ethanol)
    calc = teacher.calculator()
    label_structure(teacher, water, calc=calc)
    moved = ethanol.copy()
    moved.positions[0] += 0.05
    label_structure(teacher, moved, calc=calc)  # tblite would restart the SCF from this one
    s = label_structure(teacher, ethanol, calc=calc)
    _assert_same(s, fresh)
    assert teacher.info()["options"] == {"method": "GFN2-xTB", "verbosity": 0, "cache_api": False}
    assert teacher.info()["version"].startswith("tblite ")
    np.testing.assert_allclose(s.extras["energies"].sum(), float(s.energy), rtol=1e-10)


def test_gfn2_xtb_rejects_unknown_options():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['acuracy'\]"):
        get_teacher("gfn2-xtb", acuracy=0.1)


def test_sevennet_0_labels_equal_a_direct_call():
    pytest.importorskip("sevenn")
    from sevenn.calculator import SevenNetCalculator

    teacher = get_teacher("sevennet-0")
    atoms = builtin("water")
    s = label_structure(teacher, atoms)
    with pytest.warns(UserWarning):  # no tensor-product accelerator on this machine
        direct = _direct(SevenNetCalculator("7net-0", device="cpu"), atoms)
    _assert_same(s, direct)
    assert "sevenn 0.13" in teacher.info()["version"] and teacher.default_hvp_step == 1e-2


def test_unknown_teacher_and_bad_options():
    with pytest.raises(ValueError, match="unknown teacher 'dft'.*emt.*gfn2-xtb.*sevennet-0"):
        get_teacher("dft")
    with pytest.raises(ValueError, match="cannot import module"):
        get_teacher("no_such_module:Calc")
    with pytest.raises(ValueError, match="bad keyword options"):
        get_teacher("ase.calculators.singlepoint:SinglePointCalculator", energy=1.0)
    with pytest.warns(UserWarning, match=r"\['sigam'\] are not among"):
        get_teacher("lj", sigam=2.0)


def test_teacher_refuses_structures_it_cannot_label():
    from mlff_distiller.teachers.toy import HarmonicTeacher

    with pytest.raises(ValueError, match="labels molecules only"):
        label_structure(HarmonicTeacher(), builtin("cu32"))


@pytest.mark.parametrize("name, extra", [("chgnet", "chgnet"), ("sevennet-0", "sevenn")])
def test_missing_extra_is_one_line_naming_it(monkeypatch, name, extra):
    for mod in [m for m in sys.modules if m.split(".")[0] == extra] + [extra]:
        monkeypatch.setitem(sys.modules, mod, None)  # as if not installed
    with pytest.raises(MissingExtraError) as err:
        get_teacher(name)
    message = str(err.value)
    assert "\n" not in message and f"pip install 'mlff_distiller[{extra}]'" in message and name in message


def test_mace_missing_extra_and_missing_file(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such.model"):
        get_teacher(f"mace:{tmp_path / 'no-such.model'}")
    model = tmp_path / "small.model"
    model.write_bytes(b"not a real model")
    monkeypatch.setitem(sys.modules, "mace", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'mlff_distiller\[mace\]'"):
        get_teacher(f"mace:{model}")


def _fake_package(root, name: str, files: dict) -> None:
    for rel, text in files.items():
        path = root / name / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.mark.parametrize("before", [None, "0"])
def test_mace_teacher_restores_the_weights_only_variable(monkeypatch, tmp_path, before):
    """A stand-in ``mace`` package that, like the real one, sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1."""
    _fake_package(tmp_path, "mace", {
        "__init__.py": "import os\nos.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'\n",
        "calculators.py": """
            from ase.calculators.emt import EMT
            class MACECalculator(EMT):
                def __init__(self, model_paths, device, default_dtype):
                    super().__init__()
                    self.model_paths, self.device, self.default_dtype = model_paths, device, default_dtype
            """,
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in [m for m in sys.modules if m == "mace" or m.startswith("mace.")]:
        monkeypatch.delitem(sys.modules, mod)
    if before is None:
        monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    else:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", before)
    model = tmp_path / "m.model"
    model.write_bytes(b"weights")
    teacher = get_teacher(f"mace:{model}")
    assert sys.modules["mace"] is not None  # the stand-in was imported ...
    assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") == before  # ... and its change undone
    calc = teacher.calculator()
    assert (calc.model_paths, calc.device, calc.default_dtype) == (str(model), "cpu", "float64")
    info = teacher.info()
    assert info["name"] == f"mace:{model}" and "model sha256 " in info["version"]
    atoms = builtin("cu32")
    _assert_same(label_structure(teacher, atoms), _direct(EMT(), atoms))


def test_chgnet_teacher_wraps_its_calculator(monkeypatch, tmp_path):
    _fake_package(tmp_path, "chgnet", {
        "__init__.py": "",
        "model/__init__.py": "",
        "model/dynamics.py": """
            from ase.calculators.emt import EMT
            class CHGNetCalculator(EMT):
                def __init__(self, use_device="cpu"):
                    super().__init__()
                    self.use_device = use_device
            """,
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in [m for m in sys.modules if m == "chgnet" or m.startswith("chgnet.")]:
        monkeypatch.delitem(sys.modules, mod)
    teacher = get_teacher("chgnet", device="cuda")
    assert teacher.calculator().use_device == "cuda"
    with pytest.raises(ValueError, match="periodic structures only.*vacuum box"):
        label_structure(teacher, builtin("water"))
