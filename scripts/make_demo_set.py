"""Make the bundled demo set ``kdcore/bundled/demo/<class>/*.png`` from the reference dataset's validation side.

Takes ``--per-class`` images per class (seeded) only from images on the ``val`` side of every bundled reference
split (``kdcore/bundled/splits/*.json``, one per splitting rule set), so no image a bundled model was trained on,
under either split, is in the demo set, and writes each as a ``--size`` px greyscale PNG in kdcore's input
convention (pad to square, resize)::

    python -m scripts.make_demo_set ../shared/data/brain-tumor-mri/train
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image

from kdcore.data.imageio import decode_to_uint8
from kdcore.paths import bundled


def make_demo_set(data: Path, out: Path, per_class: int = 4, size: int = 128, seed: int = 0) -> dict[str, int]:
    """Write ``out/<class>/<stem>.png``; returns the count per class."""
    splits = [json.loads(f.read_text()) for f in sorted(bundled("splits").glob("*.json"))]
    val = set.intersection(*(set(s["val"]) for s in splits))  # validation under every bundled split's rules
    rng = random.Random(seed)
    counts = {}
    for name in splits[0]["info"]["class_names"]:
        ids = sorted(i for i in val if i.split("/")[0] == name)
        (out / name).mkdir(parents=True, exist_ok=True)
        for rel in rng.sample(ids, per_class):
            Image.fromarray(decode_to_uint8(data / rel, size), "L").save(
                out / name / f"{Path(rel).stem}.png", optimize=True)
        counts[name] = per_class
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="the reference dataset's folder (one sub-folder per class)")
    p.add_argument("--out", type=Path, default=bundled("demo"))
    p.add_argument("--per-class", type=int, default=4)
    p.add_argument("--size", type=int, default=128)
    a = p.parse_args()
    print(make_demo_set(a.data, a.out, a.per_class, a.size))


if __name__ == "__main__":
    main()
