"""Training building blocks without a Lightning run: losses (masks, HVP gradient by finite
differences, exactness under data parallelism), metrics, schedules, EMA, config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlff_distiller.data.dataset import MolecularDataset
from mlff_distiller.data.loader import MolecularDataLoader
from mlff_distiller.models import build_model, predict
from mlff_distiller.training.config import LossWeights, TrainConfig
from mlff_distiller.training.ema import WarmupEMA
from mlff_distiller.training.losses import LossScales, residuals, weighted_loss
from mlff_distiller.training.metrics import ErrorAccumulator
from mlff_distiller.training.schedules import HessianWeightSchedule

from conftest import emt_structures

CUTOFF = 4.0


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    import ase.db

    path = tmp_path_factory.mktemp("training") / "emt.db"
    with ase.db.connect(path) as db:
        for atoms in emt_structures(6, seed=3):
            db.write(atoms)
    return path


def _batch(db_path, indices, dtype=torch.float64):
    ds = MolecularDataset(db_path, dtype=dtype, return_atoms=False)
    from mlff_distiller.data.dataset import MolecularSubset

    loader = MolecularDataLoader(MolecularSubset(ds, indices), batch_size=len(indices), use_padding=False, cutoff=CUTOFF)
    return next(iter(loader))


def _with_hvp(batch, k=2, seed=0):
    """Random unit directions per structure (norm 1 over its 3N components) and random targets."""
    g = torch.Generator().manual_seed(seed)
    n = batch["positions"].shape[0]
    v = torch.randn(n, k, 3, generator=g, dtype=torch.float64)
    norm2 = torch.zeros(batch["natoms"].shape[0], k, dtype=torch.float64).index_add(0, batch["batch"], (v * v).sum(-1))
    v = v / norm2.sqrt().index_select(0, batch["batch"]).unsqueeze(-1)
    out = dict(batch)
    out["hvp_directions"] = v
    out["hvp"] = torch.randn(n, k, 3, generator=g, dtype=torch.float64)
    return out


def _model(species, name="schnet", seed=0):
    torch.manual_seed(seed)
    return build_model(name, species=species, cutoff=CUTOFF, dtype=torch.float64, hidden=8, layers=2)


def _loss(model, batch, weights, scales=LossScales(), **kw):
    pred = predict(
        model, batch, forces=True, stress="stress" in batch and weights.get("stress", 0) > 0,
        hvp_directions=batch.get("hvp_directions") if weights.get("hvp", 0) > 0 else None, create_graph=True,
    )
    return weighted_loss(residuals(pred, batch), weights, scales, **kw)[0]


@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_hvp_loss_gradient_matches_finite_differences(db_path, name):
    batch = _with_hvp(_batch(db_path, [0, 1, 2]))
    model = _model(sorted(set(batch["species"].tolist())), name)
    weights = {"hvp": 1.0}
    scales = LossScales(hvp=3.0)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(_loss(model, batch, weights, scales), params)
    rng = np.random.default_rng(0)
    candidates = [(p, g) for p, g in zip(params, grads) if p.numel() and g.abs().max() > 0]
    picks = np.unique(np.linspace(0, len(candidates) - 1, 6).round().astype(int))  # first, last, between
    checked = 0
    for p, g in (candidates[k] for k in picks):
        flat_index = int(rng.integers(p.numel()))
        h = 1e-5
        flat = p.data.view(-1)  # the loss itself needs autograd (forces, HVPs): edit the data only
        original = flat[flat_index].item()
        flat[flat_index] = original + h
        up = _loss(model, batch, weights, scales).item()
        flat[flat_index] = original - h
        down = _loss(model, batch, weights, scales).item()
        flat[flat_index] = original
        fd = (up - down) / (2 * h)
        analytic = g.view(-1)[flat_index].item()
        assert analytic == pytest.approx(fd, rel=1e-5, abs=1e-9), (p.shape, flat_index)
        checked += 1
    assert checked >= 4


def test_hvp_term_is_zero_when_student_matches_targets(db_path):
    batch = _with_hvp(_batch(db_path, [0, 2]))
    model = _model(sorted(set(batch["species"].tolist())))
    exact = predict(model, batch, hvp_directions=batch["hvp_directions"])["hvp"]
    batch["hvp"] = exact.detach()
    assert _loss(model, batch, {"hvp": 1.0}).item() == pytest.approx(0.0, abs=1e-20)
    batch["hvp"] = exact.detach() + 0.5
    # mean squared residual 0.25 / scale² (scale 1)
    assert _loss(model, batch, {"hvp": 1.0}).item() == pytest.approx(0.25, rel=1e-12)


def test_structure_without_stress_contributes_nothing(db_path):
    batch = _batch(db_path, [0, 1, 2, 3])  # structure 1 is a cluster: no stress
    mask = batch["stress_mask"]
    assert mask.tolist() == [True, False, True, True]
    model = _model(sorted(set(batch["species"].tolist())))
    weights = {"energy": 1.0, "forces": 1.0, "stress": 1.0}
    params = list(model.parameters())
    base = _loss(model, batch, weights)
    base_grads = torch.autograd.grad(base, params)

    changed = dict(batch)
    changed["stress"] = batch["stress"].clone()
    changed["stress"][1] = 123.0  # the would-be target of the unlabeled structure
    loss = _loss(model, changed, weights)
    assert torch.equal(loss, base)
    for a, b in zip(torch.autograd.grad(loss, params), base_grads):
        assert torch.equal(a, b)

    changed["stress"][2] += 0.01  # a labeled structure's stress does matter
    assert not torch.equal(_loss(model, changed, weights), base)


def test_masked_forces_and_energy(db_path):
    batch = _batch(db_path, [0, 1, 2])
    model = _model(sorted(set(batch["species"].tolist())))
    weights = {"energy": 1.0, "forces": 1.0}
    masked = dict(batch)
    masked["forces_mask"] = torch.tensor([True, False, True])
    masked["energy_mask"] = torch.tensor([True, True, False])
    base = _loss(model, masked, weights)
    other = dict(masked)
    other["forces"] = batch["forces"].clone()
    other["forces"][batch["batch"] == 1] = 7.0
    other["energy"] = batch["energy"].clone()
    other["energy"][2] = -1e3
    assert torch.equal(_loss(model, other, weights), base)
    # the mask removes entries from the mean: equal to the loss over the labeled structures only
    res = residuals(predict(model, masked), masked)
    assert res["forces"].shape[0] == int((batch["batch"] != 1).sum())
    assert res["energy"].shape == (2,)


def test_normalised_terms_and_weights(db_path):
    batch = _batch(db_path, [0, 1])
    model = _model(sorted(set(batch["species"].tolist())))
    pred = predict(model, batch)
    res = residuals(pred, batch)
    scales = LossScales(energy=0.1, forces=2.0)
    total, terms = weighted_loss(res, {"energy": 5.0, "forces": 100.0}, scales)
    e = ((pred["energy"] - batch["energy"]) / batch["natoms"]) ** 2
    f = (pred["forces"] - batch["forces"]) ** 2
    assert terms["energy"].item() == pytest.approx(5.0 * e.mean().item() / 0.01, rel=1e-12)
    assert terms["forces"].item() == pytest.approx(100.0 * f.mean().item() / 4.0, rel=1e-12)
    assert total.item() == pytest.approx(terms["energy"].item() + terms["forces"].item(), rel=1e-12)


def test_loss_is_exact_under_data_parallelism(db_path):
    """Two ranks with half batches (counts summed over ranks, DDP's gradient average) give the
    gradient of one process on the whole batch."""
    full = _with_hvp(_batch(db_path, [0, 1, 2, 3, 4, 5]))
    halves = [_batch(db_path, [0, 1, 2]), _batch(db_path, [3, 4, 5])]
    n0 = halves[0]["positions"].shape[0]
    for k, half in enumerate(halves):
        rows = slice(0, n0) if k == 0 else slice(n0, None)
        half["hvp_directions"] = full["hvp_directions"][rows]
        half["hvp"] = full["hvp"][rows]
    model = _model(sorted(set(full["species"].tolist())))
    weights = {"energy": 5.0, "forces": 100.0, "stress": 10.0, "hvp": 50.0}
    params = list(model.parameters())

    def counts(batch):
        pred = predict(model, batch, stress=True, hvp_directions=batch["hvp_directions"])
        res = residuals(pred, batch)
        return torch.tensor([float(res[n].numel()) if n in res else 0.0
                             for n in ("energy", "forces", "stress", "hvp", "energies")], dtype=torch.float64)

    all_counts = counts(halves[0]) + counts(halves[1])
    grads = []
    for half in halves:
        loss = _loss(model, half, weights, count_reduce=lambda c: all_counts, world_size=2)
        grads.append(torch.autograd.grad(loss, params))
    reference = torch.autograd.grad(_loss(model, full, weights), params)
    for g0, g1, ref in zip(*grads, reference):
        torch.testing.assert_close((g0 + g1) / 2, ref, rtol=1e-10, atol=1e-12)


def test_error_accumulator_matches_numpy():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(size=(n, 3)) for n in (5, 7, 1)]
    acc = ErrorAccumulator()
    for c in chunks:
        acc.update({"forces": torch.tensor(c)})
    errors, squares = acc.results()
    flat = np.concatenate(chunks).ravel()
    assert errors["forces_mae"] == pytest.approx(1000 * np.abs(flat).mean(), rel=1e-12)
    assert errors["forces_rmse"] == pytest.approx(1000 * np.sqrt((flat**2).mean()), rel=1e-12)
    assert squares["forces"] == pytest.approx((flat**2).mean(), rel=1e-12)
    assert "energy_mae" not in errors  # no energy residuals seen: no energy metric
    doubled, _ = acc.results(reduce=lambda t: 2 * t)  # a two-rank sum of identical halves
    assert doubled["forces_mae"] == pytest.approx(errors["forces_mae"], rel=1e-12)


def test_hessian_weight_halves_on_plateau_and_near_target():
    s = HessianWeightSchedule(100.0, factor=0.5, patience=2)
    weights = [s.step(m) for m in (1.0, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7)]
    assert weights == [100.0, 100.0, 100.0, 50.0, 50.0, 50.0, 25.0]
    t = HessianWeightSchedule(100.0, factor=0.5, patience=2, target=0.05, tolerance=0.05)
    assert [t.step(m) for m in (0.2, 0.1, 0.052, 0.051, 0.050)] == [100.0, 100.0, 50.0, 50.0, 25.0]
    u = HessianWeightSchedule(1.0, factor=0.5, patience=2)
    u.load_state_dict(t.state_dict())
    assert u.state_dict() == t.state_dict()


def test_warmup_ema():
    ema = WarmupEMA(0.99)
    avg, cur = torch.tensor(1.0), torch.tensor(3.0)
    # n = 0 updates so far -> decay (1 + 0) / 10 = 0.1
    assert ema(avg, cur, torch.tensor(0)).item() == pytest.approx(1.0 + 2.0 * 0.9)
    assert ema(avg, cur, torch.tensor(10**6)).item() == pytest.approx(1.0 + 2.0 * 0.01)


def test_config_round_trip_and_errors(tmp_path):
    cfg = TrainConfig(data="x.db", out_dir="run", weights=LossWeights(hvp=300.0), model_options={"hidden": 8})
    for name in ("c.yaml", "c.json"):
        assert TrainConfig.load(cfg.save(tmp_path / name)) == cfg
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(data="x.db", lr=-1.0)
    with pytest.raises(ValueError, match="loss weight 'forces'"):
        LossWeights(forces=float("nan"))
    with pytest.raises(ValueError, match="val"):
        TrainConfig(data="x.db", val=1.5)
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"data": "x.db", "learning_rate": 1.0})
    changed = cfg.replace(lr=2e-3, epochs=5)
    assert cfg.differences(changed) == ["lr: 0.002 != 0.001"]  # epochs may change on resume


def test_sample_groups_all_or_none():
    from mlff_distiller.data.structure import Structure
    from mlff_distiller.training.data import sample_groups

    def structure(group):
        s = Structure(positions=np.zeros((1, 3)), numbers=np.array([1]), cell=np.zeros((3, 3)),
                      pbc=np.zeros(3, bool))
        s.extras = {} if group is None else {"sample_group": group}
        return s

    class Fake:
        def __init__(self, groups):
            self.items = [structure(g) for g in groups]

        def __len__(self):
            return len(self.items)

        def get_structures(self, idx):
            return [self.items[i] for i in idx]

    assert sample_groups(Fake(["a", "b", "a"])) == ["a", "b", "a"]
    assert sample_groups(Fake([None, None])) is None
    with pytest.raises(ValueError, match="structure 1 has no 'sample_group'"):
        sample_groups(Fake(["a", None, "b"]))


def test_training_data_statistics_come_from_the_training_split(db_path, tmp_path):
    """E0s, scales and the split: training split only; a separate validation file; test fraction."""
    import warnings

    from mlff_distiller.data.split import load_split
    from mlff_distiller.training.data import TrainingData

    cfg = TrainConfig(data=str(db_path), val=0.34, test_fraction=0.17, split="random", seed=5)
    prepared = TrainingData.prepare(cfg, tmp_path, write=True)
    assert (len(prepared.train), len(prepared.val), len(prepared.test)) == (3, 2, 1)
    ds = MolecularDataset(db_path, return_atoms=False)
    saved = load_split(tmp_path / "split.json", ds)
    assert [s.indices for s in saved] == [prepared.train.indices, prepared.val.indices, prepared.test.indices]
    own = ds.get_statistics(prepared.train.indices)
    assert prepared.statistics["reference_energies"] == own["reference_energies"]
    assert prepared.scales.forces == pytest.approx(own["forces_rms"], rel=1e-12)
    assert prepared.scales.energy == pytest.approx(own["energy_per_atom_residual_std"], rel=1e-12)
    e0, scale, shift = prepared.normalisation()
    assert scale == pytest.approx(own["forces_rms"]) and shift == 0.0
    assert prepared.species == sorted(set(ds.get_statistics()["elements"]))

    # a validation file: the whole of `data` trains, `val` validates
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = TrainingData.prepare(TrainConfig(data=str(db_path), val=str(db_path), split="random"))
    assert len(other.train) == len(ds) and len(other.val) == len(ds)
