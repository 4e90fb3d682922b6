"""build_model: settings from the profile, zero-instance batches, the mask-branch extension point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet18

from benchmark.profiles import PROFILES
from methods.core.heads import MaskRoIs, NucleiRoIHeads, StandardMaskBranch, masked_bce
from methods.core.model import anchor_sizes, build_model, model_config
from methods.core.targets import TrainSample, sample_to_target


def _batch(patches, empty=()):
    images, targets = [], []
    for k, (im, lab) in enumerate(patches):
        lab = np.zeros_like(lab) if k in empty else lab
        img, tgt = sample_to_target(TrainSample(im, lab))
        images.append(img)
        targets.append(tgt)
    return images, targets


def test_settings_come_from_the_profile(tiny_profile):
    torch.manual_seed(0)
    m = build_model(tiny_profile)
    assert m.transform.min_size == (128,) and m.transform.max_size == 128
    assert m.roi_heads.detections_per_img == 50
    assert m.roi_heads.fg_bg_sampler.batch_size_per_image == 32
    assert m.rpn._post_nms_top_n["training"] == 64
    assert isinstance(m.roi_heads, NucleiRoIHeads)
    assert m.roi_heads.box_predictor.cls_score.out_features == 2  # background + nucleus
    assert m.roi_heads.mask_branch.logits.out_channels == 1      # class-agnostic mask
    cfg = m.nuclei_config
    assert cfg["weights"] == "random" and cfg["norm"] == "gn" and cfg["input_size"] == 128
    assert cfg == model_config(tiny_profile)
    assert any(isinstance(x, torch.nn.GroupNorm) for x in m.backbone.modules())


def test_anchor_sizes_scale_with_input():
    assert anchor_sizes(256) == ((8,), (16,), (32,), (64,), (128,))
    assert anchor_sizes(512) == ((16,), (32,), (64,), (128,), (256,))
    assert anchor_sizes(800)[0] == (25,)


def test_paper_profile_never_resizes_to_torchvision_default_on_its_own():
    p = PROFILES["cpu"]
    m = build_model(p)
    assert m.transform.min_size == (p.input_size,) and m.transform.max_size == p.input_size


@pytest.mark.parametrize("empty", [(0,), (0, 1)])
def test_zero_instance_images_train(small_patches, tiny_profile, empty):
    torch.manual_seed(0)
    m = build_model(tiny_profile)
    m.train()
    images, targets = _batch(small_patches[:2], empty=empty)
    losses = m(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if empty == (0, 1):
        assert float(losses["loss_mask"].detach()) == 0.0


def test_eval_returns_masks_at_image_size(small_patches, tiny_profile):
    torch.manual_seed(0)
    m = build_model(tiny_profile).eval()
    im = torch.from_numpy(small_patches[0][0]).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        det = m([im, im[:, :100, :90]])
    assert det[0]["masks"].shape[1:] == (1, 128, 128)
    assert det[1]["masks"].shape[1:] == (1, 100, 90)
    assert det[0]["boxes"].shape[0] <= 50
    assert float(det[0]["masks"].min()) >= 0 and float(det[0]["masks"].max()) <= 1


def tiny_in_channels() -> int:
    return PROFILES["smoke"].fpn_channels


class _TwoScaleBranch(StandardMaskBranch):
    """What BASS's LRD needs: an extra 14x14 output supervised with 14x14 targets."""

    def __init__(self):
        super().__init__(tiny_in_channels(), 32, 1, norm="gn")
        self.coarse = torch.nn.Conv2d(32, 1, 1)
        self.seen: list[MaskRoIs] = []

    def forward(self, rois):
        x = self.trunk(rois.roi_features)
        self.seen.append(rois)
        return {"mask_logits": self.logits(F.relu(self.deconv(x))), "coarse": self.coarse(x),
                "det_area": (x.mean(dim=(1, 2, 3)))}

    def loss(self, outputs, rois):
        out = super().loss(outputs, rois)
        out["loss_coarse"] = masked_bce(outputs["coarse"], rois.mask_targets(14), rois.mask_valid())
        return out


