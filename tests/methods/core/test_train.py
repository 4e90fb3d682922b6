"""The training loop: schedule, exact resume, divergence stop, checkpoint format, zero-instance data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.profiles import PROFILES
from methods.core.checkpoint import CheckpointError
from methods.core.model import build_model
from methods.core.train import TrainingDivergedError, epoch_order, lr_at, train


def test_lr_schedule_warmup_and_steps():
    p = PROFILES["smoke"].replace(lr=0.01, warmup_iters=10, warmup_factor=0.001, lr_steps=(0.5, 0.75))
    assert lr_at(0, p, 100) == pytest.approx(1e-5)
    assert lr_at(5, p, 100) == pytest.approx(0.01 * (0.001 * 0.5 + 0.5))
    assert lr_at(10, p, 100) == pytest.approx(0.01)
    assert lr_at(49, p, 100) == pytest.approx(0.01)
    assert lr_at(50, p, 100) == pytest.approx(0.001)
    assert lr_at(75, p, 100) == pytest.approx(0.0001)


def test_data_order_is_a_seeded_permutation():
    a = epoch_order(0, 0, 10)
    assert sorted(a) == list(range(10))
    np.testing.assert_array_equal(a, epoch_order(0, 0, 10))
    assert not np.array_equal(a, epoch_order(0, 1, 10)) or not np.array_equal(a, epoch_order(1, 0, 10))


def _fresh(profile, seed=0):
    torch.manual_seed(seed)
    return build_model(profile)


@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_weights(small_patches, tiny_profile, tmp_path):
    full = _fresh(tiny_profile)
    r_full = train(full, small_patches, tiny_profile, seed=3, device="cpu", workdir=tmp_path / "a", progress=False)
    assert r_full.finished and r_full.iterations == 6

    # "killed" after iteration 5: the last checkpoint is the one of iteration 3
    part = _fresh(tiny_profile)
    r1 = train(part, small_patches, tiny_profile, seed=3, device="cpu", workdir=tmp_path / "b", progress=False,
               stop_after=5)
    assert not r1.finished
    ck = torch.load(tmp_path / "b" / "train_checkpoint.pt", weights_only=True)
    assert ck["iteration"] == 3 and not ck["finished"]

    # a new process: a differently initialised model, then resume
    resumed = _fresh(tiny_profile, seed=123)
    r2 = train(resumed, small_patches, tiny_profile, seed=3, device="cpu", workdir=tmp_path / "b", progress=False)
    assert r2.resumed_from == 3 and r2.finished and r2.iterations == 6
    sa, sb = full.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert [h["loss"] for h in r_full.history] == [h["loss"] for h in r2.history]
    # the weights really moved during training (the comparison above is not vacuous)
    assert not torch.equal(_fresh(tiny_profile).state_dict()["roi_heads.box_predictor.cls_score.weight"],
                           sa["roi_heads.box_predictor.cls_score.weight"])

    # calling again on a finished checkpoint trains nothing more
    again = _fresh(tiny_profile, seed=7)
    r3 = train(again, small_patches, tiny_profile, seed=3, device="cpu", workdir=tmp_path / "b", progress=False)
    assert r3.finished and r3.resumed_from == 6
    assert torch.equal(again.state_dict()["roi_heads.box_predictor.cls_score.weight"],
                       sa["roi_heads.box_predictor.cls_score.weight"])


@pytest.mark.slow
def test_checkpoint_from_another_configuration_is_refused(small_patches, tiny_profile, tmp_path):
    p = tiny_profile.replace(iterations=1, checkpoint_every=1)
    train(_fresh(p), small_patches, p, seed=0, device="cpu", workdir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="different settings"):
        train(_fresh(p), small_patches, p, seed=1, device="cpu", workdir=tmp_path, progress=False)


class _NaNAt:
    def __init__(self, iteration):
        self.iteration = iteration

    def extra_losses(self, ctx):
        bad = float("nan") if ctx.iteration == self.iteration else 0.0
        return {"loss_extra": ctx.losses["loss_mask"] * 0 + bad}


@pytest.mark.slow
def test_nan_loss_stops_with_error_and_keeps_last_good_checkpoint(small_patches, tiny_profile, tmp_path):
    p = tiny_profile.replace(iterations=10, checkpoint_every=2)
    model = _fresh(p)
    with pytest.raises(TrainingDivergedError) as info:
        train(model, small_patches, p, seed=0, device="cpu", workdir=tmp_path, progress=False, hook=_NaNAt(3))
    err = info.value
    assert err.iteration == 3 and math.isnan(err.losses["loss_extra"])
    assert "iteration 3" in str(err) and "loss_extra=nan" in str(err)
    assert err.checkpoint == tmp_path / "train_checkpoint.pt"
    ck = torch.load(err.checkpoint, weights_only=True)
    assert ck["iteration"] == 2 and len(ck["history"]) == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    # the checkpoint is a usable model
    fresh = _fresh(p, seed=5)
    fresh.load_state_dict(ck["model"])


@pytest.mark.slow
def test_checkpoint_holds_everything_needed_and_loads_weights_only(small_patches, tiny_profile, tmp_path):
    p = tiny_profile.replace(iterations=2, checkpoint_every=1)
    train(_fresh(p), small_patches, p, seed=0, device="cpu", workdir=tmp_path, progress=False, stage="teacher")
    ck = torch.load(tmp_path / "teacher_checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "rng", "iteration", "history", "fingerprint"} <= set(ck)
    assert ck["finished"] and ck["iteration"] == 2
    assert {"torch", "numpy", "python"} <= set(ck["rng"])
    assert ck["optimizer"]["state"]  # momentum buffers are saved
    assert not list(tmp_path.glob(".*tmp*"))  # no leftover temporary files


@pytest.mark.slow
def test_all_empty_patches_train(small_patches, tiny_profile, tmp_path):
    empty = [(im, np.zeros_like(lab)) for im, lab in small_patches]
    p = tiny_profile.replace(iterations=2)
    r = train(_fresh(p), empty + small_patches[:1], p, seed=0, device="cpu", workdir=tmp_path, progress=False)
    assert r.finished and all(math.isfinite(h["loss"]) for h in r.history)


def test_bad_samples_are_reported(tiny_profile, tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        train(_fresh(tiny_profile), [(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.int32))],
              tiny_profile, seed=0, device="cpu", workdir=tmp_path, progress=False)


class _NaNGradAt:
    """Finite extra loss (0) whose gradient is NaN: sqrt'(0) * 0."""

    def __init__(self, iteration):
        self.iteration = iteration

    def extra_losses(self, ctx):
        x = ctx.losses["loss_mask"] * 0
        return {"loss_extra": x.sqrt() if ctx.iteration == self.iteration else x}


