"""``check_method``: a conformance kit for method authors (like scikit-learn's ``check_estimator``).

Run it on your plugin before publishing::

    python -m benchmark check-method my-method
    # or, in your own tests:
    from benchmark.check import check_method
    report = check_method(MyMethod)
    assert report.passed, report.format()

Each property is its own function (``check_fit``, ``check_predict_contract``, ``check_deterministic``, ...),
listed in :data:`CHECKS`; run one alone with ``check_method(MyMethod, checks=["deterministic"])`` or
``python -m benchmark check-method my-method --check deterministic``.

It fits the method on a tiny synthetic split (a few 256×256 patches of the built-in ``synthetic``
dataset, with points/boxes on the unlabeled patches if the method declares it needs them), then checks
the output contract of ``predict``: one ``int32 (H, W)`` map per image, 0 = background, non-negative
ids, inputs not modified, other image sizes handled, a blank image handled, and determinism (two fits
with the same seed predict the same maps).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
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


# ------------------------------------------------------------------------------------ the checks
@dataclasses.dataclass
class CheckContext:
    """What the checks share: the method class and fit settings, the tiny split, a temporary folder, and
    (made on first use, so that any single check can run alone) the fitted instance and its predictions."""

    cls: Any
    options: dict
    seed: int
    device: str
    profile: Profile
    tmp: Path
    _data: TrainData | None = None
    _fitted: Method | None = None
    _preds: list | None = None

    @property
    def data(self) -> TrainData:
        if self._data is None:
            self._data = tiny_split(seed=0, needs=frozenset(self.cls.needs))
        return self._data

    @property
    def images(self) -> list[np.ndarray]:
        """The two images every prediction check uses (copies; the split's own arrays stay untouched)."""
        return [p.image.copy() for p in self.data.labeled[:2]]

    def fit_one(self, m: Method, sub: str) -> None:
        """Fit ``m`` in ``tmp/sub``; one teacher (fitted once, as the runner shares a teacher cell) serves
        every fit: the determinism check is about this method, the teacher's own kit checks the teacher."""
        if self.cls.teacher:
            tdir = self.tmp / "teacher"
            if not tdir.is_dir():
                from benchmark.catalog import get_method

                tdir.mkdir()
                get_method(self.cls.teacher)().fit(self.data, profile=self.profile, seed=self.seed,
                                                   device=self.device, workdir=tdir, progress=False)
            m.teacher_workdir = tdir
        wd = self.tmp / sub
        wd.mkdir(exist_ok=True)
        m.fit(self.data, profile=self.profile, seed=self.seed, device=self.device, workdir=wd, progress=False)

    def fitted(self) -> Method:
        """The instance fitted in ``tmp/a`` (constructed and fitted on first use)."""
        if self._fitted is None:
            m = self.cls(**self.options)
            self.fit_one(m, "a")
            self._fitted = m
        return self._fitted

    def predictions(self) -> list:
        """The fitted instance's maps of :attr:`images` (computed once)."""
        if self._preds is None:
            self._preds = self.fitted().predict(self.images)
        return self._preds


def check_class_attributes(ctx: CheckContext) -> None:
    """The class subclasses ``Method`` and declares ``name``, ``description``, known ``needs``, ``api_version``."""
    cls = ctx.cls
    assert isinstance(cls, type) and issubclass(cls, Method), "must subclass benchmark.api.Method"
    assert isinstance(cls.name, str) and cls.name, "class attribute 'name' must be a non-empty str"
    assert isinstance(cls.description, str) and cls.description, "set a one-line 'description'"
    assert set(cls.needs) <= KNOWN_NEEDS, f"needs must be a subset of {sorted(KNOWN_NEEDS)}"
    assert cls.api_version == API_VERSION, f"api_version {cls.api_version} != {API_VERSION}"


def check_constructor(ctx: CheckContext) -> None:
    """The constructor accepts the options and ``config()`` is JSON-serialisable."""
    json.dumps(ctx.cls(**ctx.options).config())


def check_fit(ctx: CheckContext) -> None:
    """``fit`` runs on the tiny synthetic split (with the method's declared weak labels)."""
    ctx.fitted()


def check_predict_contract(ctx: CheckContext) -> str:
    """``predict`` returns a list of ``int32 (H, W)`` maps, ids >= 0, and leaves its inputs untouched."""
    m = ctx.fitted()
    images = ctx.images
    originals = [im.copy() for im in images]
    preds = m.predict(images)
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
    ctx._preds = preds
    return f"instances per image: {n}"


def check_other_sizes(ctx: CheckContext) -> None:
    """A non-square, non-256 image gets a map of its own size."""
    img = ctx.data.labeled[0].image[:200, :232].copy()
    (p,) = ctx.fitted().predict([img])
    assert p.shape == (200, 232) and p.dtype == np.int32, f"got {p.shape} {p.dtype} for 200x232"


def check_blank_images(ctx: CheckContext) -> str:
    """A white and a near-white noise image are handled (one int32 map each)."""
    rng = np.random.default_rng(ctx.seed)
    white = np.full((256, 256, 3), 255, np.uint8)
    noise = rng.integers(200, 256, (256, 256, 3), dtype=np.uint8)
    pw, pn = ctx.fitted().predict([white, noise])
    for p in (pw, pn):
        assert p.shape == (256, 256) and p.dtype == np.int32
    return f"white: {len(np.unique(pw[pw > 0]))} instances, near-white noise: {len(np.unique(pn[pn > 0]))}"


def check_white_image_empty(ctx: CheckContext) -> None:
    """No instances on a pure white image (a warning only: a toy model may still fire)."""
    (p,) = ctx.fitted().predict([np.full((256, 256, 3), 255, np.uint8)])
    assert not p.any(), f"{len(np.unique(p[p > 0]))} instances predicted on a pure white image"


def check_predict_empty(ctx: CheckContext) -> None:
    """``predict([])`` returns ``[]``."""
    out = ctx.fitted().predict([])
    assert list(out) == [], f"predict([]) returned {out!r}"


def check_deterministic(ctx: CheckContext) -> None:
    """Two fits with the same seed (in two workdirs) predict the same maps."""
    first = ctx.predictions()
    m2 = ctx.cls(**ctx.options)
    ctx.fit_one(m2, "b")
    for a, b in zip(first, m2.predict(ctx.images)):
        assert np.array_equal(a, b), "two fits with the same seed gave different predictions"


@dataclasses.dataclass(frozen=True)
class Check:
    """One named check: ``fn(ctx)`` raises (``AssertionError`` for a broken contract) or returns a note.

    ``fatal``: a failure fails the report (else a warning). ``stop``: a failure skips the later checks
    (they need what this one checks). ``slow``: it fits the method again (``determinism=False`` skips it).
    """

    name: str
    title: str
    fn: Callable[[CheckContext], str | None]
    fatal: bool = True
    stop: bool = False
    slow: bool = False


#: every check, in the order :func:`check_method` runs them
CHECKS: tuple[Check, ...] = (
    Check("class_attributes", "class attributes", check_class_attributes, stop=True),
    Check("constructor", "constructor and JSON-serialisable config()", check_constructor, stop=True),
    Check("fit", "fit on a tiny synthetic split", check_fit, stop=True),
    Check("predict_contract", "predict output contract (list of int32 (H, W), 0 = background, inputs untouched)",
          check_predict_contract),
    Check("other_sizes", "non-square / non-256 image sizes", check_other_sizes),
    Check("blank_images", "blank images (white, near-white noise)", check_blank_images),
    Check("white_image_empty", "no instances on a pure white image", check_white_image_empty, fatal=False),
    Check("predict_empty", "predict([]) returns []", check_predict_empty),
    Check("deterministic", "determinism (same seed, two fits, same predictions)", check_deterministic, slow=True),
)


def check_names() -> list[str]:
    """The names :func:`check_method` accepts in ``checks`` (and ``check-method --check``)."""
    return [c.name for c in CHECKS]


def iter_checks(checks: Sequence[str] | None = None) -> Iterator[Check]:
    """The :data:`CHECKS` named in ``checks`` (all when ``None``), in run order; an unknown name is a
    ``ValueError`` listing the known ones."""
    if checks is not None:
        unknown = sorted(set(checks) - set(check_names()))
        if unknown:
            raise ValueError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(check_names())}")
    yield from (c for c in CHECKS if checks is None or c.name in checks)


