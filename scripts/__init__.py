"""Tools around the benchmarks that are not benchmarks themselves; each runs as ``python -m scripts.NAME``."""
