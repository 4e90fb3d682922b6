"""``pointwssis``: point-to-detection matching, pseudo-label painting, the mask head on given boxes, and the
method end to end (check-method kit and the CLI on synthetic data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from methods.pointwssis import (
    NONE,
    VIA_BOX,
    VIA_MASK,
    PointWSSISMethod,
    mask_probs_for_boxes,
    match_points,
    median_nucleus_size,
    paint_pseudo_label,
    point_boxes,
    point_candidates,
)

H = W = 32


def _box_mask(x1, y1, x2, y2):
    m = np.zeros((H, W), bool)
    m[y1:y2, x1:x2] = True
    return m


# ------------------------------------------------------------------------------------------ matching
def test_highest_scoring_containing_mask_wins_and_thresholds_are_ignored():
    boxes = np.array([[0, 0, 10, 10], [2, 2, 12, 12], [20, 20, 30, 30]], np.float32)
    masks = np.stack([_box_mask(0, 0, 10, 10), _box_mask(2, 2, 12, 12), _box_mask(20, 20, 30, 30)])
    scores = np.array([0.3, 0.6, 0.002])  # 0.002: far below any usual threshold, still selected
    m = match_points(np.array([[5.0, 5.0], [25.0, 24.5]]), boxes, scores, masks)
    assert m.detection.tolist() == [1, 2]
    assert m.via.tolist() == [VIA_MASK, VIA_MASK]


def test_mask_containment_beats_a_higher_scoring_box_only_candidate():
    # detection 0: high score, its box contains the point but its (ring-shaped) mask does not
    ring = _box_mask(0, 0, 12, 12) & ~_box_mask(3, 3, 9, 9)
    masks = np.stack([ring, _box_mask(4, 4, 8, 8)])
    boxes = np.array([[0, 0, 12, 12], [4, 4, 8, 8]], np.float32)
    m = match_points(np.array([[5.0, 5.0]]), boxes, np.array([0.9, 0.2]), masks)
    assert m.detection.tolist() == [1] and m.via.tolist() == [VIA_MASK]


def test_box_containment_is_the_fallback_when_no_mask_contains_the_point():
    masks = np.stack([_box_mask(0, 0, 4, 4), _box_mask(10, 10, 14, 14)])
    boxes = np.array([[0, 0, 8, 8], [10, 10, 14, 14]], np.float32)
    m = match_points(np.array([[6.0, 6.0], [20.0, 20.0]]), boxes, np.array([0.5, 0.9]), masks)
    assert m.detection.tolist() == [0, -1]
    assert m.via.tolist() == [VIA_BOX, NONE]


def test_each_detection_serves_one_point_and_the_loser_takes_its_next_candidate():
    # two nuclei (points) inside one big merged detection; a smaller detection also covers point B
    big = _box_mask(0, 0, 20, 10)
    small = _box_mask(12, 0, 20, 10)
    masks = np.stack([big, small])
    boxes = np.array([[0, 0, 20, 10], [12, 0, 20, 10]], np.float32)
    pts = np.array([[5.0, 4.0], [5.0, 16.0]])  # A (left), B (right)
    m = match_points(pts, boxes, np.array([0.9, 0.4]), masks)
    # pairs by score: (A|B, big) first; the point closer to big's centre (x=10) is ... A (x=4.5 vs 16.5,
    # distances 5.5 and 6.5) so A gets big, B falls back to small
    assert m.detection.tolist() == [0, 1]
    assert m.via.tolist() == [VIA_MASK, VIA_MASK]
    # with no second candidate the losing point is left unmatched (no detection is used twice)
    m2 = match_points(pts, boxes[:1], np.array([0.9]), masks[:1])
    assert m2.detection.tolist() == [0, -1]
    assert len(set(m.detection[m.detection >= 0].tolist())) == int((m.detection >= 0).sum())


def test_conflicts_are_resolved_by_score_before_distance():
    # one point inside two detections; the farther-centred but higher-scoring one wins
    masks = np.stack([_box_mask(0, 0, 16, 16), _box_mask(4, 4, 8, 8)])
    boxes = np.array([[0, 0, 16, 16], [4, 4, 8, 8]], np.float32)
    m = match_points(np.array([[5.5, 5.5]]), boxes, np.array([0.8, 0.7]), masks)
    assert m.detection.tolist() == [0]


def test_matching_handles_empty_inputs_and_rejects_inconsistent_ones():
    e = match_points(np.zeros((0, 2)), np.zeros((0, 4)), np.zeros(0), np.zeros((0, H, W), bool))
    assert e.detection.shape == (0,)
    m = match_points(np.array([[3.0, 3.0]]), np.zeros((0, 4)), np.zeros(0), np.zeros((0, H, W), bool))
    assert m.detection.tolist() == [-1] and m.via.tolist() == [NONE]
    with pytest.raises(ValueError, match="do not agree"):
        match_points(np.array([[3.0, 3.0]]), np.zeros((2, 4)), np.zeros(1), np.zeros((2, H, W), bool))


# ------------------------------------------------------------------------------------------ painting, boxes
def test_paint_gives_overlaps_to_the_higher_priority_and_drops_tiny_leftovers():
    a = _box_mask(0, 0, 10, 10)
    b = _box_mask(5, 5, 15, 15)
    c = _box_mask(6, 6, 8, 8)  # fully covered by b (higher priority): vanishes
    lab, kept = paint_pseudo_label([a, b, c, np.zeros((H, W), bool)], [0.2, 0.9, 0.1, -1.0], (H, W), min_area=3)
    assert kept.tolist() == [True, True, False, False]
    assert lab.dtype == np.int32 and set(np.unique(lab).tolist()) == {0, 1, 2}
    assert lab[7, 7] == 2 and lab[2, 2] == 1  # overlap -> b
    assert (lab == 2).sum() == 100 and (lab == 1).sum() == 100 - 25


def test_point_boxes_are_centred_and_clipped():
    b = point_boxes(np.array([[10.0, 20.0], [0.0, 0.0]]), (8.0, 6.0), (32, 24))
    np.testing.assert_allclose(b[0], [16.5, 7.5, 24.0, 13.5])  # x centre 20.5, y centre 10.5; clipped at W=24
    np.testing.assert_allclose(b[1], [0.0, 0.0, 4.5, 3.5])


def test_median_nucleus_size():
    lab = np.zeros((32, 32), np.int32)
    lab[0:4, 0:6] = 1
    lab[10:20, 10:12] = 2
    lab[20:25, 20:25] = 3
    assert median_nucleus_size([lab]) == (5.0, 5.0)
    assert median_nucleus_size([np.zeros((8, 8), np.int32)]) == (12.0, 12.0)


# ------------------------------------------------------------------------------------------ teacher pieces
@pytest.fixture(scope="module")
def random_model():
    from benchmark.check import check_profile
    from methods.core.model import build_model

    torch.manual_seed(0)
    model = build_model(check_profile().replace(rpn_post_nms_top_n_test=60, detections_per_img=40))
    model.eval()
    return model


def test_candidates_are_the_point_covering_detections_with_the_pipelines_masks(random_model):
    """point_candidates re-implements the inference path for a subset of detections: it must agree with
    the full torchvision pipeline, and the mask head on given boxes must reproduce the same masks."""
    from benchmark.check import tiny_split
    from methods.core.inference import predict_detections

    data = tiny_split(n_labeled=1, n_unlabeled=1, needs=frozenset({"points"}))
    patch = data.unlabeled[0]
    full = predict_detections(random_model, [patch.image])[0]
    cand = point_candidates(random_model, [patch.image], [patch.points])[0]
    assert len(full["scores"]) > 0 and 0 < len(cand["scores"]) <= len(full["scores"])
    # every candidate is a pipeline detection with the same box, score and pasted mask
    for b, s, m in zip(cand["boxes"], cand["scores"], cand["masks"]):
        j = int(np.argmin(np.abs(full["boxes"] - b).sum(1)))
        np.testing.assert_allclose(full["boxes"][j], b, atol=1e-4)
        assert abs(full["scores"][j] - s) < 1e-5
        np.testing.assert_allclose(full["masks"][j], m, atol=1e-5)
    # and the candidates are exactly the detections whose box (+2 px) contains a point
    yc, xc = patch.points[:, 0] + 0.5, patch.points[:, 1] + 0.5
    fb = full["boxes"]
    covers = ((fb[None, :, 0] - 2 <= xc[:, None]) & (xc[:, None] <= fb[None, :, 2] + 2)
              & (fb[None, :, 1] - 2 <= yc[:, None]) & (yc[:, None] <= fb[None, :, 3] + 2)).any(0)
    assert int(covers.sum()) == len(cand["scores"])
    # mask head on given boxes == the pipeline's masks for those boxes
    probs = mask_probs_for_boxes(random_model, patch.image, cand["boxes"][:5])
    np.testing.assert_allclose(probs, cand["masks"][:5], atol=1e-5)
    assert mask_probs_for_boxes(random_model, patch.image, np.zeros((0, 4))).shape == (0, 256, 256)


def test_pseudo_labels_give_one_instance_or_one_box_per_point(random_model):
    """With any teacher (here an untrained one), every point ends as exactly one pseudo instance or one
    box-only instance; with a (briefly trained) MaskRefineNet the masks are replaced by refinements."""
    from benchmark.check import tiny_split

    data = tiny_split(n_labeled=1, n_unlabeled=2, needs=frozenset({"points"}))
    m = PointWSSISMethod(refine_iters=2)
    box = median_nucleus_size([p.label for p in data.labeled])
    maps, extras, stats = m.pseudo_labels(random_model, data.unlabeled, box_size=box)
    n_points = sum(len(p.points) for p in data.unlabeled)
    parts = ("via_mask", "via_box", "fallback", "box_only", "dropped")
    assert stats["points"] == n_points == sum(stats[k] for k in parts) and stats["refined"] == 0
    for lab, ex, p in zip(maps, extras, data.unlabeled):
        assert lab.dtype == np.int32 and lab.shape == p.image.shape[:2]
        assert len(np.unique(lab[lab > 0])) + len(ex) == len(p.points)
    assert stats["via_mask"] + stats["via_box"] + stats["fallback"] > 0, stats

    net, info = m.train_refiner(random_model, data.labeled, box_size=box, seed=0)
    assert info["iterations"] == 2 and info["crops"] == len(np.unique(data.labeled[0].label)) - 1
    maps_r, extras_r, stats_r = m.pseudo_labels(random_model, data.unlabeled, box_size=box, refiner=net)
    assert stats_r["points"] == n_points == sum(stats_r[k] for k in parts)
    for lab, ex, p in zip(maps_r, extras_r, data.unlabeled):
        assert len(np.unique(lab[lab > 0])) + len(ex) == len(p.points)


def test_points_without_any_candidate_detection_use_the_fallback(random_model):
    from benchmark.check import tiny_split

    patch = tiny_split(n_labeled=1, n_unlabeled=1, needs=frozenset({"points"})).unlabeled[0]
    none = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
            "masks": np.zeros((0, 256, 256), np.float32)}
    pts = patch.points[:3]
    masks, prio, source = PointWSSISMethod()._masks_one(random_model, patch.image, pts, none, (12.0, 12.0), "cpu")
    assert list(source) == ["fallback"] * 3 and list(prio) == [-1.0] * 3 and len(masks) == 3
    masks, _, source = PointWSSISMethod(fallback_box=False)._masks_one(
        random_model, patch.image, pts, none, (12.0, 12.0), "cpu")
    assert list(source) == ["none"] * 3 and not any(m.any() for m in masks)


def test_options_and_missing_points_error(tmp_path):
    from benchmark.api import Patch, TrainData
    from benchmark.profiles import get_profile

    m = PointWSSISMethod(fallback_box="false")
    assert m.config()["fallback_box"] is False and m.needs == frozenset({"points"}) and m.teacher == "maskrcnn"
    assert PointWSSISMethod(refine="true", refine_iters="5").config()["refine_iters"] == 5
    with pytest.raises(ValueError, match="no option"):
        PointWSSISMethod(refinement=True)
    img = np.zeros((64, 64, 3), np.uint8)
    data = TrainData(labeled=[Patch("l", img, np.zeros((64, 64), np.int32))], unlabeled=[Patch("u", img)])
    with pytest.raises(ValueError, match="has no points"):
        m.fit(data, profile=get_profile("smoke"), seed=0, device="cpu", workdir=tmp_path)


# ------------------------------------------------------------------------------------------ MaskRefineNet
def test_refine_crops_round_trip_and_heatmap():
    from methods.pointwssis.refine import CROP, crop_masks, crop_windows, make_inputs, paste

    img = np.zeros((40, 50, 3), np.uint8)
    m = np.zeros((40, 50), bool)
    m[8:22, 30:36] = True  # 14 rows x 6 cols
    pts = np.array([[14.0, 32.0], [2.0, 2.0]])
    windows = crop_windows(pts, [m, np.zeros((40, 50), bool)])
    np.testing.assert_allclose(windows[0], [19.0, 1.0, 47.0, 29.0])  # side 2 x 14, centred on the mask box
    np.testing.assert_allclose(windows[1], [-9.5, -9.5, 14.5, 14.5])  # empty mask: min side 24 at the point
    x = make_inputs(img, pts, [m, np.zeros((40, 50), bool)], windows)
    assert x.shape == (2, 5, CROP, CROP)
    heat = x[0, 3]
    r, c = divmod(int(heat.argmax()), CROP)
    assert abs(r - (14.5 - 1.0) / 28 * CROP) <= 1.5 and abs(c - (32.5 - 19.0) / 28 * CROP) <= 1.5
    torch.testing.assert_close(x[0, 4].sum(), torch.tensor(14 * 6 * (CROP / 28) ** 2), rtol=0.1, atol=0)
    back = paste(crop_masks([m], windows[:1]), windows[:1], (40, 50))[0]
    assert (back ^ m).sum() <= 4 and back[9:21, 31:35].all()


@pytest.mark.slow
def test_refiner_learns_and_refines():
    """A toy refinement task (rough = target shrunk by 2 px): the loss drops and refined masks improve."""
    from scipy import ndimage

    from methods.pointwssis.refine import crop_masks, crop_windows, make_inputs, refine_masks, train_refiner

    rng = np.random.default_rng(0)
    xs, ys, cases = [], [], []
    for _ in range(12):
        img = np.full((48, 48, 3), 230, np.uint8)
        yy, xx = np.mgrid[:48, :48]
        cy, cx, r = rng.uniform(18, 30), rng.uniform(18, 30), rng.uniform(6, 10)
        target = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        img[target] = (90, 40, 120)
        rough = ndimage.binary_erosion(target, iterations=2)
        pts = np.array([[cy, cx]])
        w = crop_windows(pts, [rough])
        xs.append(make_inputs(img, pts, [rough], w))
        ys.append(crop_masks([target], w))
        cases.append((img, pts, rough, target))
    net, losses = train_refiner(torch.cat(xs), torch.cat(ys), iterations=60, seed=0, batch_size=12)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    img, pts, rough, target = cases[0]
    (refined,) = refine_masks(net, img, pts, [rough])
    iou = lambda a, b: (a & b).sum() / (a | b).sum()
    assert refined.shape == target.shape and iou(refined, target) > iou(rough, target)


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_fit_trains_teacher_pseudo_labels_student_and_reloads(tmp_path):
    from benchmark.check import check_profile, tiny_split
    from methods.core.checkpoint import CheckpointError

    profile = check_profile(iterations=2, warmup_iters=1, checkpoint_every=1)
    data = tiny_split(n_labeled=2, n_unlabeled=2, needs=frozenset({"points"}))
    m = PointWSSISMethod()
    assert m.teacher_workdir is None
    m.fit(data, profile=profile, seed=0, device="cpu", workdir=tmp_path)
    assert (tmp_path / "teacher" / "model.pt").is_file() and (tmp_path / "model.pt").is_file()
    assert not list(tmp_path.glob("student_checkpoint.pt"))
    stats = json.loads((tmp_path / "pseudo_labels.json").read_text())
    assert stats["points"] == sum(len(p.points) for p in data.unlabeled)
    with np.load(tmp_path / "pseudo_labels.npz") as z:
        assert z["maps"].shape == (2, 256, 256) and z["maps"].dtype == np.int32
    assert len(json.loads((tmp_path / "student_history.json").read_text())["rows"]) == 2
    images = [p.image for p in data.labeled]
    preds = m.predict(images)
    again = PointWSSISMethod()
    again.fit(data, profile=profile, seed=0, device="cpu", workdir=tmp_path)  # loads the finished student
    for a, b in zip(again.predict(images), preds):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="different settings"):
        PointWSSISMethod(fallback_box=False).fit(data, profile=profile, seed=0, device="cpu", workdir=tmp_path)
    # a runner-provided teacher_workdir without a finished teacher is an error, not a silent retrain
    bad = PointWSSISMethod()
    bad.teacher_workdir = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="teacher_workdir"):
        bad.fit(data, profile=profile, seed=0, device="cpu", workdir=tmp_path / "other")


def _register() -> None:
    from benchmark.catalog import METHODS

    METHODS.register("pointwssis", "methods.pointwssis.method:PointWSSISMethod")
    METHODS.register("maskrcnn", "methods.maskrcnn.method:MaskRCNNMethod")


@pytest.mark.slow
def test_check_method_kit():
    from benchmark.check import check_method

    _register()
    report = check_method(PointWSSISMethod)
    assert report.passed, report.format()


@pytest.mark.slow
def test_cli_run_on_synthetic(tmp_path, monkeypatch):
    from benchmark import cli
    from benchmark.check import tiny_profile_args

    _register()
    monkeypatch.setenv("NUCLEI_SSL_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    rc = cli.main(["run", "--methods", "pointwssis,maskrcnn", "--datasets", "synthetic", "--ratios", "1/8",
                   *tiny_profile_args(iterations=20), "--out", str(out), "--quiet"])
    assert rc == 0
    (pdone,) = out.glob("synthetic/1-8/pointwssis/*/done.json")
    (mdone,) = out.glob("synthetic/1-8/maskrcnn/*/done.json")
    cell = json.loads((pdone.parent / "cell.json").read_text())
    assert cell["needs"] == ["points"] and "SOLOv2" in cell["approximation"]
    done, base = json.loads(pdone.read_text()), json.loads(mdone.read_text())
    stats = done["fit_info"]["pseudo_label_stats"]
    parts = ("via_mask", "via_box", "fallback", "box_only", "dropped")
    assert stats["points"] > 500 and sum(stats[k] for k in parts) == stats["points"]
    assert stats["via_mask"] + stats["via_box"] + stats["fallback"] > stats["points"] / 2
    # the student trained on the teacher's work: the teacher was the runner's maskrcnn cell (not retrained)
    assert not list(pdone.parent.glob("work/teacher"))
    # the pseudo-labels, scored against the unlabeled patches' hidden ground truth: the points must make them
    # far better than the 20-iteration teacher's own output (test AJI ~0.02-0.06 at this length)
    from benchmark.data.synthetic import SyntheticDataset
    from benchmark.metrics import aji as aji_of
    from benchmark.runner import parse_patch_id

    ds = SyntheticDataset()
    with np.load(pdone.parent / "work" / "pseudo_labels.npz") as z:
        ids, maps = [str(i) for i in z["ids"]], z["maps"]
    pl_aji = []
    for pid, pl in zip(ids, maps):
        name, (r, c) = parse_patch_id(pid)
        pl_aji.append(aji_of(ds.load(name).label[r:r + 256, c:c + 256], pl))
    pl_aji = float(np.mean(pl_aji))
    aji, aji_base = done["summary"]["patch"]["mean"]["aji"], base["summary"]["patch"]["mean"]["aji"]
    print(f"synthetic 1/8 smoke(20 it): patch AJI pointwssis {aji:.4f} vs maskrcnn {aji_base:.4f}; "
          f"pseudo-label AJI vs hidden GT {pl_aji:.3f}; PL {stats}")
    assert len(ids) == done["n_unlabeled"] == 142 and pl_aji > 0.2
    assert np.isfinite(aji) and done["n_test_patches"] == 54