def test_custom_mask_branch_gets_rois_targets_and_features(small_patches, tiny_profile):
    torch.manual_seed(0)
    branch = _TwoScaleBranch()
    m = build_model(tiny_profile, mask_branch=branch)
    assert m.nuclei_config["mask_branch"]["type"] == "_TwoScaleBranch"
    m.train()
    images, targets = _batch(small_patches[:2])
    losses = m(images, targets)
    assert "loss_coarse" in losses and torch.isfinite(losses["loss_coarse"])
    rois = branch.seen[-1]
    assert rois.training and rois.roi_features.shape[1:] == (tiny_in_channels(), 14, 14)
    assert rois.num_rois == sum(p.shape[0] for p in rois.proposals) > 0
    assert set(rois.features) >= {"0", "1", "2", "3"}
    assert rois.mask_targets(14).shape == (rois.num_rois, 14, 14)
    # positive proposals' matched GT really overlap them
    t = rois.targets[0]
    gt = t["boxes"][rois.matched_idxs[0]]
    p = rois.proposals[0]
    iw = (torch.minimum(gt[:, 2], p[:, 2]) - torch.maximum(gt[:, 0], p[:, 0])).clamp(min=0)
    ih = (torch.minimum(gt[:, 3], p[:, 3]) - torch.maximum(gt[:, 1], p[:, 1])).clamp(min=0)
    assert bool((iw * ih > 0).all())
    assert sum(int((lab > 0).sum()) for lab in rois.all_labels) == rois.num_rois
    # extra per-detection outputs ("det_" keys) come back with the detections
    m.eval()
    with torch.no_grad():
        det = m(images[:1])
    assert det[0]["det_area"].shape[0] == det[0]["boxes"].shape[0]


def test_box_only_instances_get_no_mask_loss(small_patches, tiny_profile):
    torch.manual_seed(0)
    m = build_model(tiny_profile).train()
    im, lab = small_patches[0]
    from methods.core.targets import instance_masks

    _, boxes = instance_masks(lab)
    img, tgt = sample_to_target(TrainSample(im, None, boxes=boxes))
    assert not tgt["mask_valid"].any()
    losses = m([img], [tgt])
    assert float(losses["loss_mask"].detach()) == 0.0 and float(losses["loss_classifier"].detach()) > 0


def test_box_output_is_exposed_for_hooks(small_patches, tiny_profile):
    torch.manual_seed(0)
    m = build_model(tiny_profile).train()
    m.roi_heads.keep_box_output = True
    images, targets = _batch(small_patches[:2])
    m(images, targets)
    out = m.roi_heads.last_box_output
    assert out is not None and out.class_logits.shape == (sum(p.shape[0] for p in out.proposals), 2)


def test_imagenet_weights_are_used_only_from_local_files(tmp_path, monkeypatch, tiny_profile):
    torch.manual_seed(1)
    ref = resnet18()
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    m = build_model(tiny_profile.replace(norm="frozen_bn", pretrained=str(path)))
    assert m.nuclei_config["weights"] == f"imagenet:{path}"
    assert m.nuclei_config["trainable_backbone_layers"] == 3
    torch.testing.assert_close(m.backbone.body.conv1.weight, ref.conv1.weight)
    assert not m.backbone.body.conv1.weight.requires_grad  # stem frozen as in mmdet
    # "auto" looks in the torch hub cache only
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub_home"))
    ckpt = tmp_path / "hub_home" / "hub" / "checkpoints"
    with pytest.warns(UserWarning, match="no ImageNet weights"):
        m = build_model(tiny_profile.replace(norm="frozen_bn", pretrained="auto"))
    assert m.nuclei_config["weights"] == "random" and m.nuclei_config["norm"] == "gn"
    ckpt.mkdir(parents=True)
    torch.save(ref.state_dict(), ckpt / "resnet18-f37072fd.pth")
    m = build_model(tiny_profile.replace(norm="frozen_bn", pretrained="auto"))
    assert m.nuclei_config["weights"].startswith("imagenet:")
    with pytest.raises(ValueError, match="GroupNorm"):
        build_model(tiny_profile.replace(norm="gn", pretrained=str(path)))
    with pytest.raises(FileNotFoundError, match="no such file"):
        build_model(tiny_profile.replace(norm="frozen_bn", pretrained=str(tmp_path / "missing.pth")))


