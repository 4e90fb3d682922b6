"""The shared fit / predict / load / teardown cycle (methods.core.lifecycle) on a real, untrained Mask R-CNN."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmark.check import check_profile, tiny_split
from methods.core.checkpoint import CheckpointError
from methods.core.helpers import digest_parts, image_to_tensor, stable_hash
from methods.core.lifecycle import MaskRCNNLifecycle, Trained
from methods.core.model import build_model
from methods.core.persist import data_digest


class Toy(MaskRCNNLifecycle):
    """Builds (does not train) a model; a fake training checkpoint stands in for the loop's."""

    name = "toy"
    description = "lifecycle test double on a real model"
    defaults = {"score_thresh": 0.0, "mask_thresh": 0.5, "dilate": 0, "min_area": 1, "width": 1}
    trained = 0

    def model_key(self, run):
        return {"seed": run.seed, "width": self.options["width"], "data": data_digest(run.labeled),
                "tuple": (1, 2)}

    def train_new(self, run, key):
        Toy.trained += 1
        torch.manual_seed(run.seed)
        model = build_model(run.profile)
        ckpt = run.workdir / "toy_checkpoint.pt"
        ckpt.write_bytes(b"optimizer state")
        history = [{"loss": 1.23456789, "lr": 0.1}, {"loss": float("nan"), "lr": 0.1}]
        return Trained(model=model, meta={"key": key, "note": "trained"}, history=history, checkpoint=ckpt)


@pytest.fixture(scope="module")
def data():
    return tiny_split(n_labeled=2, n_unlabeled=0)


def test_fit_saves_writes_history_and_deletes_the_checkpoint_then_reuses(data, tmp_path):
    profile = check_profile()
    Toy.trained = 0
    m = Toy()
    m.fit(data, profile=profile, seed=0, device="cpu", workdir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pt", "train_history.json"]
    assert json.loads((tmp_path / "train_history.json").read_text()) == {
        "columns": ["loss", "lr"], "rows": [[1.234568, 0.1], [None, 0.1]]}
    assert json.loads((tmp_path / "model.json").read_text())["note"] == "trained"
    assert m.fit_info["note"] == "trained"
    images = [p.image for p in data.labeled]
    first = m.predict(images)
    assert [p.shape for p in first] == [im.shape[:2] for im in images] and first[0].dtype == np.int32

    again = Toy()  # same key (a tuple in it reads back as a list): model.pt is reused, nothing trains
    again.fit(data, profile=profile, seed=0, device="cpu", workdir=tmp_path, progress=False)
    assert Toy.trained == 1 and again.fit_info["key"]["tuple"] == [1, 2]
    assert all(np.array_equal(a, b) for a, b in zip(first, again.predict(images)))

    with pytest.raises(CheckpointError, match="different settings"):
        Toy(width=2).fit(data, profile=profile, seed=0, device="cpu", workdir=tmp_path, progress=False)

    loaded = Toy()
    loaded.load(tmp_path)
    assert loaded.fit_info["note"] == "trained"
    assert all(np.array_equal(a, b) for a, b in zip(first, loaded.predict(images)))
    loaded.teardown()
    assert loaded.model is None
    with pytest.raises(RuntimeError, match="call fit"):
        loaded.predict(images)


def test_shared_helpers_keep_the_cache_keys():
    """The digests that name existing caches (PL keys, checkpoint fingerprints, PointWSSIS's cache) are
    the ones the per-method copies computed before they were merged (values taken from those copies)."""
    from methods.core.train import _fingerprint

    assert stable_hash({"b": 1, "a": (1, 2)}) == "3813f9409eb0095b"
    assert digest_parts(np.arange(6, dtype=np.int32).reshape(2, 3), "id") == "6330472f34c51b2f"
    assert _fingerprint(seed=0, stage="x") == "5e33f04bdd192559"
    assert digest_parts({"k": 1}) == stable_hash({"k": 1})


def test_image_to_tensor_checks_and_scales():
    img = np.full((4, 5, 3), 255, np.uint8)
    t = image_to_tensor(img, 0)
    assert t.shape == (3, 4, 5) and t.dtype == torch.float32 and float(t.max()) == 1.0
    with pytest.raises(ValueError, match=r"unlabeled image #3: expected a uint8 \(H, W, 3\)"):
        image_to_tensor(img.astype(np.float32), 3, what="unlabeled image")
