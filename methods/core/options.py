"""Option declarations shared by several methods (see :mod:`benchmark.options` for how they work).

- :class:`RuleOptions`: the detections -> instance-map rule of every Mask R-CNN-based method;
- :class:`SupervisedOptions`: the supervised ``maskrcnn`` trainer (also every teacher);
- :class:`PseudoLabelOptions`: the offline pseudo-label pipeline and its student (BASS, NoisyBoundary).

A method extends one of them with its own fields (a frozen dataclass subclass); variants change defaults
with :func:`benchmark.options.with_defaults`.
"""

from __future__ import annotations

import dataclasses

from benchmark.options import option


@dataclasses.dataclass(frozen=True)
class RuleOptions:
    """The shared detections -> instance map rule (``methods.core.inference``)."""

    score_thresh: float = option(0.5, "minimum detection score painted into the instance map", low=0.0, high=1.0)
    mask_thresh: float = option(0.5, "pixel threshold on mask probabilities", low=0.0, high=1.0)
    dilate: int = option(0, "dilate each mask by this many pixels before painting (BASS code: 1)", low=0)
    min_area: int = option(5, "instances with fewer visible pixels are dropped", low=0)


@dataclasses.dataclass(frozen=True)
class SupervisedOptions(RuleOptions):
    """Options of the supervised Mask R-CNN (``maskrcnn`` and every teacher)."""

    augment: bool = option(True, "flips, 90-degree rotations and colour jitter during training")


@dataclasses.dataclass(frozen=True)
class PseudoLabelOptions(RuleOptions):
    """Options of :class:`methods.core.pseudolabels.PseudoLabelStudentMethod` (pseudo-labels, student)."""

    box_threshold: float | str = option(
        "auto", "teacher box-score threshold v_b: 'auto' = count matching, or a fixed value",
        low=0.0, high=1.0, keywords=("auto",),
    )
    pixel_threshold: float = option(0.5, "v_p on the teacher's mask probabilities", low=0.0, high=1.0)
    tta: bool = option(False, "test-time augmentation when pseudo-labelling")
    tta_flips: tuple[str, ...] = option(("h", "v"), "TTA flips (comma-separated)", choices=("h", "v", "hv"))
    tta_scales: tuple[float, ...] = option((1.0,), "TTA scales (comma-separated)", low=0.0, low_open=True)
    pl_min_area: int = option(5, "pseudo-label instances with fewer pixels are dropped", low=0)
    labeled_repeat: int = option(1, "times each labeled patch appears in the student's list (code: 19)", low=1)
    student_init: str = option(
        "scratch", "student starts from the profile's init or the teacher's weights", choices=("scratch", "teacher"),
    )
    weight_decay: float | str = option(
        "profile", "student SGD weight decay; 'profile' = the profile's (code: 1e-4)", low=0.0, keywords=("profile",),
    )
    augment: bool = option(True, "flips / 90-degree rotations / colour jitter during student training")
