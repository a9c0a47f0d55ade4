"""fit's training throughput against a bare PyTorch loop doing the same work, in the same run.

For each configuration (``teacher``: the teacher trained alone; ``kd``: ce + kd with the teacher per step;
``thesis``: ce + kd + feat + sem(lrp), teacher per step) both paths train the same objective (same models, batch,
augmentation, AdamW, bf16 autocast, channels_last, images on the device, optionally ``torch.compile``) on
synthetic uint8 images: :func:`kdcore.engine.loop.fit` (events, host syncs every ``--log-every`` steps) and a bare
loop (no events, one sync at the end). Images/s count the steps after ``--warmup``; the ratio fit / bare should be
>= 0.8. Writes ``bench/results/gpu_throughput.json`` and ``.md``.

    python -m bench.gpu_throughput                        # CUDA when present, the full recipe's models at 128 px
    python -m bench.gpu_throughput --device cpu --teacher-arch test_resnet --student test_resnet --size 32 \\
        --batch-size 8 --steps 2 --warmup 1 --amp none     # seconds, on a CPU
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from bench.report import RESULTS, command, md_table, write
from kdcore.data.augment import AugmentConfig, augment_batch
from kdcore.data.imageio import InputSpec
from kdcore.data.pack import TensorSet, TrainData
from kdcore.distill import DistillConfig, Distiller
from kdcore.engine.dist import default_device
from kdcore.engine.loop import Objective, Supervised, TrainConfig, amp_dtype, fit
from kdcore.models import create_model

#: configuration -> the loss terms (None: the teacher trained alone)
CONFIGS: dict[str, dict[str, float] | None] = {
    "teacher": None,
    "kd": {"ce": 1.0, "kd": 1.0},
    "thesis": {"ce": 1.0, "kd": 1.0, "feat": 1.0, "sem": 1.0},
}
CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


def objective(a: argparse.Namespace, config: str) -> Objective:
    """The configuration's objective, built from seed 0 (both paths get the same initial weights)."""
    torch.manual_seed(0)
    spec = InputSpec(size=a.size)
    teacher = create_model(a.teacher_arch, len(CLASSES), spec)
    loss = CONFIGS[config]
    if loss is None:
        return Supervised(teacher)
    student = create_model(a.student, len(CLASSES), spec)
    return Distiller(student, teacher, spec, spec, DistillConfig(loss=loss, teacher_cache=False), 0.1)


def synthetic(a: argparse.Namespace) -> TrainData:
    """``--images`` random uint8 slices (throughput does not depend on the pixels)."""
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (a.images, a.size, a.size), dtype=torch.uint8, generator=gen)
    labels = torch.arange(a.images) % len(CLASSES)
    val = TensorSet(pixels[: a.batch_size], labels[: a.batch_size])
    return TrainData(TensorSet(pixels, labels), val, CLASSES, a.size, "synthetic.json", "synthetic")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fit_ips(a: argparse.Namespace, config: str, data: TrainData, device: torch.device) -> float:
    """Images/s of ``fit`` over the steps after the warm-up (both ends are host syncs of the loop)."""
    cfg = TrainConfig(epochs=1, batch_size=a.batch_size, max_images=a.batch_size * (a.warmup + a.steps),
                      amp=a.amp, compile=a.compile, log_every=a.warmup)
    stamps = {}
    with tempfile.TemporaryDirectory() as tmp:
        arch = a.teacher_arch if config == "teacher" else a.student
        for e in fit(objective(a, config), data, cfg, tmp, arch, device=str(device)):
            if e["event"] == "step" and e["step"] in (a.warmup, a.warmup + a.steps):
                stamps[e["step"]] = time.perf_counter()
    return a.steps * a.batch_size / (stamps[a.warmup + a.steps] - stamps[a.warmup])


def bare_ips(a: argparse.Namespace, config: str, data: TrainData, device: torch.device) -> float:
    """Images/s of a plain loop: the same objective, augmentation, optimizer and autocast; no events, no syncs."""
    obj = objective(a, config).to(device, memory_format=torch.channels_last).train()
    model = torch.compile(obj) if a.compile else obj
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=1e-3)
    pixels, labels = data.train.pixels.to(device), data.train.labels.to(device)
    spec, aug, gen = InputSpec(size=a.size), AugmentConfig(), torch.Generator().manual_seed(0)
    amp = amp_dtype(a.amp, device)
    t0 = 0.0
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            _sync(device)
            t0 = time.perf_counter()
        idx = torch.randint(len(labels), (a.batch_size,), device=device)
        x, theta = augment_batch(pixels[idx], spec, aug, gen)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            _, terms = model(x, labels[idx], theta, idx)
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return a.steps * a.batch_size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=default_device())
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    p.add_argument("--teacher-arch", default="resnet18")
    p.add_argument("--student", default="resnet10t_w20")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=2048, help="synthetic training images held on the device")
    p.add_argument("--steps", type=int, default=50, help="timed steps")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (and fit's host sync interval)")
    p.add_argument("--amp", default="bf16", choices=["bf16", "auto", "none"])
    p.add_argument("--compile", action="store_true", help="torch.compile both paths")
    p.add_argument("--out", default=str(RESULTS / "gpu_throughput"))
    a = p.parse_args(argv)
    a.amp = None if a.amp == "none" else a.amp
    a.images = max(a.images, a.batch_size * (a.warmup + a.steps))
    device = torch.device(a.device)
    data = synthetic(a)
    rows = {}
    for config in a.configs.split(","):
        fit_v, bare_v = fit_ips(a, config, data, device), bare_ips(a, config, data, device)
        rows[config] = {"fit": fit_v, "bare": bare_v, "ratio": fit_v / bare_v}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    res = {"command": command("bench.gpu_throughput", argv), "device": name, "amp": a.amp, "compile": a.compile,
           "batch_size": a.batch_size, "size": a.size, "steps": a.steps, "warmup": a.warmup,
           "teacher_arch": a.teacher_arch, "student": a.student, "images_per_s": rows}
    body = md_table(["configuration", "fit images/s", "bare loop images/s", "fit / bare (target >= 0.8)"],
                    [[c, f"{r['fit']:.1f}", f"{r['bare']:.1f}", f"{r['ratio']:.2f}"] for c, r in rows.items()])
    write(a.out, res, f"Training throughput, fit against a bare loop ({name})", body,
          f"\n\n{a.teacher_arch} teacher, {a.student} student, {a.size} px, batch {a.batch_size}, amp {a.amp}, "
          f"compile {a.compile}, {a.steps} timed steps after {a.warmup}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
