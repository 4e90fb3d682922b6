"""``check_method``: a conformance kit for method authors (like scikit-learn's ``check_estimator``).

Run it on your plugin before publishing::

    python -m benchmark check-method my-method
    # or, in your own tests:
    from benchmark.check import check_method
    report = check_method(MyMethod)
    assert report.passed, report.format()

It fits the method on a tiny synthetic split (a few 256×256 patches of the built-in ``synthetic``
dataset, with points/boxes on the unlabeled patches if the method declares it needs them), then checks
the output contract of ``predict``: one ``int32 (H, W)`` map per image, 0 = background, non-negative
ids, inputs not modified, other image sizes handled, a blank image handled, and determinism (two fits
with the same seed predict the same maps).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.api import API_VERSION, KNOWN_NEEDS, Method, Patch, TrainData
from benchmark.profiles import Profile, get_profile


@dataclasses.dataclass
class CheckResult:
    name: str
    passed: bool
    message: str = ""
    fatal: bool = True


@dataclasses.dataclass
class CheckReport:
    """Outcome of :func:`check_method`. ``passed`` is ``False`` if any fatal check failed."""

    method: str
    results: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results if r.fatal)

    def format(self) -> str:
        lines = [f"check-method {self.method}:"]
        for r in self.results:
            mark = "PASS" if r.passed else ("FAIL" if r.fatal else "WARN")
            lines.append(f"  [{mark}] {r.name}" + (f": {r.message}" if r.message else ""))
        lines.append("OK" if self.passed else "FAILED")
        return "\n".join(lines)


def tiny_split(seed: int = 0, n_labeled: int = 4, n_unlabeled: int = 4, needs=frozenset()) -> TrainData:
    """A tiny split cut from the synthetic dataset (256×256 patches)."""
    from benchmark.data.points import instance_boxes, instance_points
    from benchmark.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(n_images=4, size=512, seed=seed)
    patches = []
    for name in ds.image_names():
        rec = ds.load(name)
        for r, c in ((0, 0), (256, 256)):
            patches.append(
                (f"{name}@{r}_{c}", rec.image[r : r + 256, c : c + 256], rec.label[r : r + 256, c : c + 256])
            )
    labeled = [Patch(pid, img, lab) for pid, img, lab in patches[:n_labeled]]
    unlabeled = []
    for pid, img, lab in patches[n_labeled : n_labeled + n_unlabeled]:
        unlabeled.append(
            Patch(
                pid,
                img,
                None,
                points=instance_points(lab) if "points" in needs else None,
                boxes=instance_boxes(lab) if "boxes" in needs else None,
            )
        )
    return TrainData(labeled=labeled, unlabeled=unlabeled)


#: Profile fields that shrink ``smoke`` to a toy network: the kit checks the contract, not accuracy, and a
#: check then costs seconds instead of minutes on 2 CPU cores.
TINY_PROFILE_FIELDS: dict[str, int] = {
    "input_size": 128, "iterations": 6, "warmup_iters": 2, "checkpoint_every": 3,
    "rpn_post_nms_top_n_train": 64, "rpn_post_nms_top_n_test": 64, "fpn_channels": 64,
    "box_batch_size_per_image": 32, "box_head_dim": 64, "mask_head_channels": 32,
    "detections_per_img": 30, "eval_batch_size": 2,
}


def check_profile(**overrides: Any) -> Profile:
    """``smoke`` with :data:`TINY_PROFILE_FIELDS` (then ``overrides``): what ``check_method`` trains with."""
    return get_profile("smoke").replace(**{**TINY_PROFILE_FIELDS, **overrides})


def tiny_profile_args(**overrides: Any) -> list[str]:
    """The same toy profile as ``benchmark run`` arguments (``--profile smoke --set profile.F=V ...``),
    for end-to-end tests of a method through the CLI."""
    args = ["--profile", "smoke"]
    for k, v in {**TINY_PROFILE_FIELDS, **overrides}.items():
        args += ["--set", f"profile.{k}={v}"]
    return args


def check_method(
    method: type[Method] | str,
    *,
    options: dict | None = None,
    seed: int = 0,
    device: str = "cpu",
    profile: Profile | None = None,
    determinism: bool = True,
    echo: Callable[[str], None] | None = None,
) -> CheckReport:
    """Run the conformance checks on ``method`` (a class or a registered name)."""
    from benchmark.catalog import get_method

    cls = get_method(method) if isinstance(method, str) else method
    profile = profile or check_profile()
    options = options or {}
    results: list[CheckResult] = []
    say = echo or (lambda m: None)

    def check(name: str, fn: Callable[[], str | None], fatal: bool = True) -> bool:
        say(f"  {name} ...")
        try:
            msg = fn() or ""
            results.append(CheckResult(name, True, msg, fatal))
            return True
        except Exception as exc:  # noqa: BLE001 - every failure is a check result
            detail = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, AssertionError):
                detail += "\n" + "".join(traceback.format_exc(limit=3))
            results.append(CheckResult(name, False, detail, fatal))
            return False

    def attrs() -> None:
        assert isinstance(cls, type) and issubclass(cls, Method), "must subclass benchmark.api.Method"
        assert isinstance(cls.name, str) and cls.name, "class attribute 'name' must be a non-empty str"
        assert isinstance(cls.description, str) and cls.description, "set a one-line 'description'"
        assert set(cls.needs) <= KNOWN_NEEDS, f"needs must be a subset of {sorted(KNOWN_NEEDS)}"
        assert cls.api_version == API_VERSION, f"api_version {cls.api_version} != {API_VERSION}"

    if not check("class attributes", attrs):
        return CheckReport(getattr(cls, "name", str(cls)), results)

    state: dict = {}

    def construct() -> None:
        m = cls(**options)
        json.dumps(m.config())
        state["m"] = m

    if not check("constructor and JSON-serialisable config()", construct):
        return CheckReport(cls.name, results)

    data = tiny_split(seed=0, needs=frozenset(cls.needs))
    tmp = Path(tempfile.mkdtemp(prefix="check-method-"))

    def fit_one(m: Method, sub: str) -> None:
        if cls.teacher:
            # one teacher serves both fits (as the runner shares a teacher cell): the determinism check
            # is about this method; the teacher's own kit checks the teacher
            tdir = tmp / "teacher"
            if not tdir.is_dir():
                from benchmark.catalog import get_method as gm

                tdir.mkdir()
                gm(cls.teacher)().fit(data, profile=profile, seed=seed, device=device, workdir=tdir,
                                      progress=False)
            m.teacher_workdir = tdir
        wd = tmp / sub
        wd.mkdir(exist_ok=True)
        m.fit(data, profile=profile, seed=seed, device=device, workdir=wd, progress=False)

    if not check("fit on a tiny synthetic split", lambda: fit_one(state["m"], "a")):
        return CheckReport(cls.name, results)

    rng = np.random.default_rng(seed)
    images = [p.image.copy() for p in data.labeled[:2]]
    originals = [im.copy() for im in images]

    def contract() -> str:
        preds = state["m"].predict(images)
        assert isinstance(preds, list), f"predict must return a list, got {type(preds).__name__}"
        assert len(preds) == len(images), f"{len(preds)} maps for {len(images)} images"
        n = []
        for im, p in zip(images, preds):
            assert isinstance(p, np.ndarray), f"maps must be np.ndarray, got {type(p).__name__}"
            assert p.dtype == np.int32, f"maps must be int32, got {p.dtype}"
            assert p.shape == im.shape[:2], f"map shape {p.shape} != image shape {im.shape[:2]}"
            assert p.min() >= 0, "instance ids must be >= 0 (0 = background)"
            n.append(len(np.unique(p[p > 0])))
        for im, o in zip(images, originals):
            assert np.array_equal(im, o), "predict modified its input images"
        state["preds"] = preds
        return f"instances per image: {n}"

    check("predict output contract (list of int32 (H, W), 0 = background, inputs untouched)", contract)

    def other_size() -> None:
        img = data.labeled[0].image[:200, :232].copy()
        (p,) = state["m"].predict([img])
        assert p.shape == (200, 232) and p.dtype == np.int32, f"got {p.shape} {p.dtype} for 200x232"

    check("non-square / non-256 image sizes", other_size)

    def blank() -> str:
        white = np.full((256, 256, 3), 255, np.uint8)
        noise = rng.integers(200, 256, (256, 256, 3), dtype=np.uint8)
        pw, pn = state["m"].predict([white, noise])
        for p in (pw, pn):
            assert p.shape == (256, 256) and p.dtype == np.int32
        return f"white: {len(np.unique(pw[pw > 0]))} instances, near-white noise: {len(np.unique(pn[pn > 0]))}"

    check("blank images (white, near-white noise)", blank)

    def blank_empty() -> None:
        (p,) = state["m"].predict([np.full((256, 256, 3), 255, np.uint8)])
        assert not p.any(), f"{len(np.unique(p[p > 0]))} instances predicted on a pure white image"

    check("no instances on a pure white image", blank_empty, fatal=False)

    def empty_list() -> None:
        out = state["m"].predict([])
        assert list(out) == [], f"predict([]) returned {out!r}"

    check("predict([]) returns []", empty_list)

    if determinism and "preds" in state:

        def deterministic() -> None:
            m2 = cls(**options)
            fit_one(m2, "b")
            preds2 = m2.predict(images)
            for a, b in zip(state["preds"], preds2):
                assert np.array_equal(a, b), "two fits with the same seed gave different predictions"

        check("determinism (same seed, two fits, same predictions)", deterministic)

    return CheckReport(cls.name, results)
