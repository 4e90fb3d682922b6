"""``watershed``: registered class in ``method.py``; see README.md."""
