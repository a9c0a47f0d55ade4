"""Make the bundled demo set ``kdcore/bundled/demo/<class>/*.png`` and the app's sample slices
``kdcore/bundled/samples/<class>_<k>.jpg`` from the reference dataset's validation side.

Both take images only from the ``val`` side of every bundled reference split (``kdcore/bundled/splits/*.json``,
one per splitting rule set), so no image a bundled model was trained on, under either split, is in them. The demo
set takes ``--per-class`` images per class (seeded) and writes each as a ``--size`` px greyscale PNG in kdcore's
input convention (pad to square, resize); the samples are the first two ids per class in sorted order, copied
byte for byte (an upload as a user would make it)::

    python -m scripts.make_demo_set ../shared/data/brain-tumor-mri/train
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

from PIL import Image

from kdcore.data.imageio import decode_to_uint8
from kdcore.paths import bundled


def held_out_ids() -> dict[str, list[str]]:
    """Class name -> the sorted ids (``<class>/<file>``) on the validation side of every bundled split."""
    splits = [json.loads(f.read_text()) for f in sorted(bundled("splits").glob("*.json"))]
    val = set.intersection(*(set(s["val"]) for s in splits))  # validation under every bundled split's rules
    return {name: sorted(i for i in val if i.split("/")[0] == name) for name in splits[0]["info"]["class_names"]}


def make_demo_set(data: Path, out: Path, per_class: int = 4, size: int = 128, seed: int = 0) -> dict[str, int]:
    """Write ``out/<class>/<stem>.png``; returns the count per class."""
    rng = random.Random(seed)
    counts = {}
    for name, ids in held_out_ids().items():
        (out / name).mkdir(parents=True, exist_ok=True)
        for rel in rng.sample(ids, per_class):
            Image.fromarray(decode_to_uint8(data / rel, size), "L").save(
                out / name / f"{Path(rel).stem}.png", optimize=True)
        counts[name] = per_class
    return counts


def make_samples(data: Path, out: Path, per_class: int = 2) -> list[str]:
    """Copy the first ``per_class`` held-out ids of each class to ``out/<class>_<k>.jpg``; returns the ids."""
    picked = []
    for name, ids in held_out_ids().items():
        for k, rel in enumerate(ids[:per_class], 1):
            shutil.copyfile(data / rel, out / f"{name}_{k}.jpg")
            picked.append(rel)
    return picked


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="the reference dataset's folder (one sub-folder per class)")
    p.add_argument("--out", type=Path, default=bundled("demo"))
    p.add_argument("--per-class", type=int, default=4)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--samples", type=Path, default=None, help="also write the sample slices here (e.g. "
                   "kdcore/bundled/samples) and print their ids")
    a = p.parse_args()
    print(make_demo_set(a.data, a.out, a.per_class, a.size))
    if a.samples:
        print("\n".join(make_samples(a.data, a.samples)))


if __name__ == "__main__":
    main()
