"""``python -m kdcore COMMAND``: a thin shell over the library. Errors print one line, never a traceback.

Each command is a pair: ``_args_NAME(parser)`` declares its options, ``cmd_NAME(args) -> int`` runs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from kdcore.errors import KDCoreError

EMA_HELP = "validate and export the student's weight average with this per-step decay, e.g. 0.999; 0 = off (default)"
VIEWS_HELP = ("show each image as one of N fixed augmentations; a distillation then caches the teacher's outputs "
              "on every view (no teacher pass per step); 0 = a fresh augmentation each time (default)")
SPLIT_HELP = "split file (default: the bundled split of the reference dataset, else the user cache)"
DEVICE_HELP = "cpu or cuda (default: cuda when present)"
MODEL_HELP = "model folder, teacher / student / student-tiny (the bundled ones), or hf-hub:OWNER/NAME"


def _write_json(path: str | None, obj: dict | list) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=1))
        print(f"wrote {path}")


# --- dedup ------------------------------------------------------------------------------------------------------
def _args_dedup(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="folder with one sub-folder per class")
    p.add_argument("--threshold", type=int, default=None,
                   help="max Hamming distance of 256-bit pHashes, plain or mirrored (default: see docs/data.md)")
    p.add_argument("--min-correlation", type=float, default=None,
                   help="min correlation of detail thumbnails, intensity-altered copies (default: see docs/data.md)")
    p.add_argument("--json", default="duplicates.json", help="report file (default: duplicates.json)")


def cmd_dedup(a: argparse.Namespace) -> int:
    from kdcore.data.dataset import load_records
    from kdcore.data.dedup import DEFAULT_MIN_CORRELATION, DEFAULT_THRESHOLD, find_duplicates

    report = find_duplicates(load_records(a.data), a.threshold if a.threshold is not None else DEFAULT_THRESHOLD,
                             a.min_correlation if a.min_correlation is not None else DEFAULT_MIN_CORRELATION)
    for k, v in report.summary().items():
        print(f"{k:<32}{v}")
    _write_json(a.json, report.to_json())
    return 0


# --- split ------------------------------------------------------------------------------------------------------
def _args_split(p: argparse.ArgumentParser) -> None:
    p.add_argument("data")
    p.add_argument("--out", default=None, help=SPLIT_HELP)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)


def cmd_split(a: argparse.Namespace) -> int:
    from kdcore.data.dataset import load_records
    from kdcore.data.pack import ensure_split

    split, path = ensure_split(load_records(a.data), a.out, a.val_fraction, a.seed)
    print(f"split {path}: {len(split.train)} train, {len(split.val)} val")
    print(json.dumps({k: split.info.get(k) for k in ("train_counts", "val_counts", "duplicates")}, indent=1))
    return 0


# --- pack -------------------------------------------------------------------------------------------------------
def _args_pack(p: argparse.ArgumentParser) -> None:
    p.add_argument("data")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--split", default=None, help=SPLIT_HELP)
    p.add_argument("--out", required=True, help="the pack, a .safetensors file (usable as --data anywhere)")


def cmd_pack(a: argparse.Namespace) -> int:
    from kdcore.data.pack import load_train_data, save_pack

    data = load_train_data(a.data, a.size, a.split)
    path = save_pack(data, a.out)
    print(f"{path}: {len(data.train)} train + {len(data.val)} val images at {a.size} px "
          f"({path.stat().st_size / 1e6:.1f} MB), split {Path(data.split_path).name}")
    return 0


# --- train-teacher ----------------------------------------------------------------------------------------------
def _args_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="resnet18", help="timm architecture")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl, best/, last/)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--split", default=None, help=SPLIT_HELP)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-images", type=int, default=None, help="image budget per epoch")
    p.add_argument("--mixup", type=float, default=None, help="mixup Beta(alpha, alpha); 0 = off (default)")
    p.add_argument("--ema", type=float, default=None, help=EMA_HELP)
    p.add_argument("--views", type=int, default=None, help=VIEWS_HELP)
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--init", default=None, help="start from this model folder's weights (fine-tuning)")
    p.add_argument("--config", default=None,
                   help="JSON file whose \"train\" entry sets the training config (e.g. a run's config.json)")


def print_trained(final: dict) -> None:
    """A finished training's two exported models: the final epoch's and the best epoch's (chosen on validation)."""
    if final.get("event") != "done":
        return
    last, best = final["last"], final["best"]
    print(f"final epoch {last['epoch'] + 1}: val accuracy {last['accuracy']:.4f} -> {final['last_dir']}\n"
          f"best epoch {best['epoch'] + 1} (chosen on validation): val accuracy {best['accuracy']:.4f} -> "
          f"{final['best_dir']}\ntrain time {final['train_time_s'] / 60:.1f} min")


