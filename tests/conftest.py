"""Shared fixtures: EMT-labeled structures and the same data written in every format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


# -- a PostgreSQL server started by these tests is stopped by them -----------------------------
# tests/test_postgres.py starts one with scripts/start_postgres.sh when MLFF_TEST_POSTGRES_URL is
# unset. This session registers as the script's client (MLFF_PG_CLIENT, inherited by the
# script) and releases it at the end: the script stops the server when the last client that
# used it is gone and a client had started it (never a server started by hand or by .ci/run).
_REPO = Path(__file__).resolve().parents[1]


def _postgres_dir() -> Path:
    """The cluster folder the script uses (same rule as scripts/start_postgres.sh)."""
    env = os.environ.get("MLFF_PG_DIR")
    return Path(env) if env else Path(os.environ.get("TMPDIR") or "/tmp") / f"mlff-postgres-{os.getuid()}"


def pytest_configure(config) -> None:
    os.environ.setdefault("MLFF_PG_CLIENT", str(os.getpid()))


def pytest_unconfigure(config) -> None:
    client = os.environ.get("MLFF_PG_CLIENT")
    if client == str(os.getpid()) and (_postgres_dir() / "clients" / client).exists():
        import subprocess

        subprocess.run(["bash", str(_REPO / "scripts" / "start_postgres.sh"), "release", client],
                       capture_output=True, timeout=120, check=False)


def realdata_dir() -> Path:
    """Where ../shared/realdata is (override with MLFF_REALDATA)."""
    env = os.environ.get("MLFF_REALDATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def emt_structures(n: int = 12, seed: int = 0):
    """``n`` EMT-labeled Atoms: periodic rattled bulk (with stress), clusters and small cells, float64."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.cluster import Icosahedron

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        kind = k % 3
        if kind == 0:
            atoms = bulk(["Cu", "Al", "Ni"][k % 3 if k % 2 else 0], "fcc", a=3.6 + 0.1 * rng.random(), cubic=True)
            atoms = atoms.repeat((1 + k % 2, 1, 2))
        elif kind == 1:
            atoms = Icosahedron("Cu", noshells=2)
            atoms.center(vacuum=4.0)
            atoms.pbc = False
            atoms.cell = np.zeros((3, 3))
        else:
            atoms = bulk("Au", "fcc", a=4.08).repeat((2, 2, 1 + k % 2))
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if atoms.pbc.all():
            results["stress"] = atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, **results)
        out.append(atoms)
    return out


@pytest.fixture(scope="session")
def emt_atoms():
    return emt_structures()


def write_guide_hdf5(path, structures):
    """The guide's HDF5 snippet, verbatim apart from the label source."""
    import h5py

    with h5py.File(path, "w") as f:
        group_root = f.create_group("structures")
        for i, atoms in enumerate(structures):
            group = group_root.create_group(str(i))
            group.create_dataset("positions", data=atoms.positions)
            group.create_dataset("species", data=atoms.numbers)
            group.create_dataset("cell", data=atoms.cell.array)
            group.create_dataset("pbc", data=atoms.pbc)
            group.create_dataset("energy", data=atoms.get_potential_energy())
            group.create_dataset("forces", data=atoms.get_forces())


@pytest.fixture(scope="session")
def data_files(tmp_path_factory, emt_atoms):
    """The same EMT structures as an ASE db, an extended XYZ and a guide-layout HDF5 file."""
    from ase.db import connect
    from ase.io import write

    root = tmp_path_factory.mktemp("formats")
    db_path = root / "structures.db"
    with connect(db_path) as db:
        for atoms in emt_atoms:
            db.write(atoms)
    xyz_path = root / "structures.xyz"
    write(xyz_path, emt_atoms)
    h5_path = root / "structures.h5"
    write_guide_hdf5(h5_path, emt_atoms)
    return {"ase": db_path, "xyz": xyz_path, "hdf5": h5_path}