def run_check(check: Check, ctx: CheckContext) -> CheckResult:
    """Run one check; any exception becomes a failed :class:`CheckResult` (with a short traceback unless
    it is an ``AssertionError``)."""
    try:
        return CheckResult(check.title, True, check.fn(ctx) or "", check.fatal)
    except Exception as exc:  # noqa: BLE001 - every failure is a check result
        detail = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, AssertionError):
            detail += "\n" + "".join(traceback.format_exc(limit=3))
        return CheckResult(check.title, False, detail, check.fatal)


def check_method(
    method: type[Method] | str,
    *,
    options: dict | None = None,
    seed: int = 0,
    device: str = "cpu",
    profile: Profile | None = None,
    determinism: bool = True,
    echo: Callable[[str], None] | None = None,
    checks: Sequence[str] | None = None,
) -> CheckReport:
    """Run the conformance checks on ``method`` (a class or a registered name).

    ``checks``: names from :func:`check_names` to run alone (what they need, such as a fitted method, is
    made on the way); default all. ``determinism=False`` skips the second fit. The temporary workdirs
    are removed afterwards.
    """
    from benchmark.catalog import get_method

    cls = get_method(method) if isinstance(method, str) else method
    selected = list(iter_checks(checks))
    say = echo or (lambda m: None)
    results: list[CheckResult] = []
    tmp = Path(tempfile.mkdtemp(prefix="check-method-"))
    ctx = CheckContext(cls=cls, options=dict(options or {}), seed=seed, device=device,
                       profile=profile or check_profile(), tmp=tmp)
    try:
        for check in selected:
            if check.slow and not determinism:
                continue
            say(f"  {check.title} ...")
            results.append(run_check(check, ctx))
            if check.stop and not results[-1].passed:
                break
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CheckReport(getattr(cls, "name", str(cls)), results)
