"""``shapeprop``: affinity propagation, the ShapeProp mask branch's losses (box-only instances give the mask
head no gradient), balanced batches, and the method end to end (check-method kit and the CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from methods.shapeprop.method import (
    BalancedBatches,
    ShapePropMethod,
    make_branch,
    normalized_affinities,
    propagate,
)


# ------------------------------------------------------------------------------------------ propagation
def test_affinities_are_a_random_walk_over_in_image_neighbours():
    torch.manual_seed(0)
    a = normalized_affinities(torch.rand(2, 9 * 3, 5, 6), 5, 6)
    assert a.shape == (2, 3, 9, 30)
    torch.testing.assert_close(a.sum(2), torch.ones(2, 3, 30))
    assert torch.all(a >= 0)
    # the corner pixel (0, 0) has no neighbours above or to the left: entries 0, 1, 2, 3, 6 are zero
    assert torch.all(a[:, :, [0, 1, 2, 3, 6], 0] == 0)


def test_constant_map_is_a_fixed_point_and_values_stay_in_range():
    torch.manual_seed(0)
    w = torch.rand(3, 9 * 24, 14, 14)
    ones = torch.full((3, 24, 14, 14), 2.5)
    torch.testing.assert_close(propagate(ones, w), ones)
    x = torch.randn(3, 24, 14, 14)
    y = propagate(x, w)
    assert y.min() >= x.min() - 1e-5 and y.max() <= x.max() + 1e-5
    assert not torch.allclose(y, x)


def test_point_source_spreads_and_conserves_mass_with_uniform_affinities():
    src = torch.zeros(1, 2, 41, 41)
    src[0, :, 20, 20] = 1.0
    y = propagate(src, torch.ones(1, 9, 41, 41), steps=14)  # one affinity group shared by both channels
    torch.testing.assert_close(y.sum(dim=(2, 3)), torch.ones(1, 2))
    support = (y[0, 0] > 0).nonzero()
    assert support[:, 0].min() == 6 and support[:, 0].max() == 34  # 14 steps of a 3x3 walk: radius 14
    assert y[0, 0, 20, 20] < 0.05 and y.max() == y[0, 0, 20, 20]  # spread out, peaked at the source


def test_affinities_steer_the_propagation():
    """Weight only on the left neighbour (unfold entry 3): every step shifts the map one pixel right."""
    w = torch.zeros(1, 9, 7, 7)
    w[:, 3] = 1.0
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 3, 1] = 1.0
    y = propagate(x, w, steps=3)
    assert y[0, 0, 3, 4] == 1.0 and y.sum() == 1.0


# ------------------------------------------------------------------------------------------ losses
@pytest.fixture(scope="module")
def model_and_data():
    from benchmark.api import Patch, TrainData
    from benchmark.check import check_profile, tiny_split
    from methods.core.model import build_model

    # mechanics only: a small model on 128 px crops keeps these tests fast
    profile = check_profile()
    torch.manual_seed(0)
    model = build_model(profile, mask_branch=make_branch(profile))
    data = tiny_split(n_labeled=1, n_unlabeled=1, needs=frozenset({"boxes"}))
    crop = []
    for p in (*data.labeled, *data.unlabeled):
        lab = None if p.label is None else p.label[:128, :128]
        boxes = None
        if p.boxes is not None:
            boxes = np.clip(p.boxes, 0, 128)
            boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 2)]
        crop.append(Patch(p.id, np.ascontiguousarray(p.image[:128, :128]), lab, boxes=boxes))
    return model, TrainData(labeled=crop[:1], unlabeled=crop[1:])


def _grads(model, samples):
    from methods.core.targets import sample_to_target

    model.train()
    model.zero_grad(set_to_none=True)
    images, targets = zip(*(sample_to_target(s) for s in samples))
    losses = model(list(images), list(targets))
    sum(losses.values()).backward()
    branch = model.roi_heads.mask_branch

    def gmax(module):
        return max((float(p.grad.abs().max()) for p in module.parameters() if p.grad is not None), default=0.0)

    return {k: float(v.detach()) for k, v in losses.items()}, {
        "fcn": gmax(branch.fcn), "shape_encoder": gmax(branch.shape_encoder), "decoder": gmax(branch.decoder),
        "act": gmax(branch.act_features), "backbone": gmax(model.backbone),
    }


def test_box_only_image_trains_the_activating_branch_but_not_the_mask_head(model_and_data):
    from methods.core.targets import TrainSample

    model, data = model_and_data
    u = data.unlabeled[0]
    assert len(u.boxes) >= 3
    losses, g = _grads(model, [TrainSample(image=u.image, boxes=u.boxes)])
    assert losses["loss_mask"] == 0.0 and losses["loss_prop"] == 0.0 and losses["loss_act"] > 0.1
    assert g["fcn"] == 0.0 and g["shape_encoder"] == 0.0 and g["decoder"] == 0.0
    assert g["act"] > 0 and g["backbone"] > 0


def test_labeled_image_trains_mask_head_and_propagation(model_and_data):
    from methods.core.targets import TrainSample

    model, data = model_and_data
    lab = data.labeled[0]
    losses, g = _grads(model, [TrainSample(image=lab.image, label=lab.label)])
    assert losses["loss_mask"] > 0.1 and losses["loss_prop"] > 0.1 and losses["loss_act"] > 0.1
    assert g["fcn"] > 0 and g["shape_encoder"] > 0 and g["decoder"] > 0


def test_in_a_mixed_batch_box_only_rois_get_no_mask_gradient(model_and_data):
    """Labeled + box-only image in one batch: the mask logits (and shape activations) of the box-only
    image's RoIs receive exactly zero gradient, those of the labeled image do not."""
    from methods.core.targets import TrainSample, sample_to_target

    model, data = model_and_data
    lab, u = data.labeled[0], data.unlabeled[0]
    seen = {}

    def hook(module, inputs, outputs):
        for k in ("mask_logits", "shape_logits"):
            outputs[k].retain_grad()
        seen["rois"], seen["out"] = inputs[0], outputs

    handle = model.roi_heads.mask_branch.register_forward_hook(hook)
    try:
        model.train()
        model.zero_grad(set_to_none=True)
        samples = [TrainSample(image=u.image, boxes=u.boxes), TrainSample(image=lab.image, label=lab.label)]
        images, targets = zip(*(sample_to_target(s) for s in samples))
        losses = model(list(images), list(targets))
        sum(losses.values()).backward()
    finally:
        handle.remove()
    n_box, n_lab = (len(p) for p in seen["rois"].proposals)
    assert n_box > 0 and n_lab > 0
    for k in ("mask_logits", "shape_logits"):
        grad = seen["out"][k].grad
        assert grad.shape[0] == n_box + n_lab
        assert torch.count_nonzero(grad[:n_box]) == 0, k
        assert torch.count_nonzero(grad[n_box:]) > 0, k