def test_fast_paste_equals_torchvision():
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from methods.core.transform import paste_masks

    g = torch.Generator().manual_seed(0)
    masks = torch.rand((6, 1, 28, 28), generator=g)
    boxes = torch.tensor([[3.2, 4.7, 30.1, 22.9], [-5.0, -3.0, 10.0, 12.0], [50.0, 40.0, 70.5, 64.0],
                          [10.0, 10.0, 10.4, 10.3], [0.0, 0.0, 63.0, 79.0], [60.0, 70.0, 90.0, 99.0]])
    torch.testing.assert_close(paste_masks(masks, boxes, (80, 64)), paste_masks_in_image(masks, boxes, (80, 64)),
                               rtol=0, atol=0)
    assert paste_masks(masks[:0], boxes[:0], (5, 7)).shape == (0, 1, 5, 7)


def test_score_floor_does_not_change_instance_maps(small_patches, tiny_profile):
    from methods.core.inference import iter_detections, predict_instance_maps
    from methods.core.instances import detections_to_instance_map

    torch.manual_seed(0)
    m = build_model(tiny_profile)
    with torch.no_grad():  # make some scores land on both sides of 0.5
        m.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([0.0, 0.02]))
    images = [im for im, _ in small_patches[:2]]
    full = [detections_to_instance_map(d["masks"], d["scores"], (128, 128), min_area=1)
            for d in iter_detections(m, images, batch_size=2)]
    fast = predict_instance_maps(m, images, batch_size=2, min_area=1)
    assert m.roi_heads.score_thresh == 0.05  # restored
    assert any(f.max() > 0 for f in full)
    for a, b in zip(full, fast):
        np.testing.assert_array_equal(a, b)


def test_narrow_backbone_has_the_requested_widths_and_trains(small_patches, tiny_profile):
    p = tiny_profile.replace(backbone_width=16)
    torch.manual_seed(0)
    m = build_model(p)
    body = m.backbone.body
    assert body.conv1.out_channels == 16
    assert [getattr(body, f"layer{k}")[-1].conv2.out_channels for k in (1, 2, 3, 4)] == [16, 32, 64, 128]
    assert m.nuclei_config["backbone_width"] == 16
    assert "backbone_width" not in model_config(tiny_profile)  # width 64 keeps the old config
    wide = sum(x.numel() for x in build_model(tiny_profile).backbone.body.parameters())
    assert sum(x.numel() for x in body.parameters()) < wide / 10
    images, targets = _batch(small_patches[:2])
    losses = m(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert body.conv1.weight.grad is not None and body.layer4[0].conv1.weight.grad.abs().sum() > 0


def test_narrow_backbone_refuses_imagenet_weights(tiny_profile, tmp_path):
    weights = tmp_path / "r18.pth"
    torch.save(resnet18().state_dict(), weights)
    with pytest.raises(ValueError, match="backbone_width=32"):
        build_model(tiny_profile.replace(backbone_width=32, norm="frozen_bn", pretrained=str(weights)))


def test_rpn_pre_nms_top_n_comes_from_the_profile(tiny_profile):
    m = build_model(tiny_profile)
    assert m.rpn._pre_nms_top_n == {"training": 2000, "testing": 1000}  # torchvision's defaults
    p = tiny_profile.replace(rpn_pre_nms_top_n_train=500, rpn_pre_nms_top_n_test=300)
    m = build_model(p)
    assert m.rpn._pre_nms_top_n == {"training": 500, "testing": 300}
    assert m.nuclei_config["rpn_pre_nms_top_n_train"] == 500 == model_config(p)["rpn_pre_nms_top_n_train"]
    # an explicit build_model override still wins over the profile
    assert build_model(p, rpn_pre_nms_top_n_train=700).rpn._pre_nms_top_n["training"] == 700
