"""Mask R-CNN core for nuclei (torchvision), shared by every Mask R-CNN-based method.

Public pieces:

- :func:`build_model` / :func:`model_config` (``model.py``): class-agnostic torchvision Mask R-CNN
  configured by a training profile, with a pluggable mask branch.
- :class:`NucleiRoIHeads`, :class:`MaskBranch`, :class:`StandardMaskBranch`, :class:`MaskRoIs`
  (``heads.py``): the extension points for BASS / NoisyBoundary / ShapeProp / MMT-PSM.
- :func:`train`, :class:`StepContext`, :class:`TrainingDivergedError` (``train.py``): the shared loop.
- :func:`detections_to_instance_map` (``instances.py``): the detections -> instance map rule.
- :class:`MaskRCNNMethod`, :func:`load_model` (``method.py``): the supervised ``maskrcnn`` method.

Importing this package imports torch; ``benchmark list`` imports it lazily through the registry.
"""

from .augment import NO_AUGMENT, Augment
from .checkpoint import CheckpointError, load_checkpoint, save_atomic
from .heads import BoxOutput, MaskBranch, MaskRoIs, NucleiRoIHeads, StandardMaskBranch, masked_bce
from .inference import predict_detections, predict_instance_maps
from .instances import detections_to_instance_map
from .method import MaskRCNNMethod, load_model, save_model
from .model import anchor_sizes, build_model, model_config
from .targets import TrainSample, mask_targets, sample_to_target
from .train import StepContext, TrainingDivergedError, TrainResult, lr_at, train

__all__ = [
    "Augment", "NO_AUGMENT", "CheckpointError", "load_checkpoint", "save_atomic", "BoxOutput", "MaskBranch",
    "MaskRoIs", "NucleiRoIHeads", "StandardMaskBranch", "masked_bce", "predict_detections",
    "predict_instance_maps", "detections_to_instance_map", "MaskRCNNMethod", "load_model", "save_model",
    "anchor_sizes", "build_model", "model_config", "TrainSample", "mask_targets", "sample_to_target",
    "StepContext", "TrainingDivergedError", "TrainResult", "lr_at", "train",
]