def test_inference_outputs_masks(model_and_data):
    model, data = model_and_data
    model.eval()
    img = torch.from_numpy(data.labeled[0].image).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        (det,) = model([img])
        (empty,) = model([torch.ones(3, 64, 64)])
    assert det["masks"].shape[1:] == (1, 128, 128) and len(det["masks"]) == len(det["scores"]) > 0
    assert empty["masks"].shape[1:] == (1, 64, 64)


# ------------------------------------------------------------------------------------------ batches
def test_balanced_batches_are_pure_and_cover_both_pools():
    from methods.core.targets import TrainSample

    img = np.zeros((4, 4, 3), np.uint8)
    lab = [TrainSample(image=img, label=np.zeros((4, 4), np.int32), id=f"l{i}") for i in range(3)]
    box = [TrainSample(image=img, boxes=np.zeros((0, 4), np.float32), id=f"u{i}") for i in range(5)]
    fn = BalancedBatches(lab, box, seed=0)
    batches = [[s.id for s in fn(i, 2)] for i in range(5)]
    assert all(b[0].startswith("l") and b[1].startswith("u") for b in batches)
    assert {b[1] for b in batches} == {f"u{i}" for i in range(5)}  # one epoch of the box-only pool
    assert {b[0] for b in batches[:3]} == {"l0", "l1", "l2"}
    assert [[s.id for s in fn(i, 2)] for i in range(5)] == batches
    assert [[s.id for s in BalancedBatches(lab, box, seed=1)(i, 2)] for i in range(5)] != batches
    singles = [fn(i, 1)[0].id[0] for i in range(4)]
    assert singles == ["l", "u", "l", "u"]


