"""Classification metrics from labels and probabilities (numpy only): the fields of ``evaluate``'s JSON, and the
paired statistics that compare two training configurations run with the same seeds: over seeds (the mean paired
difference, its t-interval and the sign-flip p-value) and over seeds and images (the paired bootstrap)."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.stats import rankdata
from scipy.stats import t as student_t

#: up to this many seeds the sign-flip test enumerates all 2^n sign patterns
EXACT_SIGN_FLIPS = 12


def confusion_matrix(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """``(k, k)`` counts, rows = true class, columns = predicted class."""
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def per_class_prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(tp / cm.sum(0))
        recall = np.nan_to_num(tp / cm.sum(1))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return precision, recall, f1


def macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    return float(per_class_prf(confusion_matrix(y, pred, k))[2].mean())


def roc_auc_ovr(y: np.ndarray, probs: np.ndarray) -> float | None:
    """Macro one-vs-rest ROC AUC (Mann-Whitney U); None if a class is absent or all images are one class."""
    aucs = []
    for c in range(probs.shape[1]):
        pos = y == c
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            return None
        ranks = rankdata(probs[:, c])
        aucs.append((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs))


def reliability(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict:
    """Expected calibration error and the reliability diagram's bins (confidence, accuracy, count)."""
    conf = probs.max(1)
    correct = probs.argmax(1) == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            gap = abs(correct[m].mean() - conf[m].mean())
            ece += m.mean() * gap
            rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "confidence": float(conf[m].mean()),
                         "accuracy": float(correct[m].mean()), "count": int(m.sum())})
    return {"ece": float(ece), "bins": rows}


def classification_report(y: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """All metrics of ``evaluate``: labels ``(N,)``, probabilities ``(N, K)``."""
    k = len(class_names)
    pred = probs.argmax(1)
    cm = confusion_matrix(y, pred, k)
    p, r, f = per_class_prf(cm)
    rel = reliability(y, probs)
    support = cm.sum(1)
    return {
        "accuracy": float((pred == y).mean()) if len(y) else 0.0,
        "macro_f1": float(f.mean()),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, c in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
        "roc_auc": roc_auc_ovr(y, probs),
        "ece": rel["ece"],
        "reliability": rel["bins"],
    }


def paired_bootstrap(pred_a: np.ndarray, pred_b: np.ndarray, y: np.ndarray, k: int, n: int = 2000,
                     seed: int = 0) -> dict:
    """Mean paired difference A - B of accuracy and macro-F1 with a 95% bootstrap CI.

    ``pred_*`` are predicted labels ``(S, N)`` of ``S`` paired runs (run ``s`` of A is paired with run ``s`` of B:
    same seed, initial model and batches), ``y`` the labels ``(N,)``. Each of the ``n`` resamples draws runs and
    images with replacement. Returns ``{"accuracy"|"macro_f1": {"diff": float, "ci95": [lo, hi]}}``.
    """
    rng = np.random.default_rng(seed)
    s, m = pred_a.shape

    def stats(runs: np.ndarray, idx: np.ndarray) -> tuple[float, float]:
        acc = np.mean([(pred_a[i, idx] == y[idx]).mean() - (pred_b[i, idx] == y[idx]).mean() for i in runs])
        f1 = np.mean([macro_f1(y[idx], pred_a[i, idx], k) - macro_f1(y[idx], pred_b[i, idx], k) for i in runs])
        return acc, f1

    point = stats(np.arange(s), np.arange(m))
    boot = np.array([stats(rng.integers(0, s, s), rng.integers(0, m, m)) for _ in range(n)])
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    return {name: {"diff": float(point[j]), "ci95": [float(lo[j]), float(hi[j])]}
            for j, name in enumerate(("accuracy", "macro_f1"))}


def paired_t_interval(diffs: np.ndarray) -> dict:
    """Mean of the per-seed paired differences ``(S,)`` and its 95% t-interval: ``mean ± t_{S-1} sd / sqrt(S)``.

    ``t_{S-1}`` is the 97.5% quantile of Student's t with ``S - 1`` degrees of freedom, ``sd`` the sample standard
    deviation (``ddof=1``). Returns ``{"diff", "ci95": [lo, hi] | None (one seed), "n"}``.
    """
    diffs = np.asarray(diffs, dtype=float)
    n, mean = len(diffs), float(diffs.mean())
    if n < 2:
        return {"diff": mean, "ci95": None, "n": n}
    half = float(student_t.ppf(0.975, n - 1) * diffs.std(ddof=1) / np.sqrt(n))
    return {"diff": mean, "ci95": [mean - half, mean + half], "n": n}


def sign_flip_p_value(diffs: np.ndarray, n_random: int = 100_000, seed: int = 0) -> float:
    """Two-sided p-value of the paired permutation test that the per-seed differences ``(S,)`` centre on 0.

    Under the null each seed's difference is as likely negated, so the p-value is the share of sign patterns whose
    ``|mean|`` reaches the observed one: all ``2^S`` patterns for ``S <= EXACT_SIGN_FLIPS`` (the smallest possible
    p-value is then ``2 / 2^S``: 0.0625 for 5 seeds), else ``n_random`` random ones, counting the observed.
    """
    diffs = np.asarray(diffs, dtype=float)
    observed = abs(diffs.mean()) - 1e-12  # ties with the observed mean count, whatever the round-off
    if len(diffs) <= EXACT_SIGN_FLIPS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(diffs))))
        return float((np.abs(signs @ diffs / len(diffs)) >= observed).mean())
    signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(n_random, len(diffs)))
    return float(((np.abs(signs @ diffs / len(diffs)) >= observed).sum() + 1) / (n_random + 1))


def paired_over_seeds(a: np.ndarray, b: np.ndarray) -> dict:
    """Per-seed scores ``a``, ``b`` ``(S,)`` of two configurations (seed ``s`` paired): the mean difference A - B,
    its 95% t-interval and the sign-flip p-value, ``{"diff", "ci95", "n", "p"}``."""
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return paired_t_interval(diffs) | {"p": sign_flip_p_value(diffs)}


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """AUROC of telling OOD (positive) from in-distribution images by score."""
    y = np.r_[np.zeros(len(in_scores), int), np.ones(len(out_scores), int)]
    s = np.r_[in_scores, out_scores]
    return float(roc_auc_ovr(y, np.stack([-s, s], 1)))
