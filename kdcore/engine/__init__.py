"""Engine: the training loop (``loop``), data-parallel helpers (``dist``), checkpoints (``checkpoint``), metrics
and paired statistics (``metrics``) and the ``evaluate`` contract (``evaluate``)."""
