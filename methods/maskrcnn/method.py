"""The registered ``maskrcnn`` method: supervised Mask R-CNN on the labeled patches only.

All of the training, saving and inference lives in :class:`methods.core.supervised.SupervisedMaskRCNN`,
because the same trainer is the teacher of every pseudo-label and mean-teacher method. This plugin adds
nothing but its registration, so its cells and every teacher share one cache key (``method="maskrcnn"``).
"""

from __future__ import annotations

from methods.core.supervised import SupervisedMaskRCNN


class MaskRCNNMethod(SupervisedMaskRCNN):
    """Supervised Mask R-CNN (see :class:`~methods.core.supervised.SupervisedMaskRCNN` for the options)."""

    name = "maskrcnn"
    table_order = 20
