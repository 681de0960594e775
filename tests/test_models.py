"""Student models: contract API, derivatives against finite differences, save/load.

Every architecture in ``available_models()`` runs every test (small sizes, float64 where precision
matters). Physics invariances live in tests/test_models_physics.py.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from mlff_distiller.data.collate import Collater
from mlff_distiller.models import (
    StudentModel,
    atoms_to_batch,
    available_models,
    build_model,
    load,
    predict,
    read_metadata,
    save,
)
from mlff_distiller.structures import builtin

SPECIES = [1, 6, 8, 29]
CUTOFF = 4.0
MODELS = available_models()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is fastest (and fair to other processes); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_model(name: str, dtype=torch.float64, seed: int = 0) -> StudentModel:
    torch.manual_seed(seed)
    model = build_model(name, species=SPECIES, cutoff=CUTOFF, dtype=dtype, hidden=16, layers=2, rbf=8)
    model.set_reference_energies({1: -13.6, 6: -1030.0, 8: -2040.0, 29: -3.5})
    model.set_scale_shift(0.7, 0.05)
    return model


def molecule() -> Atoms:
    atoms = builtin("aspirin")[:12]  # C, O and H within a few Å of each other
    atoms.rattle(0.05, seed=1)
    return atoms


def cell() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)  # 4 atoms, cell smaller than 2 x cutoff: many images
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.05, 0.0], [0.0, 1.02, 0.03], [0.04, 0.0, 0.97]]), scale_atoms=True)
    atoms.rattle(0.08, seed=2)
    return atoms


def energy_of(model, atoms) -> float:
    with torch.no_grad():
        return float(predict(model, atoms_to_batch(atoms, model.cutoff, model.dtype), forces=False)["energy"][0])


def test_available_models_names():
    assert {"schnet", "painn"} <= set(MODELS)
    assert all(name == name.lower() for name in MODELS)


def test_build_model_rejects_unknown_name_and_hyperparameter():
    with pytest.raises(ValueError, match="unknown student model 'nope'"):
        build_model("nope", species=[1], cutoff=5.0)
    with pytest.raises(TypeError, match="bogus"):
        build_model("schnet", species=[1], cutoff=5.0, bogus=3)
    with pytest.raises(ValueError, match="dtype"):
        build_model("schnet", species=[1], cutoff=5.0, dtype=torch.float16)
    with pytest.raises(ValueError, match="cutoff"):
        build_model("schnet", species=[1], cutoff=-1.0)
    with pytest.raises(ValueError, match="atomic number"):
        build_model("schnet", species=[0, 1], cutoff=5.0)


@pytest.mark.parametrize("name", MODELS)
def test_config_rebuilds_the_model(name):
    model = build_model(name, species=[8, 1, 6], cutoff=4.5, hidden=8, layers=1)
    config = json.loads(json.dumps(model.config))
    assert config["name"] == name and config["species"] == [1, 6, 8] and config["cutoff"] == 4.5
    assert config["dtype"] == "float32" and config["hidden"] == 8 and config["layers"] == 1
    again = build_model(**config)
    assert again.config == model.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert model.cutoff == 4.5 and model.species == [1, 6, 8]


@pytest.mark.parametrize("name", MODELS)
def test_dtype_float32_default_float64_on_request(name):
    atoms = molecule()
    m32 = build_model(name, species=SPECIES, cutoff=CUTOFF, hidden=8, layers=1)
    m64 = build_model(name, species=SPECIES, cutoff=CUTOFF, dtype="float64", hidden=8, layers=1)
    assert all(p.dtype == torch.float32 for p in m32.parameters())
    assert all(p.dtype == torch.float64 for p in m64.parameters())
    out32 = predict(m32, atoms_to_batch(atoms, CUTOFF))
    out64 = predict(m64, atoms_to_batch(atoms, CUTOFF))  # float32 positions are widened
    assert out32["forces"].dtype == torch.float32 and out64["forces"].dtype == torch.float64


@pytest.mark.parametrize("name", MODELS)
def test_unknown_atomic_number_is_a_value_error_naming_it(name):
    model = small_model(name)
    atoms = molecule()
    atoms.numbers[3] = 26  # Fe
    with pytest.raises(ValueError, match=r"\[26\]"):
        predict(model, atoms_to_batch(atoms, CUTOFF, torch.float64))
    with pytest.raises(ValueError, match="92"):
        model.set_reference_energies({92: 1.0})


@pytest.mark.parametrize("name", MODELS)
def test_atomic_energies_sum_to_energy_and_use_e0_scale_shift(name):
    model = small_model(name)
    batch = atoms_to_batch(molecule(), CUTOFF, torch.float64)
    atomic = model.atomic_energies(batch)
    assert atomic.shape == (12,)
    torch.testing.assert_close(atomic.sum().unsqueeze(0), model(batch), rtol=0, atol=1e-9)
    # per-atom energy = E0[Z] + shift + scale * network: recover the network output two ways
    e0 = torch.tensor([model.reference_energy_dict()[int(z)] for z in batch["species"]], dtype=torch.float64)
    net = (atomic - e0 - 0.05) / 0.7
    model.set_scale_shift(2.0, -1.0)
    model.set_reference_energies({1: 0.0, 6: 0.0, 8: 0.0, 29: 0.0})
    torch.testing.assert_close(model.atomic_energies(batch), -1.0 + 2.0 * net, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("structure", ["molecule", "cell"])
def test_forces_equal_finite_differences_of_energy(name, structure):
    model = small_model(name)
    atoms = molecule() if structure == "molecule" else cell()
    out = predict(model, atoms_to_batch(atoms, CUTOFF, torch.float64))
    h = 1e-4
    fd = np.zeros((len(atoms), 3))
    for a in range(len(atoms)):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, k] += h
            minus.positions[a, k] -= h
            fd[a, k] = -(energy_of(model, plus) - energy_of(model, minus)) / (2 * h)
    assert np.abs(fd).max() > 1e-5  # the test has something to compare
    np.testing.assert_allclose(out["forces"].numpy(), fd, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", MODELS)
def test_stress_equals_finite_strain_derivative(name):
    model = small_model(name)
    atoms = cell()
    out = predict(model, atoms_to_batch(atoms, CUTOFF, torch.float64), stress=True)
    h = 1e-5
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1):
                eps = np.zeros((3, 3))
                eps[a, b] = sign * h
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
                energies.append(energy_of(model, strained))
            fd[a, b] = (energies[0] - energies[1]) / (2 * h) / atoms.get_volume()
    assert np.abs(fd).max() > 1e-6
    np.testing.assert_allclose(out["stress"][0].numpy(), fd, rtol=0, atol=1e-8)
    # a molecule (zero cell) has zero stress
    mol = predict(model, atoms_to_batch(molecule(), CUTOFF, torch.float64), stress=True)
    assert torch.equal(mol["stress"], torch.zeros(1, 3, 3, dtype=torch.float64))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("structure", ["molecule", "cell"])
def test_hvp_equals_finite_differences_of_forces(name, structure):
    model = small_model(name)
    atoms = molecule() if structure == "molecule" else cell()
    rng = np.random.default_rng(3)
    v = rng.normal(size=(len(atoms), 2, 3))
    v /= np.linalg.norm(v, axis=(0, 2)).reshape(1, 2, 1)  # unit norm over all 3N components
    out = predict(model, atoms_to_batch(atoms, CUTOFF, torch.float64), hvp_directions=torch.from_numpy(v))
    assert out["hvp"].shape == (len(atoms), 2, 3)
    h = 1e-4
    for k in range(2):
        forces = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions += sign * h * v[:, k]
            forces.append(predict(model, atoms_to_batch(moved, CUTOFF, torch.float64))["forces"].numpy())
        fd = -(forces[0] - forces[1]) / (2 * h)
        assert np.abs(fd).max() > 1e-5
        np.testing.assert_allclose(out["hvp"][:, k].numpy(), fd, rtol=0, atol=1e-6)


def graph_batch(structures, cutoff, dtype=torch.float64):
    samples = [
        {
            "positions": torch.tensor(a.positions, dtype=dtype),
            "species": torch.tensor(a.numbers),
            "cell": torch.tensor(a.cell.array, dtype=dtype),
            "pbc": torch.tensor(a.pbc),
        }
        for a in structures
    ]
    return Collater(use_padding=False, cutoff=cutoff)(samples)


@pytest.mark.parametrize("name", MODELS)
def test_mixed_batch_equals_each_structure_alone(name):
    model = small_model(name)
    structures = [molecule(), cell(), molecule()[:5]]
    structures[2].positions += 0.3
    batch = graph_batch(structures, CUTOFF)
    v = torch.randn(batch["positions"].shape[0], 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    out = predict(model, batch, stress=True, hvp_directions=v)
    assert batch.keys() == before.keys() and all(torch.equal(batch[k], before[k]) for k in batch if isinstance(batch[k], torch.Tensor))
    ptr = batch["ptr"].tolist()
    for b, atoms in enumerate(structures):
        alone = predict(model, atoms_to_batch(atoms, CUTOFF, torch.float64), stress=True, hvp_directions=v[ptr[b] : ptr[b + 1]])
        torch.testing.assert_close(out["energy"][b], alone["energy"][0], rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(out["forces"][ptr[b] : ptr[b + 1]], alone["forces"], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(out["stress"][b], alone["stress"][0], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(out["hvp"][ptr[b] : ptr[b + 1]], alone["hvp"], rtol=1e-9, atol=1e-10)
    assert out["stress"][1].abs().max() > 0 and torch.equal(out["stress"][0], torch.zeros(3, 3, dtype=torch.float64))


@pytest.mark.parametrize("name", MODELS)
def test_create_graph_gives_parameter_gradients_of_a_force_loss(name):
    """d/dθ Σ F² through predict(create_graph=True) equals the finite difference in one weight."""
    model = small_model(name)
    batch = atoms_to_batch(cell(), CUTOFF, torch.float64)
    v = torch.randn(4, 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def loss_fn():
        out = predict(model, batch, stress=True, hvp_directions=v, create_graph=True)
        return (out["forces"] ** 2).sum() + (out["stress"] ** 2).sum() * 1e3 + (out["hvp"] ** 2).sum() + out["energy"].sum()

    loss = loss_fn()
    model.zero_grad()
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None and p.grad.abs().max() > 0]
    assert len(params) >= len(list(model.parameters())) // 2
    p = max(params, key=lambda q: q.grad.abs().max())
    flat = p.grad.reshape(-1)
    k = int(flat.abs().argmax())
    h = 1e-6
    with torch.no_grad():
        p.view(-1)[k] += h
    up = float(loss_fn().detach())
    with torch.no_grad():
        p.view(-1)[k] -= 2 * h
    down = float(loss_fn().detach())
    assert abs((up - down) / (2 * h) - float(flat[k])) < 1e-5 * max(1.0, abs(float(flat[k])))


@pytest.mark.parametrize("name", MODELS)
def test_isolated_atoms_have_e0_plus_shift_and_zero_derivatives(name):
    model = small_model(name)
    far = Atoms("HCO", positions=[[0, 0, 0], [10, 0, 0], [0, 10, 0]])
    out = predict(model, atoms_to_batch(far, CUTOFF, torch.float64), stress=True, hvp_directions=torch.ones(3, 1, 3, dtype=torch.float64))
    expected = sum(model.reference_energy_dict()[z] for z in (1, 6, 8)) + 3 * 0.05
    # isolated atoms: no neighbors -> exactly E0 + shift each, zero forces
    torch.testing.assert_close(out["energy"], torch.tensor([expected], dtype=torch.float64), rtol=1e-14, atol=1e-10)
    assert torch.equal(out["forces"], torch.zeros(3, 3, dtype=torch.float64))
    assert torch.equal(out["hvp"], torch.zeros(3, 1, 3, dtype=torch.float64))
    no_directions = predict(model, atoms_to_batch(molecule(), CUTOFF, torch.float64), hvp_directions=torch.zeros(12, 0, 3))
    assert no_directions["hvp"].shape == (12, 0, 3)
    with pytest.raises(ValueError, match="hvp_directions must have shape"):
        predict(model, atoms_to_batch(molecule(), CUTOFF, torch.float64), hvp_directions=torch.zeros(11, 1, 3))
    energy_only = predict(model, atoms_to_batch(far, CUTOFF, torch.float64), forces=False)
    assert set(energy_only) == {"energy"}
    torch.testing.assert_close(energy_only["energy"], out["energy"])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_save_load_gives_bit_identical_predictions(name, dtype, tmp_path):
    model = small_model(name, dtype=dtype, seed=5)
    path = save(model, tmp_path / "student.safetensors", metadata={"teacher": {"name": "emt", "version": "3.29"}, "fingerprint": "abc"})
    loaded = load(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert not loaded.training
    for atoms in (molecule(), cell()):
        batch = atoms_to_batch(atoms, CUTOFF, dtype)
        a = predict(model, batch, stress=True)
        b = predict(loaded, batch, stress=True)
        for key in a:
            assert torch.equal(a[key], b[key]), key
    header = read_metadata(path)
    assert header["format_version"] == 1 and header["config"] == model.config
    # the header holds the values the model computes with (float32-rounded for a float32 model)
    assert header["reference_energies"] == pytest.approx({"1": -13.6, "6": -1030.0, "8": -2040.0, "29": -3.5}, rel=1e-7)
    assert header["scale"] == pytest.approx(0.7, rel=1e-7) and header["shift"] == pytest.approx(0.05, rel=1e-7)
    assert header["units"]["energy"] == "eV" and header["metadata"]["teacher"]["name"] == "emt"
    assert header["package_version"]
    # the file is a plain safetensors file: 8-byte header length then JSON (no pickle opcodes)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert json.loads(raw[8 : 8 + n])["__metadata__"]["mlff_distiller"]


def _rewrite_header(path, out, edit):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    head = json.loads(raw[8 : 8 + n])
    meta = json.loads(head["__metadata__"]["mlff_distiller"])
    edit(meta)
    head["__metadata__"]["mlff_distiller"] = json.dumps(meta)
    text = json.dumps(head).encode()
    text += b" " * (-len(text) % 8)
    out.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    return out


def test_load_refuses_newer_format_and_foreign_files(tmp_path):
    model = small_model("schnet")
    path = save(model, tmp_path / "m.safetensors")
    assert load(path).config == model.config  # the rewrite helper keeps a valid file
    same = _rewrite_header(path, tmp_path / "same.safetensors", lambda m: None)
    assert load(same).config == model.config
    newer = _rewrite_header(path, tmp_path / "newer.safetensors", lambda m: m.update(format_version=2))
    with pytest.raises(ValueError, match="newer"):
        load(newer)
    with pytest.raises(ValueError, match="newer"):
        read_metadata(newer)
    odd = _rewrite_header(path, tmp_path / "odd.safetensors", lambda m: m["config"].update(wings=2))
    with pytest.raises(ValueError, match="odd.safetensors.*wings"):
        load(odd)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="header"):
        load(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="safetensors"):
        load(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="JSON"):
        save(model, tmp_path / "bad.safetensors", metadata={"x": object()})


def test_atoms_to_batch_matches_the_data_layer_batch():
    atoms = cell()
    ours = atoms_to_batch(atoms, CUTOFF, torch.float64)
    theirs = graph_batch([atoms], CUTOFF)
    for key in ("species", "positions", "batch", "ptr", "natoms", "cell", "pbc", "edge_index", "shifts"):
        assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize("name", MODELS)
def test_predict_on_data_loader_batches(name, data_files):
    """Batches of the real loader (labels, masks, idx, ints) give each structure's own result."""
    from mlff_distiller.data.dataset import MolecularDataset
    from mlff_distiller.data.loader import MolecularDataLoader

    dataset = MolecularDataset(data_files["ase"], dtype=torch.float64)
    torch.manual_seed(0)
    model = build_model(name, species=[13, 28, 29, 79], cutoff=CUTOFF, dtype=torch.float64, hidden=8, layers=2, rbf=6)
    loader = MolecularDataLoader(dataset, batch_size=5, use_padding=False, cutoff=CUTOFF)
    seen = 0
    for batch in loader:
        out = predict(model, batch, stress=True)
        ptr = batch["ptr"].tolist()
        for b in range(len(ptr) - 1):
            positions = batch["positions"][ptr[b] : ptr[b + 1]].numpy()
            atoms = Atoms(numbers=batch["species"][ptr[b] : ptr[b + 1]].numpy(), positions=positions,
                          cell=batch["cell"][b].numpy(), pbc=batch["pbc"][b].numpy())
            alone = predict(model, atoms_to_batch(atoms, CUTOFF, torch.float64), stress=True)
            torch.testing.assert_close(out["energy"][b], alone["energy"][0], rtol=1e-12, atol=1e-10)
            torch.testing.assert_close(out["forces"][ptr[b] : ptr[b + 1]], alone["forces"], rtol=1e-9, atol=1e-11)
            torch.testing.assert_close(out["stress"][b], alone["stress"][0], rtol=1e-9, atol=1e-12)
            seen += 1
    assert seen == len(dataset)
