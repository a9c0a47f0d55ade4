"""Engine: the training loop (``loop``), checkpoints (``checkpoint``), metrics and paired statistics (``metrics``)
and the ``evaluate`` contract (``evaluate``)."""