def test_options_and_missing_boxes_error(tmp_path):
    from benchmark.api import Patch, TrainData
    from benchmark.profiles import get_profile

    m = ShapePropMethod(steps="7")
    assert m.config()["steps"] == 7 and m.needs == frozenset({"boxes"}) and m.teacher is None
    with pytest.raises(ValueError, match="no option"):
        ShapePropMethod(alpha=1)
    img = np.zeros((64, 64, 3), np.uint8)
    data = TrainData(labeled=[Patch("l", img, np.zeros((64, 64), np.int32))], unlabeled=[Patch("u", img)])
    with pytest.raises(ValueError, match="has no boxes"):
        m.fit(data, profile=get_profile("smoke"), seed=0, device="cpu", workdir=tmp_path)


# ------------------------------------------------------------------------------------------ end to end
def _tiny_profile():
    from benchmark.check import check_profile

    return check_profile(iterations=2, warmup_iters=1, checkpoint_every=1)


@pytest.mark.slow
def test_fit_saves_reloads_and_refuses_other_settings(tmp_path):
    from benchmark.check import tiny_split
    from methods.core.checkpoint import CheckpointError

    data = tiny_split(n_labeled=2, n_unlabeled=2, needs=frozenset({"boxes"}))
    profile = _tiny_profile()
    m = ShapePropMethod()
    m.fit(data, profile=profile, seed=0, device="cpu", workdir=tmp_path)
    assert (tmp_path / "model.pt").is_file() and not list(tmp_path.glob("*_checkpoint.pt"))
    hist = json.loads((tmp_path / "train_history.json").read_text())
    assert len(hist["rows"]) == 2 and "loss_act" in hist["columns"]
    assert m.fit_info["n_box_only_instances"] == sum(len(p.boxes) for p in data.unlabeled)
    images = [p.image for p in data.labeled]
    preds = m.predict(images)
    again = ShapePropMethod()
    again.fit(data, profile=profile, seed=0, device="cpu", workdir=tmp_path)  # loads, no training
    for a, b in zip(again.predict(images), preds):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="different settings"):
        ShapePropMethod(latent_dim=12).fit(data, profile=profile, seed=0, device="cpu", workdir=tmp_path)


def _register() -> None:
    from benchmark.catalog import METHODS

    METHODS.register("shapeprop", "methods.shapeprop.method:ShapePropMethod")
    METHODS.register("maskrcnn", "methods.maskrcnn.method:MaskRCNNMethod")


@pytest.mark.slow
def test_check_method_kit():
    from benchmark.check import check_method

    _register()
    report = check_method(ShapePropMethod)
    assert report.passed, report.format()


@pytest.mark.slow
def test_cli_run_on_synthetic(tmp_path, monkeypatch):
    from benchmark import cli

    _register()
    monkeypatch.setenv("NUCLEI_SSL_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    # the full smoke network (not check-method's toy one): the AJI check below needs it to learn a little
    rc = cli.main(["run", "--methods", "shapeprop,maskrcnn", "--datasets", "synthetic", "--ratios", "1/8",
                   "--profile", "smoke", "--set", "profile.iterations=20", "--out", str(out), "--quiet"])
    assert rc == 0
    (sdone,) = out.glob("synthetic/1-8/shapeprop/*/done.json")
    (mdone,) = out.glob("synthetic/1-8/maskrcnn/*/done.json")
    cell = json.loads((sdone.parent / "cell.json").read_text())
    assert cell["needs"] == ["boxes"]
    done, base = json.loads(sdone.read_text()), json.loads(mdone.read_text())
    info = done["fit_info"]
    assert info["n_box_only"] > info["n_labeled"] > 0 and info["n_box_only_instances"] > 500
    assert {"loss_act", "loss_prop", "loss_mask"} <= set(info["final_losses"])
    assert info["model_config"]["mask_branch"]["type"] == "ShapePropMaskBranch"
    aji, aji_base = done["summary"]["patch"]["mean"]["aji"], base["summary"]["patch"]["mean"]["aji"]
    print(f"synthetic 1/8 smoke(20 it): patch AJI shapeprop {aji:.4f} vs maskrcnn {aji_base:.4f}")
    assert np.isfinite(aji) and aji > 0.05
