"""``pg_fanet``: registered class in ``method.py``; see README.md."""
