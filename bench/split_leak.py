"""Validation leak of split files: validation images that have a copy on the training side, by kind of copy, and
(optionally) models re-scored on each split's validation part.

    python -m bench.split_leak --data ../shared/data/brain-tumor-mri/train \
        --splits kdcore/bundled/splits/brain-tumor-mri-train-10d4276d.json \
                 kdcore/bundled/splits/brain-tumor-mri-train-10d4276d-v2.json --models teacher student

A validation image leaks when a training image is linked to it by :func:`kdcore.data.dedup.links` with the default
thresholds (the rules the splits are made with). Writes ``bench/results/split_leak.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import itertools
import platform
from pathlib import Path

import numpy as np

from bench.report import RESULTS, command, md_table, relative, write
from kdcore.data.dataset import decode_cached, load_records
from kdcore.data.dedup import BLOCK, DEFAULT_THRESHOLD, HASH_SIZE, LINK_KINDS, distances, fingerprints, links
from kdcore.data.split import Split
from kdcore.engine.evaluate import evaluate
from kdcore.models import load_model
from kdcore.paths import bundled

EXAMPLES = 5  # (val, train) id pairs kept per kind
RAW_CORRELATION = 0.99  # the independent check: plain 32 px thumbnails (no high-pass) this correlated


def raw_thumbnails(pixels: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm 32 px thumbnails of uint8 ``(N, 64, 64)`` images and their mirrors: ``(N, 2, 1024)``."""
    t = pixels.reshape(len(pixels), 32, 2, 32, 2).astype(np.float32).mean((2, 4))
    t = np.stack([t, t[:, :, ::-1]], 1).reshape(len(pixels), 2, -1)
    t -= t.mean(-1, keepdims=True)
    return t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-6)


BIT_BINS = [*range(0, 26, 2), 257]  # nearest-neighbour pHash distance bins (bits of 256; the last: >= 24)
CORR_BINS = [-1, 0.5, 0.7, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1.01]


def nearest_neighbours(data: str) -> dict:
    """Histograms of each image's nearest neighbour in the dataset: pHash bits (plain; plain or mirrored) and,
    among the images that no pHash rule links, the detail-thumbnail correlation: the figures the thresholds are
    chosen from."""
    fp = fingerprints(decode_cached(load_records(data), HASH_SIZE))
    n = len(fp)
    plain, either, corr = np.empty(n, int), np.empty(n, int), np.empty(n)
    for start in range(0, n, BLOCK):
        rows = np.arange(start, min(start + BLOCK, n))
        d = distances(fp.subset(rows), fp)
        self_ = rows[:, None] == np.arange(n)[None, :]
        bits = np.minimum(d["phash"], d["mirrored_phash"])
        plain[rows] = np.where(self_, 999, d["phash"]).min(1)
        either[rows] = np.where(self_, 999, bits).min(1)
        corr[rows] = np.where(self_ | (bits <= DEFAULT_THRESHOLD), -1, d["correlation"]).max(1)
    return {"images": n, "bit_bins": BIT_BINS, "phash": np.histogram(plain, BIT_BINS)[0].tolist(),
            "phash_or_mirrored": np.histogram(either, BIT_BINS)[0].tolist(), "correlation_bins": CORR_BINS,
            "correlation_unlinked_by_phash": np.histogram(corr, CORR_BINS)[0].tolist()}


def leak(data: str, split_file: str) -> dict:
    """Counts of ``split_file``'s validation images with a training copy, per kind and in all."""
    decoded = decode_cached(load_records(data), HASH_SIZE)
    ids = decoded.records.ids
    tr, va = Split.load(split_file).indices(decoded.records)
    fp = fingerprints(decoded)
    linked = links(fp.subset(va), fp.subset(tr))
    anything = np.logical_or.reduce(list(linked.values()))
    raw = raw_thumbnails(decoded.pixels)
    raw_corr = np.maximum(raw[va, 0] @ raw[tr, 0].T, raw[va, 0] @ raw[tr, 1].T).max(1)
    first, left, examples = {}, np.ones(len(va), bool), {}
    for kind, m in linked.items():
        hit = m.any(1)
        first[kind], left = int((hit & left).sum()), left & ~hit
        a, b = np.nonzero(m)
        examples[kind] = [[ids[va[i]], ids[tr[j]]] for i, j in zip(a[:EXAMPLES], b[:EXAMPLES])]
    return {
        "split": relative(split_file), "train": len(tr), "val": len(va),
        "val_with_train_copy": {**{k: int(m.any(1).sum()) for k, m in linked.items()},
                                "any": int(anything.any(1).sum())},
        "val_by_first_kind": first,
        "train_images_copied_in_val": int(anything.any(0).sum()),
        "val_with_raw_correlation_above": {"threshold": RAW_CORRELATION,
                                           "images": int((raw_corr > RAW_CORRELATION).sum()),
                                           "max": float(raw_corr.max())},
        "examples": examples,
    }


