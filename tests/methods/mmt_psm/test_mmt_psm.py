"""MMT-PSM: PSM mining and loss, MGD masks and distance on hand-made inputs; the consistency terms on a
real (tiny) Mask R-CNN; check-method and an end-to-end CLI run (slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmark.profiles import PROFILES
from methods.mmt_psm.method import (
    FPNAdaptor,
    MMTPSMHook,
    MMTPSMMethod,
    _union_mask,
    foreground_masks,
    masked_feature_distance,
    mgd_loss,
    mine_rois,
    psm_loss,
    sharpen,
)

TARGET = "methods.mmt_psm.method:MMTPSMMethod"


def _register():
    from benchmark.catalog import METHODS

    METHODS.register("mmt-psm", TARGET)
    if "maskrcnn" not in METHODS:
        METHODS.register("maskrcnn", "methods.maskrcnn.method:MaskRCNNMethod")


# ---------------------------------------------------------------------------------- PSM
def test_sharpen_by_hand():
    out = sharpen(torch.tensor([[0.6, 0.4], [0.5, 0.5]]), 0.5)
    # 0.6^2 / (0.6^2 + 0.4^2) = 0.36 / 0.52
    assert torch.allclose(out, torch.tensor([[0.36 / 0.52, 0.16 / 0.52], [0.5, 0.5]]))
    assert torch.allclose(sharpen(torch.tensor([[0.7, 0.3]]), 1.0), torch.tensor([[0.7, 0.3]]))


def test_mine_rois_keeps_positives_and_highest_variance_negatives():
    labels = torch.tensor([1, 0, 0, 1, 0, 1, 0, 0, 1, 0, -1])
    var = torch.tensor([0.0, 0.1, 0.5, 0.0, 0.3, 0.0, 0.5, 0.05, 0.0, 0.9, 5.0])
    idx, w = mine_rois(labels, var, neg_weight=1.5)
    # 4 positives -> floor(4/2) = 2 negatives: 9 (0.9) then the tie 2/6 at 0.5 -> lower index 2;
    # the ignored RoI 10 (label -1) is never chosen whatever its variance
    assert idx.tolist() == [0, 3, 5, 8, 9, 2]
    assert w.tolist() == [1.0, 1.0, 1.0, 1.0, 1.5, 1.5]
    idx, w = mine_rois(torch.tensor([0, 1, 0]), torch.tensor([0.9, 0.0, 0.8]))
    assert idx.tolist() == [1] and w.tolist() == [1.0]  # 1 positive -> no negative
    idx, _ = mine_rois(torch.tensor([1, 1, 1, 1, 0]), torch.zeros(5))
    assert idx.tolist() == [0, 1, 2, 3, 4]  # fewer negatives than #pos/2: all of them


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_psm_loss_by_hand():
    # 4 RoIs: two positives, RoI 2 a negative the two views disagree on, RoI 3 a negative they agree on
    view_a = np.array([[-1.0, 2.0], [0.0, 1.0], [2.0, -2.0], [1.0, 0.0]])
    view_b = np.array([[-1.0, 2.0], [0.0, 1.0], [-2.0, 2.0], [1.0, 0.0]])
    student = np.array([[0.5, 0.2], [0.1, 0.3], [1.0, -1.0], [0.0, 2.0]])
    labels = torch.tensor([1, 1, 0, 0])
    loss = psm_loss(torch.tensor(student, requires_grad=True), [torch.tensor(view_a), torch.tensor(view_b)],
                    labels, temperature=0.5, neg_weight=1.5)
    # expected: RoIs 0, 1 (w=1) and the high-variance negative 2 (w=1.5)
    p = _softmax((view_a + view_b) / 2) ** 2
    target = p / p.sum(-1, keepdims=True)
    logp = np.log(_softmax(student))
    keep, w = [0, 1, 2], np.array([1.0, 1.0, 1.5])
    expected = (-(target[keep] * logp[keep]) * w[:, None]).mean(0).sum() / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # RoI 3 (low variance) is not mined: changing its student logits leaves the loss unchanged
    s2 = student.copy()
    s2[3] = [5.0, -5.0]
    same = psm_loss(torch.tensor(s2), [torch.tensor(view_a), torch.tensor(view_b)], labels)
    assert same.item() == pytest.approx(loss.item(), rel=1e-6)
    s2[2] = [-5.0, 5.0]
    assert psm_loss(torch.tensor(s2), [torch.tensor(view_a), torch.tensor(view_b)], labels).item() != pytest.approx(
        loss.item(), rel=1e-3)


def test_psm_loss_without_positives_is_a_differentiable_zero():
    s = torch.randn(3, 2, requires_grad=True)
    loss = psm_loss(s, [torch.randn(3, 2), torch.randn(3, 2)], torch.tensor([0, 0, 0]))
    assert loss.item() == 0.0
    loss.backward()
    assert s.grad is not None and torch.all(s.grad == 0)


# ---------------------------------------------------------------------------------- MGD
def test_foreground_masks_pool_and_threshold():
    union = torch.zeros(1, 1, 8, 8)
    union[..., :3, :3] = 1
    m4, m2 = foreground_masks(union, [(4, 4), (2, 2)])
    expected4 = torch.zeros(4, 4)
    expected4[0, 0] = 1  # cell (0,1) is half covered (0.5, not > 0.5), cell (1,1) a quarter
    assert torch.equal(m4[0, 0], expected4)
    assert torch.equal(m2[0, 0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))  # 9/16 > 0.5


def test_masked_feature_distance_by_hand():
    s = torch.zeros(1, 2, 2, 2)
    t = torch.ones(1, 2, 2, 2)
    t[:, 1] = 2.0
    m = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # (1 + 4) over 1 masked pixel x 2 channels
    assert masked_feature_distance(s, t, m).item() == pytest.approx(2.5)
    assert masked_feature_distance(s, t, torch.zeros_like(m)).item() == 0.0
    # mean over teacher views x levels
    loss = mgd_loss([s], [[t], [torch.zeros_like(t)]], [m])
    assert loss.item() == pytest.approx(1.25)


def test_union_mask_of_teacher_detections():
    masks = torch.ones(2, 1, 28, 28)
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [10.0, 6.0, 16.0, 12.0]])
    u = _union_mask({"boxes": boxes, "masks": masks}, (20, 24))
    assert u.shape == (1, 20, 24)
    assert u[0, 2, 2] == 1 and u[0, 9, 13] == 1 and u[0, 18, 2] == 0 and u[0, 2, 20] == 0
    # the union of the two pasted masks (torchvision's pasting, as at inference)
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    each = paste_masks_in_image(masks, boxes, (20, 24), padding=1)[:, 0] >= 0.5
    assert torch.equal(u[0].bool(), each[0] | each[1]) and each[0].sum() > 0 and each[1].sum() > 0
    empty = _union_mask({"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 1, 28, 28)}, (20, 24))
    assert empty.shape == (1, 20, 24) and empty.sum() == 0


# ---------------------------------------------------------------------------------- the hook on a real model
TINY = PROFILES["smoke"].replace(
    input_size=128, iterations=8, rpn_post_nms_top_n_train=64, rpn_post_nms_top_n_test=64,
    box_batch_size_per_image=32, box_head_dim=64, mask_head_channels=32, detections_per_img=50,
)


def test_consistency_terms_reach_student_backbone_and_adaptor():
    from methods.core.model import build_model
    from methods.core.targets import sample_to_target
    from methods.core.targets import TrainSample
    from methods.core.train import StepContext
    from methods.core.meanteacher import clone_teacher

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
    label = np.zeros((128, 128), np.int32)
    label[20:40, 30:50] = 1
    label[70:90, 60:85] = 2
    torch.manual_seed(0)
    student = build_model(TINY)
    student.mmt_adaptor = FPNAdaptor(student.backbone.out_channels, 16)
    method = MMTPSMMethod(teacher_score_thresh=0.0, rampup_start=0.25, erase_prob=0.0)
    hook = MMTPSMHook(clone_teacher(student), images, ramp=method.ramp(8), batch_size=1, seed=0,
                      options=method.options)
    img, tgt = sample_to_target(TrainSample(images[0], label))
    losses = student([img], [tgt])

    early = hook.extra_losses(StepContext(student, [img], [tgt], [], losses, 1, "cpu", 0))
    assert early["loss_mt_psm"].item() == 0.0 and early["loss_mt_mgd"].item() == 0.0  # before rampup_start

    out = hook.extra_losses(StepContext(student, [img], [tgt], [], losses, 5, "cpu", 0))
    assert hook.stats["pos_rois"] > 0 and hook.stats["teacher_dets"] > 0 and hook.stats["fg_fraction"] > 0
    assert out["loss_mt_psm"].item() > 0 and out["loss_mt_mgd"].item() > 0
    (out["loss_mt_psm"] + out["loss_mt_mgd"]).backward()
    assert student.mmt_adaptor.convs[0].weight.grad.abs().sum() > 0
    assert student.backbone.body.layer1[0].conv1.weight.grad.abs().sum() > 0
    assert student.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in hook.teacher.parameters())
    # views are a pure function of (seed, iteration)
    a_t, a_s = hook.make_views(5)
    b_t, b_s = hook.make_views(5)
    assert len(a_t) == 2 and all(np.array_equal(x, y) for x, y in zip(a_s, b_s))


def test_options_and_attributes():
    m = MMTPSMMethod(n_color_aug="3", predict_with="student")
    assert m.options["n_color_aug"] == 3 and m.config()["predict_with"] == "student"
    assert MMTPSMMethod.teacher == "maskrcnn" and MMTPSMMethod.deep and MMTPSMMethod.uses_unlabeled
    assert MMTPSMMethod.approximation and MMTPSMMethod.version == "1"
    with pytest.raises(ValueError, match="no option"):
        MMTPSMMethod(lambda_=1.0)
    with pytest.raises(ValueError, match="predict_with"):
        MMTPSMMethod(predict_with="both")
    r = MMTPSMMethod().ramp(7000)
    assert (r.start, r.rampup, r.rampdown, r.lam) == (1000, 250, 250, 5.0)
    assert r.weight(1125) == pytest.approx(5 * math.exp(-1.25))


# ---------------------------------------------------------------------------------- slow: conformance + e2e
@pytest.mark.slow
def test_check_method_passes():
    from benchmark.check import check_method

    _register()
    report = check_method(MMTPSMMethod)
    assert report.passed, report.format()


@pytest.mark.slow
def test_cli_end_to_end_with_teacher_cell(tmp_path, monkeypatch):
    from benchmark import cli
    from benchmark.check import tiny_profile_args

    _register()
    monkeypatch.setenv("NUCLEI_SSL_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    # one colour view (2 teacher views) and one unlabeled patch per iteration keep the test affordable on
    # 2 CPU cores; check-method above runs the default options (K=2, batch 2)
    rc = cli.main(["run", "--methods", "mmt-psm,maskrcnn", "--datasets", "synthetic", "--ratios", "1/8",
                   *tiny_profile_args(iterations=20), "--set", "mmt-psm.n_color_aug=1",
                   "--set", "mmt-psm.unlabeled_batch_size=1", "--out", str(out), "--quiet"])
    assert rc == 0
    done = {p.parent.parent.name: json.loads(p.read_text()) for p in out.rglob("done.json")}
    assert set(done) == {"mmt-psm", "maskrcnn"}  # the teacher cell was trained once and reused
    aji = {k: v["summary"]["patch"]["mean"]["aji"] for k, v in done.items()}
    print(f"smoke synthetic 1/8, 20 iterations: patch AJI {aji}")
    assert all(np.isfinite(a) and 0.0 <= a <= 1.0 for a in aji.values())
    info = done["mmt-psm"]["fit_info"]
    teacher_dir = next(p.parent for p in out.rglob("maskrcnn/*/work/model.pt"))
    assert info["teacher_workdir"] == str(teacher_dir)
    assert info["iterations"] == 20 and info["ramp"]["start"] == 3
    assert "loss_mt_psm" in info["final_losses"] and "loss_mt_mgd" in info["final_losses"]
    assert info["final_losses"]["loss_mt_mgd"] > 0 and info["last_unlabeled_stats"]["teacher_dets"] > 0
