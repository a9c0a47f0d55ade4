"""Knowledge distillation: loss terms, the distiller objective, the teacher cache and the run entry point.

``kdcore.distill.run(make_config("short", overrides={"teacher": ...}), data_dir, out_dir, stop=event)`` is a
generator of progress events (see :func:`kdcore.distill.job.run`); the CLI ``distill`` and the app share it.
"""

from kdcore.distill.distiller import DistillConfig, Distiller
from kdcore.distill.job import PRESETS, RunConfig, make_config, parse_loss, run
from kdcore.distill.losses import LOSSES

__all__ = ["LOSSES", "PRESETS", "DistillConfig", "Distiller", "RunConfig", "make_config", "parse_loss", "run"]
