"""Knowledge distillation: the run configuration, loss terms, the distiller objective, the teacher cache and the run.

``kdcore.distill.run(make_config("short", overrides={"teacher": ...}), data_dir, out_dir, stop=event)`` is a
generator of progress events (see :func:`kdcore.distill.job.run`); the CLI ``distill`` and the app share it, and
build its config from their options with :func:`config_from_options`.
"""

from kdcore.distill.config import (
    FEAT_DISTANCES,
    PRESETS,
    SEM_MAPS,
    DistillConfig,
    RunConfig,
    config_from_options,
    make_config,
    merge_config,
    parse_loss,
)
from kdcore.distill.distiller import Distiller
from kdcore.distill.job import run
from kdcore.distill.losses import LOSSES, register_loss

__all__ = ["FEAT_DISTANCES", "LOSSES", "PRESETS", "SEM_MAPS", "DistillConfig", "Distiller", "RunConfig",
           "config_from_options", "make_config", "merge_config", "parse_loss", "register_loss", "run"]
