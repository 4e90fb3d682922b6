"""``maskrcnn``: the supervised Mask R-CNN baseline (registered class in ``method.py``)."""
