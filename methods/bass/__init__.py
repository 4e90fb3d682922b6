"""BASS (boundary-aware contrastive learning for semi-supervised nuclei instance segmentation).

``method.py`` holds the registered methods ``bass``, ``bass-nmh``, ``bass-lrd``, ``bass-nmh-lrd`` and
``bass-code``. The NMH + LRD + CRC mask branch and the teacher / pseudo-label / student pipeline are in
:mod:`methods.core` (``two_res_branch``, ``lrd``, ``bands``, ``contrastive``, ``pseudolabels``), because
NoisyBoundary shares them. See README.md.
"""
