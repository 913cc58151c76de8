"""``monai_crossd.apps.hybrid``: the per-epoch 2D/3D schedule, the mixed loader, the per-dimension loss weights, and
one network trained on 2D and 3D batches by MONAI's ``SupervisedTrainer``, checkpointed and resumed."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader
from monai.engines import SupervisedTrainer
from monai.losses import DiceCELoss
from monai.utils import CommonKeys
from torch.utils.data import DistributedSampler

from monai_crossd.apps.bundle import EpochSeed, LastCheckpointSaver, ResumeCheckpointLoader
from monai_crossd.apps.hybrid import DimensionLossLogger, DimensionWeightedLoss, HybridLoader, hybrid_schedule
from monai_crossd.networks.nets import dual_crossd_unet

# ---- the schedule ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length, ratio, n2d", [(10, 0.5, 5), (5, 0.4, 2), (5, 0.5, 3), (7, 0.1, 1), (3, 0.0, 0), (3, 1.0, 3)]
)
def test_schedule_counts_follow_the_ratio(length, ratio, n2d):
    for epoch in range(1, 6):
        schedule = hybrid_schedule(length, ratio, seed=2, epoch=epoch)
        assert len(schedule) == length and set(schedule) <= {2, 3}
        assert schedule.count(2) == n2d and abs(n2d - ratio * length) <= 0.5


def test_schedule_depends_on_seed_and_epoch_only():
    assert hybrid_schedule(20, 0.5, seed=1, epoch=3) == hybrid_schedule(20, 0.5, seed=1, epoch=3)
    assert len({hybrid_schedule(20, 0.5, seed=1, epoch=e) for e in range(1, 6)}) == 5
    assert hybrid_schedule(20, 0.5, seed=1, epoch=3) != hybrid_schedule(20, 0.5, seed=2, epoch=3)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"length": 0}, "length"),
        ({"length": 2.0}, "length"),
        ({"ratio_2d": -0.1}, "ratio_2d"),
        ({"ratio_2d": 1.5}, "ratio_2d"),
        ({"ratio_2d": True}, "ratio_2d"),
        ({"ratio_2d": "0.5"}, "ratio_2d"),
        ({"seed": -1}, "seed"),
        ({"epoch": -1}, "epoch"),
    ],
)
def test_schedule_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        hybrid_schedule(**{"length": 4, "ratio_2d": 0.5, **kwargs})


# ---- the loader --------------------------------------------------------------------------------------------------


def _batches(tag: str, n: int) -> list[dict]:
    return [{"image": f"{tag}{i}", "label": i} for i in range(n)]


def test_loader_follows_the_schedule_and_cycles_each_loader_in_order():
    loader2d, loader3d = _batches("2d", 2), _batches("3d", 3)
    hybrid = HybridLoader(loader2d, loader3d, ratio_2d=0.5, length=10, seed=4)
    hybrid.set_epoch(2)
    out = list(hybrid)
    assert len(hybrid) == len(out) == 10
    assert tuple(2 if b["image"].startswith("2d") else 3 for b in out) == hybrid_schedule(10, 0.5, seed=4, epoch=2)
    assert [b["image"] for b in out if b["image"].startswith("2d")] == ["2d0", "2d1"] * 2 + ["2d0"]  # cycled
    assert [b["image"] for b in out if b["image"].startswith("3d")] == ["3d0", "3d1", "3d2", "3d0", "3d1"]
    assert all(any(b is x for x in loader2d + loader3d) for b in out)  # the batches themselves, unchanged


def test_loader_resumed_at_an_epoch_draws_what_the_uninterrupted_one_drew():
    def run(hybrid, epochs):
        return {e: (hybrid.set_epoch(e), [b["image"] for b in hybrid])[1] for e in epochs}

    kwargs = {"ratio_2d": 0.3, "length": 9, "seed": 7}
    full = run(HybridLoader(_batches("2d", 4), _batches("3d", 4), **kwargs), range(1, 5))
    resumed = run(HybridLoader(_batches("2d", 4), _batches("3d", 4), **kwargs), range(3, 5))
    assert resumed == {e: full[e] for e in (3, 4)} and full[3] != full[4]


def test_loader_reads_the_epoch_on_the_first_batch_not_at_iter():
    hybrid = HybridLoader(_batches("2d", 5), _batches("3d", 5), ratio_2d=0.5, seed=0)
    iterator = iter(hybrid)  # ignite may create the iterator before EPOCH_STARTED (resumed runs)
    hybrid.set_epoch(3)
    dims = tuple(2 if b["image"].startswith("2d") else 3 for b in iterator)
    assert dims == hybrid.schedule(3) == hybrid_schedule(10, 0.5, seed=0, epoch=3)


def test_loader_default_length_and_one_dimension_only():
    assert len(HybridLoader(_batches("2d", 3), _batches("3d", 2), ratio_2d=0.4)) == 5
    only3d = HybridLoader([], _batches("3d", 2), ratio_2d=0.0)  # the 2D loader is never drawn from
    assert len(only3d) == 2 and [b["image"] for b in only3d] == ["3d0", "3d1"]
    only2d = HybridLoader(_batches("2d", 3), [], ratio_2d=1.0)
    assert [b["image"] for b in only2d] == ["2d0", "2d1", "2d2"]


def test_loader_sets_the_epoch_of_the_loaders_samplers():
    data = list(range(8))
    samplers = [DistributedSampler(data, num_replicas=1, rank=0, seed=1) for _ in range(2)]
    hybrid = HybridLoader(*(DataLoader(data, sampler=s) for s in samplers), ratio_2d=0.5)
    hybrid.set_epoch(4)
    assert [s.epoch for s in samplers] == [4, 4] and hybrid.epoch == 4


@pytest.mark.parametrize(
    "args, kwargs, error, name",
    [
        ((5, [1]), {"ratio_2d": 0.5}, TypeError, "loader2d"),
        (([1], None), {"ratio_2d": 0.5}, TypeError, "loader3d"),
        (((x for x in [1]), [1]), {"ratio_2d": 0.5}, TypeError, "length"),
        (([], [1]), {"ratio_2d": 0.5}, ValueError, "loader2d"),
        (([1], []), {"ratio_2d": 0.5}, ValueError, "loader3d"),
        (([1], [1]), {"ratio_2d": 2}, ValueError, "ratio_2d"),
        (([1], [1]), {"ratio_2d": 0.5, "length": -3}, ValueError, "length"),
        (([1], [1]), {"ratio_2d": 0.5, "seed": 1.5}, ValueError, "seed"),
    ],
)
def test_loader_arguments(args, kwargs, error, name):
    with pytest.raises(error, match=f"`{name}`"):
        HybridLoader(*args, **kwargs)


def test_loader_without_batches_and_bad_epoch():
    hybrid = HybridLoader(iter([]), [1], ratio_2d=1.0, length=2)
    with pytest.raises(ValueError, match="`loader2d` gave no batch"):
        list(hybrid)
    with pytest.raises(ValueError, match="`epoch`"):
        hybrid.set_epoch(-1)


# ---- the loss ----------------------------------------------------------------------------------------------------


def test_loss_weights_by_the_dimension_of_the_prediction():
    loss = DimensionWeightedLoss(torch.nn.MSELoss(), weight_2d=0.25, weight_3d=2.0)
    p2, t2, p3, t3 = (
        torch.randn(2, 3, 4, 4),
        torch.randn(2, 3, 4, 4),
        torch.randn(1, 3, 2, 4, 4),
        torch.randn(1, 3, 2, 4, 4),
    )
    torch.testing.assert_close(loss(p2, t2), 0.25 * ((p2 - t2) ** 2).mean())
    torch.testing.assert_close(loss(p3, t3), 2.0 * ((p3 - t3) ** 2).mean())
    assert DimensionWeightedLoss(torch.nn.MSELoss(), weight_3d=0).forward(p3, t3).item() == 0.0
    assert "weight_2d=0.25, weight_3d=2.0" in repr(loss)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"loss": "dice"}, TypeError, "loss"),
        ({"weight_2d": -1.0}, ValueError, "weight_2d"),
        ({"weight_3d": math.nan}, ValueError, "weight_3d"),
        ({"weight_3d": True}, ValueError, "weight_3d"),
    ],
)
def test_loss_arguments(kwargs, error, name):
    with pytest.raises(error, match=f"`{name}`"):
        DimensionWeightedLoss(**{"loss": torch.nn.MSELoss(), **kwargs})


def test_loss_refuses_a_prediction_without_two_or_three_spatial_dims():
    with pytest.raises(ValueError, match=r"`input` should be 4D .* got shape \(2, 3\)"):
        DimensionWeightedLoss(torch.nn.MSELoss())(torch.zeros(2, 3), torch.zeros(2, 3))


# ---- end to end: MONAI's SupervisedTrainer, checkpoint and resume ------------------------------------------------

RATIO, SEED, LENGTH = 0.4, 3, 5  # 2D loader: 3 batches, 3D loader: 2 batches -> 2 2D and 3 3D batches per epoch


def _loaders() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)

    def cases(n, shape):
        return [
            {"image": torch.randn(1, *shape, generator=g), "label": (torch.rand(1, *shape, generator=g) > 0.5).float()}
            for _ in range(n)
        ]

    return DataLoader(cases(6, (8, 8)), batch_size=2, shuffle=True), DataLoader(
        cases(4, (4, 8, 8)), batch_size=2, shuffle=True
    )


def _train(ckpt_dir, max_epochs: int, resume: bool = False) -> tuple[dict, list, SupervisedTrainer]:
    """Train a tiny dual Cross-D UNet; returns {dims: parameters changed by every such iteration}, the (epoch, dims,
    image sum, loss) of each iteration, and the trainer."""
    torch.manual_seed(0)
    network = dual_crossd_unet(1, 2, channels=(4, 8), strides=(2,), norm="batch", num_res_units=0)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    hybrid = HybridLoader(*_loaders(), ratio_2d=RATIO, seed=SEED)
    objects = {"model": network, "optimizer": optimizer}
    handlers = [hybrid, EpochSeed(0), DimensionLossLogger(hybrid)]
    handlers += [ResumeCheckpointLoader(ckpt_dir / "last.pt", objects)] if resume else []
    handlers += [LastCheckpointSaver(ckpt_dir, objects)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=hybrid,
        network=network,
        optimizer=optimizer,
        loss_function=DimensionWeightedLoss(DiceCELoss(to_onehot_y=True, softmax=True), weight_2d=0.5),
        train_handlers=handlers,
        decollate=False,
    )
    changed, steps, before = {}, [], {}

    @trainer.on(Events.ITERATION_STARTED)
    def _snapshot(engine):
        before.update({k: p.detach().clone() for k, p in network.named_parameters()})

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        dims = engine.state.output[CommonKeys.PRED].ndim - 2
        image, loss = engine.state.batch[CommonKeys.IMAGE], engine.state.output[CommonKeys.LOSS]
        steps.append((engine.state.epoch, dims, image.sum().item(), loss.item()))
        moved = {k for k, p in network.named_parameters() if not torch.equal(p, before[k])}
        changed[dims] = changed.get(dims, moved) & moved

    assert trainer.state.epoch_length == LENGTH  # len(HybridLoader)
    trainer.run()
    return changed, steps, trainer


def test_trainer_trains_both_dimensions_by_the_schedule_and_resumes_with_it(tmp_path):
    changed, steps, trainer = _train(tmp_path / "full", max_epochs=2)
    for epoch in (1, 2):
        assert tuple(s[1] for s in steps if s[0] == epoch) == hybrid_schedule(LENGTH, RATIO, SEED, epoch)
    names = {k for k, _ in trainer.network.named_parameters()}
    assert changed[2] == names and changed[3] == names  # every parameter learns from 2D and from 3D batches
    for dims in (2, 3):  # DimensionLossLogger: epoch 2's mean loss per dimension
        losses = [s[3] for s in steps if s[:2] == (2, dims)]
        assert trainer.state.metrics[f"train_loss_{dims}d"] == pytest.approx(sum(losses) / len(losses))

    _train(tmp_path / "cut", max_epochs=1)
    _, resumed, trainer2 = _train(tmp_path / "cut", max_epochs=2, resume=True)
    assert resumed == [s for s in steps if s[0] == 2]  # the same schedule, batches and losses in epoch 2
    torch.testing.assert_close(trainer2.network.state_dict(), trainer.network.state_dict())


def test_loss_logger_means_per_dimension_of_decollated_outputs():
    hybrid = HybridLoader([{"loss": 1.0}, {"loss": 3.0}], [{"loss": 10.0}], ratio_2d=2 / 3, length=3)
    engine = Engine(lambda e, batch: [{CommonKeys.LOSS: torch.tensor(batch["loss"])}] * 2)
    hybrid.attach(engine)
    DimensionLossLogger(hybrid).attach(engine)
    engine.run(hybrid, max_epochs=1)
    assert engine.state.metrics == {"train_loss_2d": 2.0, "train_loss_3d": 10.0}
    only3d = HybridLoader([], [{"loss": 4.0}], ratio_2d=0.0)
    DimensionLossLogger(only3d, prefix="loss").attach(engine)
    engine.run(only3d, max_epochs=2)
    assert engine.state.metrics["loss_3d"] == 4.0 and math.isnan(engine.state.metrics["loss_2d"])
    with pytest.raises(TypeError, match="`loader`"):
        DimensionLossLogger([{"loss": 1.0}])
