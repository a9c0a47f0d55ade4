"""kdcore: distil large brain-MRI classifiers into small, fast, explainable ones (a library; no UI imports)."""

__version__ = "0.1.0"