def test_divergence_message_names_the_gradient_norm_when_losses_were_finite():
    err = TrainingDivergedError(7, {"loss_box": 1e27, "loss_mask": 0.5, "grad_norm": float("nan")}, None)
    assert err.what == "gradient norm"
    assert "non-finite gradient norm although every loss was finite" in str(err)
    assert "non-finite loss" not in str(err)
    loss_err = TrainingDivergedError(7, {"loss_box": float("inf"), "loss_mask": 0.5}, None)
    assert loss_err.what == "loss" and "non-finite loss (loss_box)" in str(loss_err)


@pytest.mark.slow
def test_nan_gradient_with_finite_losses_is_reported_as_gradient(small_patches, tiny_profile, tmp_path):
    p = tiny_profile.replace(iterations=4, checkpoint_every=2, grad_clip=10.0)
    with pytest.raises(TrainingDivergedError) as info:
        train(_fresh(p), small_patches, p, seed=0, device="cpu", workdir=tmp_path, progress=False,
              hook=_NaNGradAt(1))
    assert info.value.iteration == 1 and info.value.what == "gradient norm"
    assert "gradient norm" in str(info.value) and "non-finite loss" not in str(info.value)


def test_profile_optimizer_is_sgd_by_default_or_adamw(tiny_profile):
    from methods.core.train import make_optimizer

    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd = make_optimizer(params, tiny_profile)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == tiny_profile.momentum
    adamw = make_optimizer(params, tiny_profile.replace(optimizer="adamw", lr="0.001", momentum="0.8"))
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.defaults["betas"] == (0.8, 0.999) and adamw.defaults["lr"] == 0.001
    assert adamw.defaults["weight_decay"] == tiny_profile.weight_decay


def test_adamw_run_resumes_to_identical_weights(small_patches, tiny_profile, tmp_path):
    # the fused AdamW state (step counts, both moments) must survive a checkpoint like SGD's momentum
    p = tiny_profile.replace(optimizer="adamw", lr="0.001", weight_decay="0.05")
    full = _fresh(p)
    train(full, small_patches, p, seed=3, device="cpu", workdir=tmp_path / "a", progress=False)
    train(_fresh(p), small_patches, p, seed=3, device="cpu", workdir=tmp_path / "b", progress=False, stop_after=5)
    resumed = _fresh(p, seed=123)
    r = train(resumed, small_patches, p, seed=3, device="cpu", workdir=tmp_path / "b", progress=False)
    assert r.resumed_from == 3 and r.finished
    sa, sb = full.state_dict(), resumed.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert not torch.equal(_fresh(p).state_dict()["roi_heads.box_predictor.cls_score.weight"],
                           sa["roi_heads.box_predictor.cls_score.weight"])
