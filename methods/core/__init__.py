"""Shared infrastructure of the Mask R-CNN-based methods; method folders import only from here.

Modules:

- ``model.py`` / ``transform.py`` / ``heads.py``: class-agnostic torchvision Mask R-CNN configured by a
  training profile, with a pluggable mask branch (:class:`~methods.core.heads.MaskBranch`);
- ``targets.py`` / ``augment.py`` / ``train.py`` / ``checkpoint.py``: training samples, augmentation,
  the shared training loop with exact resume, atomic checkpoints;
- ``inference.py`` / ``instances.py``: batched inference and the detections -> instance map rule;
- ``persist.py`` / ``supervised.py``: ``model.pt`` saving/loading and the supervised trainer (teacher);
- ``pseudolabels.py``: the offline teacher -> pseudo-label -> student pipeline (count matching, cache);
- ``meanteacher.py``: EMA teachers, ramps and perturbations of the mean-teacher methods;
- ``two_res_branch.py`` / ``lrd.py`` / ``bands.py`` / ``contrastive.py``: the two-resolution mask branch
  (NMH + LRD + optional CRC) shared by BASS and NoisyBoundary.

Importing a module here imports torch; this package itself imports nothing.
"""
