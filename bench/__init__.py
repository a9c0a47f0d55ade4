"""kdcore's benchmarks: each module runs as ``python -m bench.NAME`` from the repository root and writes
``bench/results/NAME.json`` and ``.md`` through :func:`bench.report.write`."""
