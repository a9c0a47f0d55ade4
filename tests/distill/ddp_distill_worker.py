"""Run a few distillation steps on a synthetic set and write the loss curve (rank 0): ``python THIS OUT.json``.

Started by ``tests/test_distill_ddp.py`` once plainly and once under ``torchrun --nproc_per_node 2``.
"""

import json
import os
import sys

import torch

from kdcore.data.imageio import InputSpec
from kdcore.data.pack import TensorSet, TrainData
from kdcore.distill import DistillConfig, Distiller
from kdcore.engine.loop import TrainConfig, fit
from kdcore.models import create_model

torch.set_num_threads(1)
out = sys.argv[1]
spec = InputSpec(size=32)
gen = torch.Generator().manual_seed(0)
pixels = torch.randint(0, 256, (80, 32, 32), dtype=torch.uint8, generator=gen)
labels = torch.arange(80) % 4
data = TrainData(TensorSet(pixels[:64], labels[:64]), TensorSet(pixels[64:], labels[64:]), ["a", "b", "c", "d"], 32,
                 "synthetic", "synthetic")


CASES = {  # name: (student kwargs, loss); GroupNorm(1) has no batch statistics, so its split is exact
    "groupnorm_ce_kd": ({"norm_layer": "groupnorm1"}, {"ce": 1.0, "kd": 1.0}),
    "batchnorm_ce_kd_feat": ({}, {"ce": 1.0, "kd": 1.0, "feat": 1.0}),
}
curves = {}
for name, (kwargs, loss) in CASES.items():
    torch.manual_seed(0)
    teacher = create_model("test_resnet", 4, spec).eval()
    student = create_model("test_resnet", 4, spec, **kwargs)
    objective = Distiller(student, teacher, spec, spec, DistillConfig(loss=loss, teacher_cache=False), 0.1)
    train = TrainConfig(epochs=2, batch_size=16, lr=2e-3, warmup_epochs=0.5, seed=0)
    events = fit(objective, data, train, os.path.join(os.path.dirname(out), name), "test_resnet")
    curves[name] = [e["loss"] for e in events if e["event"] == "step"]
if int(os.environ.get("RANK", "0")) == 0:
    with open(out, "w") as f:
        json.dump(curves, f)
