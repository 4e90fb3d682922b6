"""The contract every method honours.

A *method* is a class with ``fit(data, ...)`` and ``predict(images)``. The harness never looks inside it:
it hands over a :class:`TrainData` (labeled patches with instance maps, unlabeled patches with images
only) and asks for int32 instance maps back. This module imports neither torch nor any method, so
``benchmark list`` stays fast and plugins can depend on it cheaply.

Plugin authors subclass :class:`Method`, register it through the ``nuclei_ssl_bench.methods`` entry-point
group, and run ``python -m benchmark check-method NAME`` (or :func:`benchmark.check.check_method`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from benchmark import options as _options

API_VERSION = 1

#: Extra supervision a method may declare on the *unlabeled* patches. The runner derives them from the
#: unlabeled patches' ground truth only for methods that declare them (``Method.needs``).
KNOWN_NEEDS = frozenset({"points", "boxes"})


@dataclasses.dataclass(frozen=True)
class Patch:
    """One training or evaluation patch.

    Attributes:
        id (str): stable identifier, ``"<image name>@<row>_<col>"`` for patches cut from an image.
        image (np.ndarray): ``uint8`` array of shape ``(H, W, 3)``, RGB.
        label (np.ndarray | None): ``int32`` instance map of shape ``(H, W)``, 0 = background,
            1..N = instances; ``None`` for an unlabeled patch.
        points (np.ndarray | None): ``float32 (N, 2)`` nucleus centroids as ``(row, col)``; only present
            on unlabeled patches given to a method that declares ``needs={"points"}``.
        boxes (np.ndarray | None): ``float32 (N, 4)`` nucleus boxes ``(x1, y1, x2, y2)`` in pixels
            (x2/y2 exclusive); only for methods that declare ``needs={"boxes"}``.
    """

    id: str
    image: np.ndarray
    label: np.ndarray | None = None
    points: np.ndarray | None = None
    boxes: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class TrainData:
    """What ``Method.fit`` receives.

    Attributes:
        labeled: patches with ``label`` set.
        unlabeled: patches with ``label=None`` (plus ``points``/``boxes`` if the method declared them).
        val: labeled validation patches (may be empty). Methods may use them for model selection only.
    """

    labeled: Sequence[Patch]
    unlabeled: Sequence[Patch] = ()
    val: Sequence[Patch] = ()

    def require(self, method: str, need: str | None = None) -> tuple[list[Patch], list[Patch]]:
        """``(labeled, unlabeled)`` as lists, checked for a method that trains on them.

        ``labeled`` keeps the patches with a label; none at all is a ``ValueError``. With ``need``
        (``"points"`` or ``"boxes"``), every unlabeled patch must carry that weak label, else a
        ``ValueError`` names the patch and says who provides it.
        """
        labeled = [p for p in self.labeled if p.label is not None]
        if not labeled:
            raise ValueError(f"{method}: no labeled patches to train on")
        unlabeled = list(self.unlabeled)
        if need is not None:
            if need not in KNOWN_NEEDS:
                raise ValueError(f"unknown need {need!r}; known: {sorted(KNOWN_NEEDS)}")
            for p in unlabeled:
                if getattr(p, need) is None:
                    raise ValueError(
                        f"{method}: unlabeled patch {p.id!r} has no {need}; this method declares "
                        f"needs={{{need!r}}} and needs them on every unlabeled patch (the runner and "
                        f"check-method provide them)"
                    )
        return labeled, unlabeled


ProgressFn = Callable[[str], None]


class Method(abc.ABC):
    """Base class of every method.

    Subclasses set the class attributes and implement :meth:`fit` and :meth:`predict`. The constructor
    takes keyword options (method hyper-parameters), coerced and validated through :attr:`Options`;
    ``self.opts`` holds the typed instance, ``self.options`` the same values as a dict, and ``config()``
    returns them JSON-serialisable, so every result records exactly what ran.

    Class attributes:
        name: registry name (lower case, ``-`` separated).
        description: one line shown by ``benchmark list``.
        needs: extra supervision on unlabeled patches (subset of ``{"points", "boxes"}``).
        approximation: one line saying how this re-implementation departs from the published method,
            or ``None`` when it is faithful.
        deep: ``True`` for methods that train a neural network (they honour the training profile).
        uses_unlabeled: ``False`` for supervised-only methods (shown as ``L`` by ``benchmark list``).
        version: bump when a change alters results; it enters the result cache key.
        Options: the frozen dataclass declaring the options (see :mod:`benchmark.options`).
        family, ablation, table_order, report_sweeps: what reports read from the registry (``--set``
            family, Table 2 label, row order, sweep tables); a new method needs no report edit.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    approximation: ClassVar[str | None] = None
    deep: ClassVar[bool] = False
    uses_unlabeled: ClassVar[bool] = True
    version: ClassVar[str] = "1"
    api_version: ClassVar[int] = API_VERSION
    #: the method's options: a frozen dataclass whose fields are made with :func:`benchmark.options.option`
    #: (default, type, allowed values or range, one-line help). CLI strings (``--set bass.alpha=0.3``) are
    #: coerced and validated through it, unknown options are refused, and ``config()`` returns its values.
    #: ``None``: the method takes no declared options (any keyword is accepted and recorded as given).
    Options: ClassVar[type | None] = None
    #: ``{option: default}``, derived from :attr:`Options` (read-only view for listings and tests). An older
    #: plugin may set this dict instead of :attr:`Options`; the option types are then inferred from it.
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: name of the registered method whose trained model this method starts from (e.g. BASS's
    #: teacher is ``"maskrcnn"``). The runner trains that cell first and sets :attr:`teacher_workdir`.
    teacher: ClassVar[str | None] = None
    #: ``--set FAMILY.option=value`` reaches every method of a family (``bass`` for all BASS variants).
    family: ClassVar[str | None] = None
    #: the components this method keeps in an ablation table (Table 2), joined by ``" + "``, e.g.
    #: ``"NMH + LRD"``; ``None``: not an ablation row. Reports read it from the registry.
    ablation: ClassVar[str | None] = None
    #: position of this method's rows in report tables (lower first; ties by name).
    table_order: ClassVar[int] = 1000
    #: options whose sweeps get a report table: ``{option: title}`` (BASS: Tables 3/4, Figs. 3/4).
    report_sweeps: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("Options") is not None:
            cls.defaults = _options.defaults_of(cls.Options)
        elif cls.__dict__.get("defaults"):
            cls.Options = _options.from_defaults(cls.defaults, f"{cls.__name__}Options")

    def __init__(self, **options: Any) -> None:
        if self.Options is not None:
            #: the validated, typed options (a frozen :attr:`Options` instance).
            self.opts = _options.build(self.Options, options, owner=self.name or type(self).__name__)
            self.options = _options.as_dict(self.opts)
        else:
            self.opts = None
            self.options = dict(options)
        #: set by the runner for methods with a ``teacher``: the finished teacher cell's workdir.
        self.teacher_workdir: Path | None = None

    def config(self) -> dict[str, Any]:
        """JSON-serialisable hyper-parameters of this instance (recorded with every result)."""
        return {k: _options.json_value(v) for k, v in self.options.items()}

    @abc.abstractmethod
    def fit(
        self,
        data: TrainData,
        *,
        profile: Any,
        seed: int,
        device: str,
        workdir: Path,
        progress: bool = True,
    ) -> None:
        """Train on ``data``.

        Args:
            data: labeled / unlabeled / val patches.
            profile: a :class:`benchmark.profiles.Profile` (schedule, input size, backbone).
            seed: every random choice must derive from it; same seed + CPU => same model.
            device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (already resolved, never ``"auto"``).
            workdir: an existing directory owned by this fit; checkpoints go here so that an
                interrupted fit resumes when called again with the same ``workdir``.
            progress: show a progress bar.
        """

    @abc.abstractmethod
    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return one ``int32`` instance map of shape ``(H, W)`` per ``uint8 (H, W, 3)`` image.

        0 is background, instances are labelled ``1..N`` (no gaps required but allowed).
        """

    def teardown(self) -> None:  # pragma: no cover - optional hook
        """Release large resources (GPU memory) after prediction."""


def supervision_label(method_cls: type[Method]) -> str:
    """Human-readable supervision a method needs, e.g. ``"L+U"`` or ``"L+U +points"``."""
    extra = "".join(f" +{n}" for n in sorted(method_cls.needs))
    return ("L+U" if method_cls.uses_unlabeled else "L") + extra
