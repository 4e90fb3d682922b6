"""BASS (boundary-aware contrastive learning for semi-supervised nuclei instance segmentation).

Modules:

- ``bands.py``: the four CRC regions (Eq. 3-4, paper and released-code definitions) and the LRD weight map;
- ``contrastive.py``: key sampling, cross-RoI queries and the InfoNCE terms of Eq. 5-7 (:func:`crc_loss`);
- ``lrd.py``: the 14x14 low-resolution denoising head and its boundary-down-weighted loss;
- ``heads.py``: :class:`BassMaskBranch`, the NMH + LRD + CRC mask branch with the 1x1 fusion;
- ``method.py``: the registered methods ``bass``, ``bass-nmh``, ``bass-lrd``, ``bass-nmh-lrd``, ``bass-code``.

The teacher / pseudo-label / student pipeline is shared with NoisyBoundary in :mod:`methods.pseudolabels`.
Importing this package imports torch.
"""

from .bands import crc_regions, lrd_weight_map
from .contrastive import CRCConfig, crc_loss, info_nce
from .heads import BassMaskBranch, BranchConfig
from .method import (
    BASS_OPTIONS,
    CODE_OVERRIDES,
    BassCodeMethod,
    BassLRDMethod,
    BassMethod,
    BassNMHLRDMethod,
    BassNMHMethod,
)

__all__ = [
    "crc_regions", "lrd_weight_map", "CRCConfig", "crc_loss", "info_nce", "BassMaskBranch", "BranchConfig",
    "BASS_OPTIONS", "CODE_OVERRIDES", "BassMethod", "BassNMHMethod", "BassLRDMethod", "BassNMHLRDMethod",
    "BassCodeMethod",
]
