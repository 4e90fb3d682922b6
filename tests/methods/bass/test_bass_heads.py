"""The BASS student's mask branch inside the real Mask R-CNN: one training step, every branch learns."""

from __future__ import annotations

import pytest
import torch

from benchmark.data.synthetic import SyntheticDataset
from benchmark.profiles import PROFILES
from methods.core.bands import lrd_weight_map
from methods.core.lrd import lrd_loss, weighted_mask_bce
from methods.bass.method import BassCodeMethod, BassLRDMethod, BassMethod, BassNMHMethod
from methods.core.model import build_model
from methods.core.targets import TrainSample, sample_to_target

TINY = PROFILES["smoke"].replace(
    input_size=128, rpn_post_nms_top_n_train=64, rpn_post_nms_top_n_test=64, box_batch_size_per_image=32,
    box_head_dim=64, mask_head_channels=32, detections_per_img=30,
)


@pytest.fixture(scope="module")
def batch():
    ds = SyntheticDataset(n_images=1, size=256, seed=1)
    r = ds.load(ds.image_names()[0])
    samples = [TrainSample(r.image[:128, :128].copy(), r.label[:128, :128].copy()),
               TrainSample(r.image[128:, 128:].copy(), r.label[128:, 128:].copy())]
    imgs, tgts = zip(*[sample_to_target(s) for s in samples])
    return list(imgs), list(tgts)


def _student(cls, shared: bool = True, **opts):
    torch.manual_seed(0)
    method = cls(**opts)
    model = build_model(TINY, mask_branch=method.build_branch(TINY, "gn"))
    return method.prepare_model(model) if shared else model


def _grad_ok(module: torch.nn.Module) -> bool:
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    return bool(grads) and all(g is not None and torch.isfinite(g).all() for g in grads) and any(
        float(g.abs().sum()) > 0 for g in grads
    )


