"""Train/validation splits: stratified by class, deterministic by seed, duplicate groups kept on one side.

A split is saved as JSON (image ids per side, plus how it was made) and reused by every later run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdcore.data.dataset import ImageRecords
from kdcore.errors import KDCoreError


@dataclass
class Split:
    """Image ids (relative paths) on each side, and the recipe."""

    train: list[str]
    val: list[str]
    info: dict

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"info": self.info, "train": self.train, "val": self.val}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Split:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise KDCoreError(f"{path}: cannot read split file ({e})") from None
        return cls(d["train"], d["val"], d.get("info", {}))

    def indices(self, records: ImageRecords) -> tuple[np.ndarray, np.ndarray]:
        """Positions of this split's train and val ids within ``records`` (ids not in ``records`` are ignored)."""
        pos = {rid: i for i, rid in enumerate(records.ids)}
        train = np.asarray([pos[r] for r in self.train if r in pos], dtype=np.int64)
        val = np.asarray([pos[r] for r in self.val if r in pos], dtype=np.int64)
        if len(train) == 0 or len(val) == 0:
            raise KDCoreError("the split file does not match this dataset's files (no images on one side)")
        return train, val


def stratified_group_split(
    labels: np.ndarray, groups: np.ndarray, val_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so that each class has ~``val_fraction`` in validation and no group straddles the sides.

    Args:
        labels: ``(N,)`` class per image.
        groups: ``(N,)`` group id per image (copies share an id).
    Returns:
        ``(train_idx, val_idx)`` sorted index arrays.
    """
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    rng.shuffle(uniq)
    n_classes = int(labels.max()) + 1
    target = np.bincount(labels, minlength=n_classes) * val_fraction
    taken = np.zeros(n_classes)
    order = np.argsort(groups, kind="stable")
    starts, ends = np.searchsorted(groups[order], uniq), np.searchsorted(groups[order], uniq, side="right")
    members = {g: order[b:e] for g, b, e in zip(uniq, starts, ends)}
    val: list[int] = []
    for g in uniq:
        idx = members[g]
        counts = np.bincount(labels[idx], minlength=n_classes)
        if np.all(taken + counts <= target + 0.5):
            val.extend(idx.tolist())
            taken += counts
    val_idx = np.sort(np.asarray(val, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def make_split(records: ImageRecords, groups: np.ndarray, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """A :class:`Split` of ``records`` with duplicate ``groups`` ``(N,)`` kept whole."""
    tr, va = stratified_group_split(records.labels, groups, val_fraction, seed)
    info = {
        "seed": seed,
        "val_fraction": val_fraction,
        "class_names": records.class_names,
        "train_counts": records.subset(tr).class_counts(),
        "val_counts": records.subset(va).class_counts(),
        "rule": "stratified by class; duplicate groups (exact, pHash, mirrored pHash, intensity) on one side only",
    }
    return Split([records.ids[i] for i in tr], [records.ids[i] for i in va], info)
