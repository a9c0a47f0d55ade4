"""Tiny synthetic data shared by the tests: MRI-like 4-class slices and class folders of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from kdcore.paths import samples_dir

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]
REPO = Path(__file__).resolve().parent.parent
SAMPLES = samples_dir()


def synthetic_slice(label: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A dark disc ("head") with a bright blob whose place depends on the class (none for class 2)."""
    yy, xx = np.mgrid[:size, :size] / size
    img = 0.35 * (((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.16) + 0.05 * rng.random((size, size))
    centres = {0: (0.35, 0.35), 1: (0.35, 0.65), 3: (0.68, 0.5)}
    if label in centres:
        cy, cx = centres[label]
        cy, cx = cy + rng.normal(0, 0.03), cx + rng.normal(0, 0.03)
        img += 0.6 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.006)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_dataset(root: Path, per_class: int = 12, seed: int = 0, size: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(synthetic_slice(label, rng, size)).save(root / name / f"{name}_{i:03d}.jpg", quality=95)
    return root
