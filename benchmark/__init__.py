"""nuclei-ssl-bench: a benchmark suite for semi-supervised nuclei instance segmentation."""

__version__ = "0.1.0"
