"""``pointwssis``: point-guided pseudo-labels from a Mask R-CNN teacher (Kim et al., CVPR 2023).

Weakly semi-supervised (``+points``): besides the labeled patches, every unlabeled patch comes with one
point per nucleus (its centroid, derived by the runner from the unlabeled ground truth because the
method declares ``needs = {"points"}``; nothing else of that ground truth is seen).

Pipeline (a Mask R-CNN adaptation of the SOLOv2-based original):

1. **Teacher**: the supervised ``maskrcnn`` method on the labeled patches. The runner trains that cell
   first and sets :attr:`PointWSSISMethod.teacher_workdir`; without it (``check-method``, direct use)
   the teacher is trained into ``workdir/"teacher"`` (a finished teacher there is loaded, not retrained).
2. **Candidates** (:func:`point_candidates`): the teacher runs on every unlabeled patch with its score
   threshold lowered to ``candidate_score`` (default 0.001: score thresholds are ignored, the points
   decide) and its detection cap raised to at least ``candidate_cap``. Only detections whose box contains
   a point (2 px tolerance) go through the mask head and are pasted, which keeps this affordable on a
   CPU. A candidate's binary mask is its soft mask ``>= mask_thresh``; candidates with fewer than
   ``min_area`` mask pixels are discarded.
3. **Point-to-detection matching** (:func:`match_points`), one mask per point. A pair (point, detection)
   is a candidate when the detection's binary mask contains the point's pixel (tier "mask") or, failing
   that, its box contains the point (tier "box"). Each detection serves at most one point. Conflicts
   are resolved greedily over all candidate pairs sorted by (tier: mask before box; higher detection
   score; point closer to the detection's box centre; lower indices): a pair is taken when both its
   point and its detection are still free, so a point that loses its best detection falls back to its
   next candidate. This replaces SOLOv2's "kernel at the grid cell containing the point".
4. **Fallback** (option ``fallback_box``, default on): for a point with no candidate, the teacher's mask
   head runs on a box centred at the point, sized by the median width/height of the labeled nuclei
   (:func:`mask_probs_for_boxes`: backbone + mask RoIAlign + mask branch on given boxes, the box head is
   not involved). Points whose mask is still empty (or ends up below ``min_area`` visible pixels after
   overlaps) become **box-only instances** with that median-sized box: they train the RPN and the box
   head but get no mask loss (``mask_valid`` False), instead of being taught as background.
5. **Pseudo-label maps**: the selected masks are painted into one instance map per patch, fallback
   masks first and then matched masks in increasing score order (higher scores win overlaps); pieces
   below ``min_area`` are dropped (step 4).
6. **Student**: a fresh Mask R-CNN (the profile's initialisation, seeded) trained with the shared loop on
   labeled patches plus pseudo-labelled patches, one pool, for ``profile.iterations`` iterations.

Optional (``refine=True``, off by default, so the default is the spec's "smallest faithful variant"):
a small **MaskRefineNet** (:mod:`methods.pointwssis.refine`; U-Net on 64x64 crops of RGB + Gaussian point
heat-map, sigma 6 + rough mask) trained for ``refine_iters`` Adam steps on the labeled patches, with the
teacher's own point-selected masks (points = labeled centroids) as rough masks and the ground truth as
target, then applied to every pseudo mask between steps 4 and 5 (a refinement with fewer than
``min_area`` pixels keeps the rough mask; a point with no rough mask that gets one from the refiner counts
as ``fallback``).

Modules: :mod:`~methods.pointwssis.matching` (matching, painting; numpy only),
:mod:`~methods.pointwssis.teacher` (candidate detections, mask head on boxes),
:mod:`~methods.pointwssis.refine` (MaskRefineNet), :mod:`~methods.pointwssis.method` (the method).

Workdir layout: ``teacher/`` (when trained here), ``pseudo_labels.npz`` (+ ``.json`` with statistics;
reused by a re-run with the same teacher, options and data), ``student_checkpoint.pt`` (an interrupted
student resumes from it; deleted once the finished student is saved), ``model.pt``/``model.json`` (the
finished student, reloaded by a second ``fit`` with the same settings instead of retraining; other
settings raise ``CheckpointError``), ``student_history.json`` (losses, lr, gradient norm per iteration).
"""

from .matching import NONE, VIA_BOX, VIA_MASK, PointMatch, match_points, median_nucleus_size, paint_pseudo_label, point_boxes
from .method import PointWSSISMethod
from .teacher import mask_probs_for_boxes, point_candidates

__all__ = [
    "NONE", "VIA_BOX", "VIA_MASK", "PointMatch", "PointWSSISMethod", "mask_probs_for_boxes", "match_points",
    "median_nucleus_size", "paint_pseudo_label", "point_boxes", "point_candidates",
]
