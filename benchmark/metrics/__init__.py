"""Nuclei instance-segmentation metrics (pure numpy/scipy; importing this never imports torch).

See :mod:`benchmark.metrics.instance` for definitions and conventions.
"""

from benchmark.metrics.instance import (
    AGGREGATION_MODES,
    COUNT_FIELDS,
    METRIC_NAMES,
    InstanceCounts,
    Matching,
    PQResult,
    aggregate,
    aji,
    aji_plus,
    dice,
    instance_counts,
    match_instances,
    pq,
    scores_from_counts,
)

__all__ = [
    "AGGREGATION_MODES",
    "COUNT_FIELDS",
    "METRIC_NAMES",
    "InstanceCounts",
    "Matching",
    "PQResult",
    "aggregate",
    "aji",
    "aji_plus",
    "dice",
    "instance_counts",
    "match_instances",
    "pq",
    "scores_from_counts",
]
