"""PG-FANet (Mask R-CNN adaptation): uncertainty-weighted target and weights on hand values, the ramp, the
two-stage mask branch, the consistency on a real (tiny) Mask R-CNN; check-method and a CLI run (slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmark.profiles import PROFILES
from methods.core.heads import MaskRoIs
from methods.pg_fanet.method import (
    PGFANetHook,
    PGFANetMethod,
    TwoStageMaskBranch,
    binary_entropy,
    discrepancy_attention,
    masked_dice,
    pgfanet_consistency,
    uncertainty_target,
)

TARGET = "methods.pg_fanet.method:PGFANetMethod"
LN2 = math.log(2.0)


def _h(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p)) / LN2


def test_binary_entropy_by_hand():
    h = binary_entropy(torch.tensor([0.5, 0.25, 0.9, 0.0, 1.0]))
    assert h[0].item() == pytest.approx(1.0)
    assert h[1].item() == pytest.approx(0.811278, abs=1e-6)
    assert h[2].item() == pytest.approx(_h(0.9), abs=1e-6)
    assert h[3].item() == pytest.approx(0.0, abs=1e-4) and h[4].item() == pytest.approx(0.0, abs=1e-4)


def test_uncertainty_target_by_hand():
    p_s = torch.tensor([0.9, 0.1, 0.9])
    p_t = torch.tensor([0.5, 1.0, 0.25])
    t = uncertainty_target(p_s, p_t)
    # uncertain teacher -> the student's own value; certain teacher -> the teacher; else the mix
    assert t[0].item() == pytest.approx(0.9)
    assert t[1].item() == pytest.approx(1.0, abs=1e-4)
    assert t[2].item() == pytest.approx((1 - 0.811278) * 0.25 + 0.811278 * 0.9, abs=1e-5)


def test_discrepancy_attention_by_hand():
    p_s = torch.tensor([[[0.0, 0.5], [1 / math.e, 1.0]]])
    a = discrepancy_attention(p_s, torch.zeros_like(p_s))
    # -d ln d = 0, 0.5 ln 2, 1/e (the maximum), 0 -> min-max normalised per RoI
    expected = torch.tensor([[[0.0, 0.5 * LN2 * math.e], [1.0, 0.0]]])
    assert torch.allclose(a, expected, atol=1e-5)
    same = torch.full((2, 3, 3), 0.7)
    assert torch.equal(discrepancy_attention(same, same), torch.zeros(2, 3, 3))  # constant map -> 0
    # per-RoI normalisation: a second RoI with 10x smaller discrepancies gets the same pattern
    two = discrepancy_attention(torch.stack([p_s[0], p_s[0] * 0.1]), torch.zeros(2, 2, 2))
    assert two.amax(dim=(1, 2)).tolist() == pytest.approx([1.0, 1.0])


def test_consistency_values_and_gradients_by_hand():
    p_t = torch.tensor([[[0.5, 0.9]]])
    p_s1 = torch.tensor([[[0.6, 0.3]]])
    h9 = _h(0.9)
    t2 = (1 - h9) * 0.9 + h9 * 0.3
    d = np.array([0.3, 0.6])
    e = -d * np.log(d)
    a = (e - e.min()) / (e.max() - e.min())  # [1, 0]
    for detach, grad2 in ((True, 0.3 - t2), (False, (1 - h9) ** 2 * (0.3 - 0.9))):
        p_s = torch.tensor([[[0.8, 0.3]]], requires_grad=True)
        inter, intra = pgfanet_consistency(p_s, p_t, p_s1, detach_target=detach)
        assert inter.item() == pytest.approx(((1 + a[0]) * 0.0 ** 2 + (1 + a[1]) * (0.3 - t2) ** 2) / 2, rel=1e-5)
        assert intra.item() == pytest.approx((0.2 ** 2 + 0.0) / 2, rel=1e-5)
        inter.backward()
        # d/dp_s of mean[(1 + A)(p_s - t)^2]: pixel 1 has t = p_s (teacher at 0.5), pixel 2 as derived
        assert p_s.grad[0, 0, 0].item() == pytest.approx(0.0, abs=1e-6)
        assert p_s.grad[0, 0, 1].item() == pytest.approx(grad2, rel=1e-4)
    empty = torch.zeros(0, 28, 28, requires_grad=True)
    i0, j0 = pgfanet_consistency(empty, torch.zeros(0, 28, 28), torch.zeros(0, 28, 28))
    assert i0.item() == 0.0 and j0.item() == 0.0


def test_ramp_is_sigmoid_over_the_whole_schedule():
    r = PGFANetMethod().ramp(100)
    assert (r.start, r.rampup, r.rampdown) == (0, 100, 0)
    assert r.weight(0) == pytest.approx(0.1 * math.exp(-5))
    assert r.weight(50) == pytest.approx(0.1 * math.exp(-1.25))
    assert r.weight(99) == pytest.approx(0.1 * math.exp(-5 * 0.01 ** 2))
    assert PGFANetMethod(rampup_len=0.5, consistency_weight=1.0).ramp(100).weight(60) == 1.0


def test_masked_dice_by_hand():
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    t = torch.ones(1, 2, 2)
    # 1 - (2 * 2 + 1) / (2 + 4 + 1)
    assert masked_dice(logits, t, torch.tensor([True])).item() == pytest.approx(2 / 7)
    assert masked_dice(logits, t, torch.tensor([False])).item() == 0.0


def _rois(n: int, training: bool = False) -> MaskRoIs:
    torch.manual_seed(0)
    feats = torch.randn(n, 8, 14, 14)
    if not training:
        return MaskRoIs(features={}, proposals=[torch.zeros(n, 4)], image_shapes=[(64, 64)], roi_features=feats,
                        training=False)
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 16:40, 12:36] = 1
    props = torch.tensor([[8.0, 8.0, 40.0, 44.0]]).repeat(n, 1)
    return MaskRoIs(features={}, proposals=[props], image_shapes=[(64, 64)], roi_features=feats, training=True,
                    matched_idxs=[torch.zeros(n, dtype=torch.int64)],
                    targets=[{"masks": masks, "mask_valid": torch.tensor([True])}])


def test_two_stage_branch_shapes_guidance_and_losses():
    torch.manual_seed(0)
    branch = TwoStageMaskBranch(8, 8, 2, norm="gn", stage1_weight=0.5, dice_weight=1.0)
    out = branch(_rois(3))
    assert out["mask_logits"].shape == (3, 1, 28, 28) and out["stage1_logits"].shape == (3, 1, 14, 14)
    # the binarised stage-1 prediction feeds stage 2: forcing it to all-1 vs all-0 changes the final mask
    with torch.no_grad():
        branch.stage1[-1].bias.fill_(100.0)
        on = branch(_rois(3))["mask_logits"]
        branch.stage1[-1].bias.fill_(-100.0)
        off = branch(_rois(3))["mask_logits"]
        branch.stage1[-1].bias.zero_()
    assert not torch.allclose(on, off)
    rois = _rois(3, training=True)
    losses = branch.loss(branch(rois), rois)
    assert set(losses) == {"loss_mask", "loss_mask_stage1"}
    assert all(torch.isfinite(v) and v.item() > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert branch.stage1[0].weight.grad.abs().sum() > 0 and branch.guided[0].weight.grad.abs().sum() > 0
    assert branch.config()["stage1_weight"] == 0.5 and branch.config()["type"] == "TwoStageMaskBranch"
    assert branch(_rois(0))["mask_logits"].shape == (0, 1, 28, 28)


TINY = PROFILES["smoke"].replace(
    input_size=128, iterations=8, rpn_post_nms_top_n_train=64, rpn_post_nms_top_n_test=64,
    box_batch_size_per_image=32, box_head_dim=64, mask_head_channels=32, detections_per_img=50,
)


def test_consistency_on_teacher_rois_reaches_the_student():
    from methods.core.model import build_model
    from methods.core.targets import sample_to_target
    from methods.core.targets import TrainSample
    from methods.core.train import StepContext
    from methods.core.meanteacher import clone_teacher

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
    label = np.zeros((128, 128), np.int32)
    label[20:40, 30:50] = 1
    method = PGFANetMethod(teacher_score_thresh=0.0)
    torch.manual_seed(0)
    model = build_model(TINY, mask_branch=method.make_branch(TINY))
    assert isinstance(model.roi_heads.mask_branch, TwoStageMaskBranch)
    hook = PGFANetHook(clone_teacher(model), images, ramp=method.ramp(8), batch_size=1, seed=0,
                       options=method.options)
    img, tgt = sample_to_target(TrainSample(images[0], label))
    losses = model([img], [tgt])
    assert "loss_mask_stage1" in losses
    out = hook.extra_losses(StepContext(model, [img], [tgt], [], losses, 4, "cpu", 0))
    assert hook.stats["teacher_dets"] > 0
    assert out["loss_mt_inter"].item() > 0 and out["loss_mt_intra"].item() > 0
    (out["loss_mt_inter"] + out["loss_mt_intra"]).backward()
    mb = model.roi_heads.mask_branch
    assert mb.stage1[0].weight.grad.abs().sum() > 0 and mb.logits.weight.grad.abs().sum() > 0
    assert model.backbone.body.layer1[0].conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in hook.teacher.parameters())
    # no confident teacher detection -> no consistency, and no gradient path needed
    strict = PGFANetHook(clone_teacher(model), images, ramp=method.ramp(8), batch_size=1, seed=0,
                         options={**method.options, "teacher_score_thresh": 1.01})
    zero = strict.extra_losses(StepContext(model, [img], [tgt], [], losses, 4, "cpu", 0))
    assert zero["loss_mt_inter"].item() == 0.0 and strict.stats["teacher_dets"] == 0


def test_options_and_attributes():
    m = PGFANetMethod(consistency_weight="0.2")
    assert m.options["consistency_weight"] == 0.2
    assert PGFANetMethod.approximation.startswith("Mask R-CNN adaptation")
    assert PGFANetMethod.deep and PGFANetMethod.uses_unlabeled and PGFANetMethod.teacher is None
    with pytest.raises(ValueError, match="no option"):
        PGFANetMethod(alpha=0.3)
    with pytest.raises(ValueError, match="unknown EMA schedule"):
        PGFANetHook(torch.nn.Linear(1, 1), [np.zeros((8, 8, 3), np.uint8)], ramp=m.ramp(4), batch_size=1, seed=0,
                    options={**m.options, "ema_schedule": "cosine"})


@pytest.mark.slow
def test_check_method_passes():
    from benchmark.catalog import METHODS
    from benchmark.check import check_method

    METHODS.register("pg-fanet", TARGET)
    report = check_method(PGFANetMethod)
    assert report.passed, report.format()


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, monkeypatch):
    from benchmark import cli
    from benchmark.check import tiny_profile_args
    from benchmark.catalog import METHODS

    METHODS.register("pg-fanet", TARGET)
    monkeypatch.setenv("NUCLEI_SSL_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    rc = cli.main(["run", "--methods", "pg-fanet", "--datasets", "synthetic", "--ratios", "1/8",
                   *tiny_profile_args(iterations=20), "--out", str(out), "--quiet"])
    assert rc == 0
    (done_path,) = list(out.rglob("pg-fanet/*/done.json"))
    done = json.loads(done_path.read_text())
    aji = done["summary"]["patch"]["mean"]["aji"]
    print(f"smoke synthetic 1/8, 20 iterations: pg-fanet patch AJI {aji:.4f}")
    assert np.isfinite(aji) and 0.0 <= aji <= 1.0
    info = done["fit_info"]
    assert info["iterations"] == 20 and info["ramp"]["rampup"] == 20
    assert {"loss_mask_stage1", "loss_mt_inter", "loss_mt_intra"} <= set(info["final_losses"])
    cell = json.loads((done_path.parent / "cell.json").read_text())
    assert cell["approximation"].startswith("Mask R-CNN adaptation")
    assert cell["method_config"]["ema_schedule"] == "warmup10"