def drive(events, quiet: bool = False) -> dict:
    """Show ``fit``'s events as a progress bar and per-epoch lines; return the final event."""
    from tqdm.auto import tqdm

    bar, last = None, {}
    for last in events:
        if last["event"] == "step":
            if bar is None:
                bar = tqdm(total=last["steps"], desc=f"epoch {last['epoch']}", disable=quiet, leave=False)
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['train_accuracy']:.3f}",
                            ips=f"{last['images_per_s']:.0f}", eta=f"{last['eta_s'] / 60:.1f}m")
        elif last["event"] == "epoch":
            if bar is not None:
                bar.close()
                bar = None
            if not quiet:
                print(f"epoch {last['epoch']}: loss {last['train_loss']:.4f} val acc {last['val_accuracy']:.4f} "
                      f"f1 {last['val_macro_f1']:.4f} ({last['images_per_s']:.0f} img/s)", flush=True)
    if bar is not None:
        bar.close()
    return last


def cmd_train_teacher(a: argparse.Namespace) -> int:
    from kdcore.data.imageio import InputSpec
    from kdcore.data.pack import load_train_data
    from kdcore.engine.loop import Supervised, TrainConfig, fit, with_overrides
    from kdcore.models import create_model

    base = TrainConfig()
    if a.config:
        try:
            base = TrainConfig.from_dict(json.loads(Path(a.config).read_text())["train"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise KDCoreError(f"{a.config}: unreadable training config ({e})") from None
    cfg = with_overrides(base, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                         max_images=a.max_images, mixup=a.mixup, ema=a.ema, views=a.views)
    data = load_train_data(a.data, a.size, a.split)
    if a.init:
        from kdcore.models import load_init

        model, info = load_init(a.init, data.class_names, a.size)
        a.arch = info.arch
    else:
        model = create_model(a.arch, len(data.class_names), InputSpec(a.size, 1, cfg.mean, cfg.std))
    objective = Supervised(model, cfg.label_smoothing)
    final = drive(fit(objective, data, cfg, a.out, a.arch, resume=a.resume, device=a.device,
                      summary={"objective": "supervised (teacher)", "init": a.init}))
    print_trained(final)
    return 0


# --- evaluate ---------------------------------------------------------------------------------------------------
def _args_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--data", required=True, help="folder with one sub-folder per class")
    p.add_argument("--json", default=None, help="write the metrics here")
    p.add_argument("--split", default=None, help="evaluate only one side of this split file")
    p.add_argument("--side", default="val", choices=["val", "train"])


def cmd_evaluate(a: argparse.Namespace) -> int:
    from kdcore.engine.evaluate import evaluate, format_report

    result = evaluate(a.model, a.data, split=a.split, side=a.side)
    print(format_report(result))
    _write_json(a.json, result)
    return 0


# --- pull / push / space (Hugging Face Hub) ---------------------------------------------------------------------
def _args_pull(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo_id", help="OWNER/NAME (or hf-hub:OWNER/NAME); works offline from the HF cache")
    p.add_argument("--revision", default=None)


def cmd_pull(a: argparse.Namespace) -> int:
    from kdcore.models.hub import pull_model

    print(pull_model(a.repo_id, a.revision))
    return 0


def _args_push(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="model folder (config.json + model.safetensors)")
    p.add_argument("repo_id", help="OWNER/NAME")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")


def cmd_push(a: argparse.Namespace) -> int:
    from kdcore.models.hub import push_model

    print(push_model(a.folder, a.repo_id, a.token, a.private))
    return 0


def _args_space(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="empty folder to assemble the Space in")
    p.add_argument("--teacher", default="teacher", help="model bundled as the teacher (default: models/teacher)")
    p.add_argument("--student", default="student", help="model bundled as the student (default: models/student)")
    p.add_argument("--models", nargs="*", default=(), help="Hub repos of the bundled models, for the front matter")
    p.add_argument("--push", default=None, metavar="OWNER/NAME", help="then upload it to this Space")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")


def cmd_space(a: argparse.Namespace) -> int:
    from kdcore.models.hub import push_space
    from kdcore_app.space import assemble_space

    folder = assemble_space(a.out, a.teacher, a.student, a.models)
    print(f"assembled {folder}")
    if a.push:
        print(push_space(folder, a.push, a.token, a.private))
    return 0


# --- distill ----------------------------------------------------------------------------------------------------
def _args_distill(p: argparse.ArgumentParser) -> None:
    from kdcore.distill import FEAT_DISTANCES, LOSSES, PRESETS, SEM_MAPS, DistillConfig, RunConfig

    run, dcfg = RunConfig(), DistillConfig()
    loss = ",".join(f"{k}={w:g}" for k, w in dcfg.loss.items())
    p.add_argument("--teacher", default=None, help=f"model folder, {run.teacher} (bundled) or hf-hub:OWNER/NAME")
    p.add_argument("--student", default=None, help=f"timm architecture of the new student (default: {run.student})")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True,
                   help="run folder (config.json, checkpoints, metrics.jsonl, best/, last/)")
    p.add_argument("--config", default=None, help="JSON config (e.g. an earlier run's config.json)")
    p.add_argument("--preset", default=None, choices=list(PRESETS),
                   help="named starting config; short: <= 5 min on 2 CPU cores")
    p.add_argument("--loss", default=None, help=f"weighted terms NAME=WEIGHT of {', '.join(LOSSES)} (default: {loss})")
    p.add_argument("--feat-distance", choices=FEAT_DISTANCES, default=None, help=f"default: {dcfg.feat_distance}")
    p.add_argument("--sem-map", choices=SEM_MAPS, default=None, help=f"default: {dcfg.sem_map}")
    p.add_argument("--temperature", type=float, default=None, help=f"of kd, dkd, dist (default: {dcfg.temperature:g})")
    p.add_argument("--no-teacher-cache", action="store_true", help="teacher logits and maps at every step")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--size", type=int, default=None, help=f"input size of the student (default: {run.size})")
    p.add_argument("--max-images", type=int, default=None, help="image budget per epoch")
    p.add_argument("--mixup", type=float, default=None, help="mixup Beta(alpha, alpha) (needs --no-teacher-cache)")
    p.add_argument("--ema", type=float, default=None, help=EMA_HELP)
    p.add_argument("--views", type=int, default=None, help=VIEWS_HELP)
    p.add_argument("--init", default=None, help="start the student from this model folder's weights")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--split", default=None, help=SPLIT_HELP)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--device", default=None, help=DEVICE_HELP)


def cmd_distill(a: argparse.Namespace) -> int:
    from kdcore.distill import config_from_options, parse_loss, run

    cfg = config_from_options(
        a.preset, a.config, teacher=a.teacher, student=a.student, size=a.size, init=a.init,
        epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, max_images=a.max_images, seed=a.seed, mixup=a.mixup,
        ema=a.ema, views=a.views, loss=parse_loss(a.loss) if a.loss else None, feat_distance=a.feat_distance,
        sem_map=a.sem_map, temperature=a.temperature, teacher_cache=False if a.no_teacher_cache else None,
    )
    print(f"distil {cfg.teacher} -> {cfg.student} at {cfg.size} px: {cfg.distill.describe()}", flush=True)

    def announce(events):
        for e in events:
            if e["event"] == "cache" and e["done"] == e["total"]:
                print(f"teacher cache: {e['total']} images ({'loaded' if e['cached'] else 'computed'})", flush=True)
            yield e

    final = drive(announce(run(cfg, a.data, a.out, resume=a.resume, device=a.device, split=a.split)))
    print_trained(final)
    return 0


# --- rank (training-free proxies) ------------------------------------------------------------------------------
def _args_rank(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", default="teacher", help="teacher model folder (default: the bundled teacher)")
    p.add_argument("--data", required=True, help="folder with one sub-folder per class (its training split is used)")
    p.add_argument("--candidates", default=None, help="comma-separated architectures (default: the registry)")
    p.add_argument("--max-params", type=float, default=None, help="drop candidates above this many parameters")
    p.add_argument("--max-latency-ms", type=float, default=None, help="drop candidates slower than this (batch 1)")
    p.add_argument("--proxy", default=None,
                   help="diswot, diswot_thesis, m_s, m_r, synflow, naswot, gradnorm, snip, zico, params, flops, "
                        "latency or random (docs/ranking.md). Default: the proxy with the best measured Kendall "
                        "tau against distilled accuracy in the shipped validation (params when none is shipped)")
    p.add_argument("--random-teacher", action="store_true", help="score against a randomly initialised teacher")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--inits", type=int, default=1, help="average over this many random initialisations")
    p.add_argument("--seed", type=int, default=0, help="seed of the batch (and of the random teacher)")
    p.add_argument("--split", default=None, help=SPLIT_HELP)
    p.add_argument("--json", default=None, help="write the ranking here")


def cmd_rank(a: argparse.Namespace) -> int:
    from kdcore.models import load_model
    from kdcore.rank.candidates import build_candidate
    from kdcore.rank.proxies import rank_for_teacher, validation_note
    from kdcore.rank.validation import accuracy_text

    teacher, info = load_model(a.teacher)
    if a.random_teacher:
        teacher = build_candidate(info.arch, len(info.class_names), info.spec, a.seed)
    names = [n.strip() for n in a.candidates.split(",") if n.strip()] if a.candidates else None
    rows = rank_for_teacher(teacher, info.spec, info.class_names, a.data, names,
                            int(a.max_params) if a.max_params is not None else None, a.max_latency_ms, a.proxy,
                            a.batch_size, a.inits, a.seed, a.split)
    keys = ("name", "proxy", "score", "score_std", "seconds", "params", "flops", "latency_ms", "distilled_accuracy",
            "distilled_std", "pareto")
    out = [{k: r[k] for k in keys} for r in rows]
    print(f"proxy: {out[0]['proxy']}. {validation_note(out[0]['proxy'])} (docs/ranking.md)")
    print(f"{'#':>2} {'candidate':<28}{'score':>12}{'±':>10}{'s':>7}{'params':>9}{'MFLOPs':>9}{'ms':>7}"
          f"{'distilled acc':>18}")
    for i, r in enumerate(out, 1):
        acc = (accuracy_text(r) or "") + ("*" if r["pareto"] else " ")
        print(f"{i:>2} {r['name']:<28}{r['score']:>12.4g}{r['score_std']:>10.3g}{r['seconds']:>7.2f}"
              f"{r['params'] / 1e6:>8.2f}M{r['flops'] / 1e6:>9.0f}{r['latency_ms']:>7.1f}{acc:>18}")
    if any(r["pareto"] for r in out):
        print("distilled acc: measured in the proxy validation (mean ± std over seeds); *: accuracy/latency Pareto set")
    _write_json(a.json, out)
    return 0


# --- calibrate --------------------------------------------------------------------------------------------------
def _args_calibrate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--data", required=True, help="folder with one sub-folder per class (its split is used)")
    p.add_argument("--split", default=None, help=SPLIT_HELP)
    p.add_argument("--json", default=None, help="also write the fitted fields here")


def cmd_calibrate(a: argparse.Namespace) -> int:
    from kdcore.engine.calibrate import calibrate_model

    fitted = calibrate_model(a.model, a.data, a.split)
    c, o = fitted["calibration"], fitted["ood"]
    print(f"temperature {c['temperature']:.4f} on {c['fitted_on']} ({c['num_images']} images): "
          f"ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}, NLL {c['nll_before']:.4f} -> {c['nll_after']:.4f}")
    flagged = ", ".join(f"{k} {v:.0%}" for k, v in o["flagged"].items())
    print(f"OOD check: {o['score']} score (AUROC {o['auroc']:.4f}), threshold {o['threshold']:.3f} flags "
          f"{o['val_flagged']:.1%} of validation; synthetic OOD flagged: {flagged}")
    _write_json(a.json, fitted)
    return 0


# --- explain ----------------------------------------------------------------------------------------------------
def _args_explain(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--image", required=True, help="image file to explain")
    p.add_argument("--method", choices=("lrp", "gradcam"), default="lrp")
    p.add_argument("--target", default=None, help="class index or name to explain (default: the predicted class)")
    p.add_argument("--out", required=True, help="PNG: the heatmap over the slice at the image's size, with colour bar")
    p.add_argument("--box", default=None, metavar="'XC YC W H'",
                   help="outline this tumour box (fractions of the image; default: the box file NAME.txt beside it)")


def cmd_explain(a: argparse.Namespace) -> int:
    from PIL import Image

    from kdcore.explain.image import explain_image
    from kdcore.explain.localise import parse_box, sibling_box
    from kdcore.explain.render import draw_box
    from kdcore.models import load_model

    model, info = load_model(a.model)
    names = [str(c) for c in info.class_names]
    if a.target is None or a.target in names:
        target = None if a.target is None else names.index(a.target)
    elif a.target.isdigit():
        target = int(a.target)
    else:
        raise KDCoreError(f"unknown target {a.target!r}: use a class index or one of {', '.join(names)}")
    box = parse_box(a.box, "--box") if a.box else sibling_box(a.image)
    result = explain_image(model, info.spec, a.image, a.method, target)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw_box(result.overlay, box) if box else result.overlay).save(a.out)
    probs = ", ".join(f"{n} {p:.3f}" for n, p in zip(names, result.probs))
    boxed = ", tumour box outlined" if box else ""
    print(f"{a.method} map for class {names[result.target]} ({probs}{boxed}) -> {a.out}")
    return 0


# --- predict ----------------------------------------------------------------------------------------------------
def _args_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", default=None, help="one image file: JPEG, PNG..., DICOM, NIfTI (.nii, .nii.gz)")
    source.add_argument("--data", default=None, help="a folder: every image file in it, at any depth")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", default=None, help="write the predictions (and the skipped files) here")
    out.add_argument("--csv", default=None, help="write the predictions here, one row per file")
    p.add_argument("--slice", type=int, default=None,
                   help="DICOM frame or NIfTI axial slice, from 0 (inferior) (default: the middle one)")
    p.add_argument("--batch-size", type=int, default=64)


def cmd_predict(a: argparse.Namespace) -> int:
    import csv

    from kdcore.data.dataset import image_files
    from kdcore.models import load_model
    from kdcore.models.predict import flat_row, predict_files

    if a.data:
        if not Path(a.data).is_dir():
            raise KDCoreError(f"{a.data}: no such folder")
        files = sorted(image_files(Path(a.data)))
        if not files:
            raise KDCoreError(f"{a.data}: holds no image files")
    else:
        files = [Path(a.image)]
    model, info = load_model(a.model)
    rows, skipped = predict_files(model, info, files, a.slice, a.batch_size, progress=bool(a.data))
    if a.image and skipped:
        raise KDCoreError(skipped[0]["reason"])
    if not (a.json or a.csv):
        for r in rows:
            where = f" [{r['format']} slice {r['slice']} of {r['slices']}]" if r["slices"] > 1 else ""
            ood = " (out of distribution)" if r["in_distribution"] is False else ""
            print(f"{r['file']}: {r['class']} {r['confidence']:.3f}{where}{ood}")
    for s in skipped:
        print(f"warning: skipped {s['reason']}", file=sys.stderr)
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable file(s) of {len(files)}", file=sys.stderr)
    if not rows:
        raise KDCoreError(f"{a.data}: no readable image")
    _write_json(a.json, {"model": info.name, "classes": [str(c) for c in info.class_names], "predictions": rows,
                         "skipped": skipped})
    if a.csv:
        Path(a.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(a.csv, "w", newline="") as f:
            table = [flat_row(r) for r in rows]
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
        print(f"wrote {a.csv}")
    print(f"{len(rows)} predicted, {len(skipped)} skipped")
    return 0


def _args_localise(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--method", choices=("lrp", "gradcam"), default="lrp")
    p.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                   help="a method setting, e.g. composite=epsilon-plus-flat or layer=previous (repeatable)")
    p.add_argument("--target", choices=("predicted", "true"), default="predicted", help="the class explained")
    p.add_argument("--data", required=True, help="class folders of images, each NAME.jpg with a NAME.txt box")
    p.add_argument("--json", required=True, help="where to write the scores")
    p.add_argument("--out-dir", default=None, help="also write one overlay PNG per image, its box in green")
    p.add_argument("--max-images", type=int, default=None, help="the first N images, classes in turn")


def cmd_localise(a: argparse.Namespace) -> int:
    from kdcore.explain.localise import localise
    from kdcore.models import load_model

    settings = dict(s.partition("=")[::2] for s in a.setting)
    if any(not v for v in settings.values()):
        raise KDCoreError(f"--setting takes NAME=VALUE, got {a.setting}")
    model, info = load_model(a.model)
    res = localise(model, info, a.data, a.method, a.target, settings, a.max_images, a.out_dir)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1))
    print(f"{a.method} {res['settings']} on {res['n']} images: pointing game {res['pointing_game']['mean']:.3f}, "
          f"tol15 {res['pointing_game_tol15']['mean']:.3f}, energy in box {res['energy_in_box']['mean']:.3f}, "
          f"on the background {res['energy_on_background']['mean']:.3f} "
          f"(centre point {res['centre_pointing_game']['mean']:.3f}, "
          f"uniform {res['uniform_pointing_game']['mean']:.3f}) -> {a.json}")
    return 0


# --- reproduce --------------------------------------------------------------------------------------------------
def _args_reproduce(p: argparse.ArgumentParser) -> None:
    from kdcore.distill.config import REPRODUCE_PRESETS

    p.add_argument("--data", required=True, help="folder with one sub-folder per class")
    p.add_argument("--out", required=True, help="folder for the runs, models, summary and commands.sh")
    p.add_argument("--preset", default="cpu", choices=list(REPRODUCE_PRESETS),
                   help="cpu: <= 2 h on 2 CPU cores (default); gpu: the full recipe, bf16; tiny: seconds, for tests")
    p.add_argument("--resume", action="store_true", help="skip finished stages, continue a half-finished training")
    p.add_argument("--rank", action="store_true", help="also rank the preset's student candidates (DisWOT)")
    p.add_argument("--split", default=None, help=SPLIT_HELP)
    p.add_argument("--device", default=None, help=DEVICE_HELP)


def cmd_reproduce(a: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from kdcore.reproduce import reproduce

    bar = None
    for e in reproduce(a.data, a.out, a.preset, a.resume, a.rank, a.split, a.device):
        say = bar.write if bar is not None else print
        if e["event"] == "stage" and e["status"] != "start":
            say(f"{e['stage']}: {e['status']}" + (f" in {e['time_s'] / 60:.1f} min" if "time_s" in e else ""))
        elif e["event"] == "stage":
            say(f"{e['stage']} ...")
            bar = bar or tqdm(total=round(e["total"]), initial=round(e["done"]), unit="img", unit_scale=True,
                              desc="reproduce", smoothing=0.05)
        elif e["event"] == "epoch":
            say(f"{e['stage']} epoch {e['epoch']}: loss {e['train_loss']:.4f} val acc {e['val_accuracy']:.4f}")
        elif e["event"] == "stopped":
            say(f"stopped in {e['stage']} (continue with --resume)")
        if bar is not None:
            bar.update(round(e["done"]) - bar.n)
            bar.set_postfix_str(e.get("stage", ""))
        if e["event"] == "done":
            if bar is not None:
                bar.close()
            print((Path(e["out"]) / "summary.md").read_text())
            print(f"-> {e['out']} (summary.json, summary.md, commands.sh)")
    return 0


COMMANDS = {
    "dedup": (_args_dedup, cmd_dedup, "find exact and near-duplicate images"),
    "split": (_args_split, cmd_split, "make (or show) the dataset's train/validation split"),
    "pack": (_args_pack, cmd_pack, "write the split's decoded images to one file, usable as --data elsewhere"),
    "train-teacher": (_args_train, cmd_train_teacher, "train a teacher from scratch"),
    "evaluate": (_args_evaluate, cmd_evaluate, "evaluate a model on a labelled folder"),
    "distill": (_args_distill, cmd_distill, "distil a teacher into a new student (KD, feature, LRP terms)"),
    "pull": (_args_pull, cmd_pull, "download a model from the Hugging Face Hub (or its cache)"),
    "push": (_args_push, cmd_push, "push a model folder to the Hugging Face Hub with a generated card"),
    "space": (_args_space, cmd_space, "assemble the Gradio Space folder (and push it with --push)"),
    "rank": (_args_rank, cmd_rank, "rank student architectures for a teacher without training them (proxies)"),
    "calibrate": (_args_calibrate, cmd_calibrate, "fit a model's temperature and OOD check into its folder"),
    "explain": (_args_explain, cmd_explain, "explain a prediction on one image as an LRP or Grad-CAM heatmap"),
    "localise": (_args_localise, cmd_localise, "score where heatmaps point on images with tumour boxes"),
    "predict": (_args_predict, cmd_predict, "predict image files (DICOM and NIfTI too): classes, probabilities"),
    "reproduce": (_args_reproduce, cmd_reproduce, "train, distil, evaluate and calibrate both models in one run"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command with its options; given ``only``, the options of that command alone (the distill options read
    their defaults from the library, which takes seconds to import)."""
    parser = argparse.ArgumentParser(prog="python -m kdcore", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _, helptext) in COMMANDS.items():
        command = sub.add_parser(name, help=helptext, description=helptext)
        if only in (None, name):
            add_args(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv[0] if argv else "").parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except KDCoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (a run folder can be continued with --resume)", file=sys.stderr)
        return 130
