"""How good is the teacher-cache shortcut, and what does the teacher cost in a distillation step?

1. Deviation: for ``--images`` training images and the default augmentation, the teacher's target-class map of
   the augmented image (per step) against its map of the clean image warped with the same ``theta`` (cached);
   cosine of the flattened ``map_size`` maps, for LRP and Grad-CAM (and, as a reference, the un-warped map).
   Logits: top-1 agreement and ``T² KL`` between the teacher's softened outputs on the clean and augmented image.
2. Cost: median time of one training step (forward, backward, AdamW) per loss configuration with the per-step
   teacher and with the cache, and of the teacher's own parts (forward, map pass); images/s per configuration.
Writes ``bench/results/distill_teacher_cache.json`` and ``.md``.

    python -m bench.distill_teacher_cache --data PACK --teacher teacher --student resnet10t_w20 --size 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from bench.distill_ablation import CONFIGS
from bench.report import RESULTS, command, md_table, relative, write
from kdcore.data.augment import AugmentConfig, adapt_input, augment_batch, to_input
from kdcore.data.imageio import InputSpec
from kdcore.data.pack import load_train_data
from kdcore.distill import DistillConfig, Distiller
from kdcore.distill.losses import kd_loss
from kdcore.distill.teacher_cache import TeacherCache, cached_maps, teacher_maps
from kdcore.models import create_model, load_model

STEP_CONFIGS = {  # the ablation's configurations 1-4, and feat(cosine) without sem
    "ce (student alone)": CONFIGS["1-alone"],
    "ce+kd": CONFIGS["2-kd"],
    "ce+kd+feat(cosine)": {"loss": {"ce": 1.0, "kd": 1.0, "feat": 1.0}},
    "ce+kd+feat(l2)+sem(gradcam)": CONFIGS["3-diswot"],
    "ce+kd+feat(cosine)+sem(lrp)": CONFIGS["4-thesis"],
}


def _cos(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-8).tolist()


def _dist(xs: list[float]) -> dict:
    q = statistics.quantiles(xs, n=10)
    return {"mean": statistics.mean(xs), "median": statistics.median(xs), "p10": q[0], "min": min(xs)}


def deviation(teacher, tspec: InputSpec, pixels, labels, map_size: int, batch: int = 16) -> dict:
    gen = torch.Generator().manual_seed(0)
    out = {"lrp": {"warped": [], "unwarped": []}, "gradcam": {"warped": [], "unwarped": []},
           "logits": {"agree": [], "kl_t4": []}}
    for i in range(0, len(pixels), batch):
        pix, y = pixels[i : i + batch], labels[i : i + batch]
        clean = to_input(pix, tspec)
        aug, theta = augment_batch(pix, tspec, AugmentConfig(), gen)
        with torch.no_grad():
            lc, la = teacher(clean), teacher(aug)
        out["logits"]["agree"] += (lc.argmax(1) == la.argmax(1)).float().tolist()
        out["logits"]["kl_t4"] += [kd_loss(la[j : j + 1], lc[j : j + 1], 4.0).item() for j in range(len(y))]
        for method in ("lrp", "gradcam"):
            step = teacher_maps(teacher, aug, y, method, map_size)
            cached = teacher_maps(teacher, clean, y, method, map_size)
            out[method]["warped"] += _cos(step, cached_maps(cached, theta))
            out[method]["unwarped"] += _cos(step, cached)
    return {
        "lrp": {k: _dist(v) for k, v in out["lrp"].items()},
        "gradcam": {k: _dist(v) for k, v in out["gradcam"].items()},
        "logits": {"top1_agreement": statistics.mean(out["logits"]["agree"]),
                   "kd_loss_t4_clean_vs_aug": _dist(out["logits"]["kl_t4"])},
    }


def step_costs(teacher, tspec, student_arch: str, spec: InputSpec, pixels, labels, batch: int, repeats: int,
               map_size: int) -> dict:
    """Median seconds per training step of each configuration (per-step teacher and cached) and of the teacher's
    parts, timed in interleaved rounds so that a fluctuating machine load hits every configuration alike."""
    n = len(pixels)
    with torch.no_grad():
        logits = teacher(to_input(pixels, tspec))
    maps = {m: teacher_maps(teacher, to_input(pixels, tspec), labels, m, map_size) for m in ("lrp", "gradcam")}
    small = F.interpolate(pixels[:batch, None].float(), size=(spec.size, spec.size), mode="area")[:, 0].byte()
    x, theta = augment_batch(small, spec, AugmentConfig(), torch.Generator().manual_seed(0))
    y, idx = labels[:batch], torch.arange(batch) % n
    x = x.contiguous(memory_format=torch.channels_last)
    xt = adapt_input(x, spec, tspec)
    jobs = {"teacher forward": lambda: teacher(xt),
            "teacher lrp map": lambda: teacher_maps(teacher, xt, y, "lrp", map_size),
            "teacher gradcam map": lambda: teacher_maps(teacher, xt, y, "gradcam", map_size)}
    for name, kw in STEP_CONFIGS.items():
        for cached in (False, True):
            if name.startswith("ce (") and cached:
                continue
            cfg = DistillConfig(teacher_cache=cached, **kw)
            torch.manual_seed(0)
            student = create_model(student_arch, logits.shape[1], spec)
            cache = TeacherCache(logits, maps[cfg.sem_map]) if cached else None
            d = Distiller(student, teacher, spec, tspec, cfg, 0.1, cache).to(memory_format=torch.channels_last)
            d.train()
            opt = torch.optim.AdamW([p for p in d.parameters() if p.requires_grad])

            def step(d=d, opt=opt):
                _, terms = d(x, y, theta, idx)
                opt.zero_grad()
                sum(terms.values()).backward()
                opt.step()

            jobs[f"{name} | {'cached' if cached else 'per-step'}"] = step
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for r in range(repeats + 1):  # round 0 warms up
        for name, fn in jobs.items():
            t = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - t)
        print(f"round {r} done", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"teacher_forward_s": med.pop("teacher forward"), "teacher_lrp_map_s": med.pop("teacher lrp map"),
            "teacher_gradcam_map_s": med.pop("teacher gradcam map"),
            "steps": {k: {"step_s": v, "images_per_s": batch / v} for k, v in med.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train")
    p.add_argument("--teacher", default="teacher")
    p.add_argument("--student", default="mobilenetv2_035", help="a student every term can train")
    p.add_argument("--size", type=int, default=64, help="student resolution")
    p.add_argument("--images", type=int, default=64, help="images for the deviation measurement")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--map-size", type=int, default=32)
    p.add_argument("--out", default=str(RESULTS / "distill_teacher_cache"))
    a = p.parse_args(argv)
    teacher, info = load_model(a.teacher)
    teacher = teacher.requires_grad_(False).to(memory_format=torch.channels_last)
    tr = load_train_data(a.data, info.spec.size).train
    sel = torch.randperm(len(tr), generator=torch.Generator().manual_seed(0))[: a.images]
    pixels, labels = tr.pixels[sel], tr.labels[sel]
    spec = InputSpec(a.size, 1, info.spec.mean, info.spec.std)
    res = {"command": command("bench.distill_teacher_cache", argv),
           "teacher": relative(info.path), "teacher_val": info.summary.get("val_metrics"), "student": a.student,
           "size": a.size, "teacher_size": info.spec.size, "threads": torch.get_num_threads(),
           "deviation": deviation(teacher, info.spec, pixels, labels, a.map_size)}
    print(json.dumps(res["deviation"]), flush=True)
    res["cost"] = step_costs(teacher, info.spec, a.student, spec, pixels, labels, a.batch, a.repeats, a.map_size)
    c, d = res["cost"], res["deviation"]
    body = md_table(["map", "cos(per-step, warped cache) mean / median / p10", "cos(per-step, un-warped cache) mean"],
                    [[m, " / ".join(f"{d[m]['warped'][q]:.3f}" for q in ("mean", "median", "p10")),
                      f"{d[m]['unwarped']['mean']:.3f}"] for m in ("lrp", "gradcam")])
    lg = d["logits"]
    body += ["", f"Teacher logits, clean vs augmented image: top-1 agreement {lg['top1_agreement']:.3f}, "
             f"T²·KL (T=4) mean {lg['kd_loss_t4_clean_vs_aug']['mean']:.4f}.", ""]
    rows = []
    for name, v in c["steps"].items():
        cfg_name, mode = name.split(" | ")
        kw = STEP_CONFIGS[cfg_name]
        teacher_s = 0.0
        if mode == "per-step" and "kd" in kw["loss"]:
            teacher_s = c["teacher_forward_s"] + (c[f"teacher_{kw['sem_map']}_map_s"] if "sem" in kw["loss"] else 0)
        elif mode == "cached" and "feat" in kw["loss"]:
            teacher_s = c["teacher_forward_s"]
        v["teacher_share"] = teacher_s / v["step_s"]
        rows.append([cfg_name, mode, f"{v['step_s']:.3f}", f"{v['images_per_s']:.1f}", f"{v['teacher_share']:.0%}"])
    body += md_table(["configuration", "teacher", "s/step", "images/s", "teacher share"], rows)
    body += ["", f"Teacher parts per batch: forward {c['teacher_forward_s']:.3f} s, LRP map "
             f"{c['teacher_lrp_map_s']:.3f} s, Grad-CAM map {c['teacher_gradcam_map_s']:.3f} s."]
    write(a.out, res, f"Teacher cache: deviation and cost ({info.arch} teacher at {info.spec.size} px, {a.student} "
          f"at {a.size} px, batch {a.batch}, {res['threads']} threads)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