def score(model: str, data: str, split_file: str) -> dict:
    """``model``'s accuracy and macro-F1 on the validation side of ``split_file``, and how many of those images
    were in the model's own training split (named in its card; looked up among the bundled splits)."""
    r = evaluate(model, data, latency_repeats=1, split=split_file, side="val")
    trained_on = load_model(model)[1].summary.get("split", "")
    own = bundled("splits", trained_on)
    seen = len(set(Split.load(split_file).val) & set(Split.load(own).train)) if trained_on and own.is_file() else None
    return {"model": model, "split": relative(split_file), "trained_on": trained_on, "val_images_trained_on": seen,
            **{k: r[k] for k in ("accuracy", "macro_f1", "num_images")}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the labelled folder the splits belong to")
    p.add_argument("--splits", nargs="+", required=True, help="split files to measure")
    p.add_argument("--models", nargs="*", default=[], help="models to re-score on each split's validation part")
    p.add_argument("--out", default=str(RESULTS / "split_leak"))
    a = p.parse_args(argv)
    nn = nearest_neighbours(a.data)
    leaks = [leak(a.data, s) for s in a.splits]
    scores = [score(m, a.data, s) for m in a.models for s in a.splits]
    result = {"command": command("bench.split_leak", argv), "nearest_neighbours": nn, "leak": leaks,
              "scores": scores}
    bit_head = [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(BIT_BINS[:-1])] + [f">= {BIT_BINS[-2]}"]
    body = [f"Nearest neighbour of each of the {nn['images']} images, pHash distance (bits of 256):", ""]
    body += md_table(["pHash", *bit_head], [["plain", *nn["phash"]], ["plain or mirrored", *nn["phash_or_mirrored"]]])
    corr_head = [f"< {CORR_BINS[1]}"] + [f"{lo:g}-{hi:g}" for lo, hi in itertools.pairwise(CORR_BINS[1:-1])] + [
        f">= {CORR_BINS[-2]}"]
    body += ["", f"Nearest neighbour by detail-thumbnail correlation (plain or mirrored), among the images no pHash "
             f"rule links (plain or mirrored, > {DEFAULT_THRESHOLD} bits):", ""]
    body += md_table(["correlation", *corr_head], [["images", *nn["correlation_unlinked_by_phash"]]])
    body += ["", "Validation images with at least one copy on the training side, per kind (kinds overlap; `any` is the "
            "union; in brackets: counted under the first kind that holds, in column order):", ""]
    raw_head = f"check: raw 32 px correlation > {RAW_CORRELATION} (max)"
    body += md_table(["split", "train / val", *LINK_KINDS, "any", "training images copied in val", raw_head],
                     [[Path(r["split"]).name, f"{r['train']} / {r['val']}",
                       *(f"{r['val_with_train_copy'][k]} ({r['val_by_first_kind'][k]})" for k in LINK_KINDS),
                       r["val_with_train_copy"]["any"], r["train_images_copied_in_val"],
                       f"{r['val_with_raw_correlation_above']['images']} "
                       f"({r['val_with_raw_correlation_above']['max']:.4f})"] for r in leaks])
    body += ["", "The check column uses no rule of `kdcore.data.dedup`: per-image standardised 32 px thumbnails "
             "(and their mirrors) without the high-pass, a crude measure independent of the rules."]
    if scores:
        body += ["", "Models re-scored on each split's validation part (`kdcore evaluate --model M --data DATA "
                 "--split FILE`):", ""]
        body += md_table(["model", "split", "images", "of them in the model's training split", "accuracy",
                          "macro-F1"],
                         [[s["model"], Path(s["split"]).name, s["num_images"], s["val_images_trained_on"],
                           f"{s['accuracy']:.4f}", f"{s['macro_f1']:.4f}"] for s in scores])
    write(a.out, result, "Validation leak of split files", body, f" ({platform.machine()})")


if __name__ == "__main__":
    main()
