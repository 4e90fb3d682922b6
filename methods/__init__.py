"""Built-in method plugins of the suite (each registered in ``benchmark.catalog`` and ``pyproject.toml``)."""
