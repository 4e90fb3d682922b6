"""``mmt_psm``: registered class in ``method.py``; see README.md."""