def test_one_step_full_student_finite_gradients_in_every_branch(batch):
    model = _student(BassMethod).train()
    torch.manual_seed(1)
    losses = model(*batch)
    assert {"loss_mask_nmh", "loss_mask_lrd", "loss_mask_fused", "loss_crc", "loss_classifier",
            "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} == set(losses)
    assert all(torch.isfinite(v) for v in losses.values()) and float(losses["loss_crc"].detach()) > 0
    sum(losses.values()).backward()
    branch = model.roi_heads.mask_branch
    for name in ("head", "deconv", "logits", "lrd_head", "crc_encoder", "crc_projector", "fusion"):
        assert _grad_ok(getattr(branch, name)), f"no finite gradient in {name}"
    stats = branch.last_crc_stats
    assert stats["rois"] > 0 and stats["groups"] == stats["rois"] // 2
    assert set(k for k in stats if k.startswith("term_")) == {"term_bb_f", "term_bo_i", "term_ff_b", "term_fi_o"}
    # the CRC gradient reaches the FPN (it shapes the shared features)
    assert _grad_ok(model.backbone.fpn)
    # inference: one fused 28x28 mask per detection, no embeddings needed
    model.eval()
    with torch.no_grad():
        out = model(batch[0][:1])
    assert out[0]["masks"].shape[1:] == (1, 128, 128)


def test_code_variant_losses_and_fusion_inputs(batch):
    model = _student(BassCodeMethod).train()
    torch.manual_seed(1)
    losses = model(*batch)
    assert {"loss_mask", "loss_mask_lrd", "loss_crc"} <= set(losses) and "loss_mask_nmh" not in losses
    branch = model.roi_heads.mask_branch
    assert branch.fusion.in_channels == 3 and branch.last_crc_stats["groups"] == 1
    assert {k for k in branch.last_crc_stats if k.startswith("term_")} == {"term_fi_o", "term_bo_i"}
    sum(losses.values()).backward()
    for name in ("crc_encoder", "crc_projector", "crc_mask", "fusion", "lrd_head", "deconv"):
        assert _grad_ok(getattr(branch, name)), name


@pytest.mark.parametrize("cls,keys", [
    (BassNMHMethod, {"loss_mask_nmh"}),
    (BassLRDMethod, {"loss_mask_lrd", "loss_mask_fused"}),
])
def test_ablation_students(batch, cls, keys):
    model = _student(cls).train()
    losses = model(*batch)
    assert keys == {k for k in losses if k.startswith("loss_mask")} and "loss_crc" not in losses
    sum(losses.values()).backward()
    assert _grad_ok(model.roi_heads.mask_branch)
    assert model.roi_heads.mask_branch.fusion is None


def test_crc_max_rois_caps_the_contrastive_rois(batch):
    model = _student(BassMethod, crc_max_rois=4).train()
    torch.manual_seed(1)
    losses = model(*batch)
    assert model.roi_heads.mask_branch.last_crc_stats["rois"] == 4
    sum(losses.values()).backward()
    assert _grad_ok(model.roi_heads.mask_branch.crc_encoder)


def test_shared_roi_align_changes_nothing_but_the_cost(batch):
    from methods.core.two_res_branch import SharedMaskRoIAlign

    shared, own = _student(BassMethod, shared=True).train(), _student(BassMethod, shared=False).train()
    assert isinstance(shared.roi_heads.mask_roi_pool, SharedMaskRoIAlign)
    assert not isinstance(own.roi_heads.mask_roi_pool, SharedMaskRoIAlign)
    torch.manual_seed(7)
    a = shared(*batch)
    torch.manual_seed(7)
    b = own(*batch)
    assert shared.roi_heads.mask_roi_pool.last is None  # consumed by the CRC branch
    for k in a:
        assert float(a[k].detach()) == pytest.approx(float(b[k].detach()), rel=1e-4, abs=1e-5), k


def test_teacher_weights_fit_the_student_nmh():
    torch.manual_seed(0)
    teacher = build_model(TINY)
    student = _student(BassMethod)
    own = student.state_dict()
    shared = [k for k, v in teacher.state_dict().items() if k in own and own[k].shape == v.shape]
    assert any(k.startswith("roi_heads.mask_branch.head.") for k in shared)
    assert "roi_heads.mask_branch.logits.weight" in shared and "roi_heads.mask_branch.deconv.weight" in shared
    assert len(shared) == len(teacher.state_dict())  # every teacher tensor has a home in the student


def test_lrd_weight_map_low_on_boundary_high_elsewhere():
    m = torch.zeros(1, 14, 14, dtype=torch.bool)
    m[0, 3:9, 4:11] = True  # 6 x 7 rectangle
    w = lrd_weight_map(m, boundary_weight=0.25, width=1)
    inner = m[0].clone()
    inner[4:8, 5:10] = False  # the ring just inside the contour
    outer = torch.zeros(14, 14, dtype=torch.bool)
    outer[2, 4:11] = outer[9, 4:11] = True
    outer[3:9, 3] = outer[3:9, 11] = True  # the row just outside (4-adjacent)
    boundary = inner | outer
    assert torch.all(w[0][boundary] == 0.25) and torch.all(w[0][~boundary] == 1.0)
    assert int(boundary.sum()) == (42 - 20) + (7 + 7 + 6 + 6)
    assert torch.all(lrd_weight_map(m, boundary_weight=0.5, width=0) == 1.0)


def test_lrd_loss_is_the_weighted_mean():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 14, 14)
    t = torch.zeros(2, 14, 14)
    t[:, 4:10, 4:10] = 1
    valid = torch.tensor([True, False])
    w = lrd_weight_map(t > 0.5, boundary_weight=0.5, width=1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[0, 0], t[0], reduction="none")
    expected = float((bce * w[0]).mean())
    assert float(lrd_loss(logits, t, valid, boundary_weight=0.5, width=1)) == pytest.approx(expected, rel=1e-6)
    plain = float(bce.mean())
    assert float(lrd_loss(logits, t, valid, boundary_weight=1.0)) == pytest.approx(plain, rel=1e-6)
    assert float(weighted_mask_bce(logits, t, torch.tensor([False, False]))) == 0.0
