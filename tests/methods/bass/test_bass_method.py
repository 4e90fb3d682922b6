"""BASS as a registered method: options, variants, check-method, resume, and the runner end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmark.catalog import METHODS, get_method
from methods.bass.method import (
    BASS_OPTIONS,
    CODE_OVERRIDES,
    BassCodeMethod,
    BassLRDMethod,
    BassMethod,
    BassNMHLRDMethod,
    BassNMHMethod,
)

TARGETS = {
    "maskrcnn": "methods.maskrcnn.method:MaskRCNNMethod",
    "bass": "methods.bass.method:BassMethod",
    "bass-nmh": "methods.bass.method:BassNMHMethod",
    "bass-lrd": "methods.bass.method:BassLRDMethod",
    "bass-nmh-lrd": "methods.bass.method:BassNMHLRDMethod",
    "bass-code": "methods.bass.method:BassCodeMethod",
    "noisyboundary": "methods.noisyboundary.method:NoisyBoundaryMethod",
}


@pytest.fixture(scope="module", autouse=True)
def registered():
    for name, target in TARGETS.items():
        if name not in METHODS:
            METHODS.register(name, target)


def test_variants_are_registered_with_family_and_teacher():
    classes = [BassMethod, BassNMHMethod, BassLRDMethod, BassNMHLRDMethod, BassCodeMethod]
    for cls in classes:
        assert get_method(cls.name) is cls
        assert cls.family == "bass" and cls.teacher == "maskrcnn" and cls.deep and cls.uses_unlabeled
        for key in ("box_threshold", "pixel_threshold", "alpha", "d"):
            assert key in cls.defaults
    heads = {c.name: (c.defaults["nmh"], c.defaults["lrd"], c.defaults["crc"]) for c in classes}
    assert heads == {"bass": (True, True, True), "bass-nmh": (True, False, False),
                     "bass-lrd": (False, True, False), "bass-nmh-lrd": (True, True, False),
                     "bass-code": (True, True, True)}
    code = BassCodeMethod().config()
    for k, v in CODE_OVERRIDES.items():
        assert code[k] == (list(v) if isinstance(v, tuple) else v if k != "weight_decay" else 1e-4), k
    paper = BassMethod().config()
    assert all(paper[k] == v for k, v in BASS_OPTIONS.items())
    assert paper["box_threshold"] == "auto" and paper["pixel_threshold"] == 0.5
    assert paper["alpha"] == 0.7 and paper["d"] == 4


def test_family_override_reaches_every_variant():
    from benchmark.runner import method_options, validate_assignments

    names = ["bass", "bass-nmh", "bass-lrd", "bass-nmh-lrd", "bass-code", "maskrcnn"]
    validate_assignments({"bass.alpha": "0.3", "bass.box_threshold": "0.38"}, names)
    for n in names[:-1]:
        opts = method_options(get_method(n), {"bass.alpha": "0.3"})
        assert get_method(n)(**opts).config()["alpha"] == 0.3
    assert method_options(get_method("maskrcnn"), {"bass.alpha": "0.3"}) == {}
    from benchmark.runner import GridError

    with pytest.raises(GridError, match="no option"):
        validate_assignments({"bass.gamma": "1"}, names)


def test_invalid_head_options_fail_at_construction():
    with pytest.raises(ValueError, match="NMH or LRD"):
        BassMethod(nmh=False, lrd=False)
    with pytest.raises(ValueError, match="bands"):
        BassMethod(bands="fancy")
    with pytest.raises(ValueError, match="query"):
        BassMethod(query="mean")


def tiny_check_profile():
    """check-method's profile shrunk further (128 px input, narrow heads): the kit checks the contract, and
    a BASS fit is three stages (teacher, pseudo-labels, student), twice for the determinism check."""
    from benchmark.check import check_profile

    return check_profile(iterations=4, checkpoint_every=2)


@pytest.mark.slow
def test_check_method_bass():
    from benchmark.check import check_method

    report = check_method(get_method("bass"), profile=tiny_check_profile())
    assert report.passed, report.format()


@pytest.mark.slow
def test_fit_without_runner_trains_teacher_then_resumes_from_cache(tmp_path):
    """The released-code variant end to end (h-flip TTA at one scale to stay fast), then a resume."""
    from benchmark.check import tiny_split

    data = tiny_split()
    profile = tiny_check_profile()
    m = BassCodeMethod(tta_scales=(1.0,))
    m.fit(data, profile=profile, seed=0, device="cpu", workdir=tmp_path, progress=False)
    info = m.fit_info
    assert info["teacher"]["source"] == "trained" and (tmp_path / "teacher" / "model.pt").is_file()
    pl = info["pseudo_labels"]
    assert pl["box_threshold_mode"] == "auto" and pl["box_threshold"] in [round(0.10 + 0.01 * i, 2) for i in range(91)]
    assert len(pl["count_curve"]["thresholds"]) == 91 and len(pl["count_curve"]["mean_counts"]) == 91
    assert pl["labeled_mean_count"] > 0
    on_disk = json.loads((tmp_path / "fit_info.json").read_text())
    assert on_disk["box_threshold"] == pl["box_threshold"]
    assert (tmp_path / "pseudolabels.json").is_file() and (tmp_path / "pl_maps.npz").is_file()
    assert pl["tta_views"] == [["", 1.0], ["h", 1.0]]
    student = info["student"]
    assert {"loss_crc", "loss_mask", "loss_mask_lrd"} <= set(student["final_losses"])
    assert student["weight_decay"] == 1e-4 and student["labeled_repeat"] == 19
    assert student["n_train_samples"] == 19 * len(data.labeled) + pl["n_pl_patches_used"]
    images = [p.image for p in data.labeled[:2]]
    first = m.predict(images)

    again = BassCodeMethod(tta_scales=(1.0,))
    again.fit(data, profile=profile, seed=0, device="cpu", workdir=tmp_path, progress=False)
    assert again.fit_info["pseudo_labels"]["detections_cached"] and again.fit_info["pseudo_labels"]["maps_cached"]
    assert again.fit_info["student"]["reloaded"]
    for a, b in zip(first, again.predict(images)):
        np.testing.assert_array_equal(a, b)

    # a fixed box threshold reuses the cached teacher detections and records both values
    fixed = BassCodeMethod(tta_scales=(1.0,), box_threshold=0.9)
    wd2 = tmp_path / "fixed"
    wd2.mkdir()
    (wd2 / "pl_detections.npz").write_bytes((tmp_path / "pl_detections.npz").read_bytes())
    fixed.teacher_workdir = tmp_path / "teacher"
    fixed.fit(data, profile=profile, seed=0, device="cpu", workdir=wd2, progress=False)
    fpl = fixed.fit_info["pseudo_labels"]
    assert fpl["box_threshold"] == 0.9 and fpl["auto_threshold"] == pl["box_threshold"]
    assert fpl["detections_cached"] and fixed.fit_info["teacher"]["source"] == "teacher_workdir"
    assert fpl["n_pl_instances"] <= pl["n_pl_instances"]


@pytest.mark.slow
def test_runner_end_to_end_bass_and_maskrcnn_share_the_teacher(tmp_path, monkeypatch, capsys):
    from benchmark.check import tiny_profile_args
    from benchmark.cli import main

    monkeypatch.setenv("NUCLEI_SSL_BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    rc = main(["run", "--methods", "bass,maskrcnn", "--datasets", "synthetic", "--ratios", "1/8", "--out", str(out),
               "--quiet", "--device", "cpu", *tiny_profile_args(iterations=20, checkpoint_every=20)])
    assert rc == 0
    done = {p.parent.parent.name: p for p in out.rglob("done.json")}
    assert set(done) == {"bass", "maskrcnn"}
    teacher_dir = done["maskrcnn"].parent
    bass = json.loads(done["bass"].read_text())
    info = bass["fit_info"]
    # the teacher was trained once, by the maskrcnn cell, and reused by bass
    assert info["teacher"]["source"] == "teacher_workdir"
    assert Path(info["teacher"]["workdir"]) == teacher_dir / "work"
    assert not (done["bass"].parent / "work" / "teacher").exists()
    models = sorted(str(p.relative_to(out)) for p in out.rglob("model.pt"))
    assert len(models) == 2 and sum("/maskrcnn/" in m for m in models) == 1  # one teacher, one student
    pl = info["pseudo_labels"]
    assert 0.10 <= pl["box_threshold"] <= 1.0 and pl["n_unlabeled"] == bass["n_unlabeled"] > 0
    assert info["student"]["iterations"] == 20
    for d in done.values():
        summary = json.loads(d.read_text())["summary"]["patch"]["mean"]
        assert 0.0 <= summary["aji"] <= 1.0
    maskrcnn = json.loads(done["maskrcnn"].read_text())
    print(f"smoke e2e: AJI bass {bass['summary']['patch']['mean']['aji']:.4f} vs maskrcnn "
          f"{maskrcnn['summary']['patch']['mean']['aji']:.4f}; box threshold {pl['box_threshold']} "
          f"(labeled mean {pl['labeled_mean_count']:.2f} nuclei/patch)")

    # published without work/ (as committed stores are): a new student cell of this teacher exits 2 before
    # training and names the missing file and the fix, instead of silently retraining another teacher
    shutil.rmtree(teacher_dir / "work")
    capsys.readouterr()
    new_cell = ["run", "--methods", "bass", "--datasets", "synthetic", "--ratios", "1/8", "--out", str(out),
                "--quiet", "--device", "cpu", "--set", "bass.alpha=0.5",
                *tiny_profile_args(iterations=20, checkpoint_every=20)]
    assert main(new_cell) == 2
    err = capsys.readouterr().err
    assert "kept no weights" in err and str(teacher_dir / "work" / "model.pt") in err and "--force" in err
    assert len(list(out.rglob("bass/*/done.json"))) == 1 and (teacher_dir / "done.json").is_file()

