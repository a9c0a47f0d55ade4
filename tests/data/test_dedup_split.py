"""Duplicate groups on planted copies, and splits that are stratified, deterministic and keep groups whole."""

import shutil

import numpy as np
from PIL import Image

from kdcore.data.dataset import load_records
from kdcore.data.dedup import find_duplicates
from kdcore.data.pack import ensure_split
from kdcore.data.split import Split, stratified_group_split
from tests.helpers import make_dataset


def _planted(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=10, size=96)
    src = root / "glioma" / "glioma_000.jpg"
    shutil.copy(src, root / "glioma" / "copy_exact.jpg")  # byte-identical, other name
    img = Image.open(root / "pituitary" / "pituitary_003.jpg")
    img.resize((150, 150)).save(root / "pituitary" / "copy_near.png")  # re-sized, re-encoded
    return root


def test_planted_duplicates_are_grouped(tmp_path):
    rep = find_duplicates(load_records(_planted(tmp_path)))
    ids = rep.records.ids
    as_sets = [{ids[i] for i in g} for g in rep.near_groups]
    assert {"glioma/glioma_000.jpg", "glioma/copy_exact.jpg"} in [{ids[i] for i in g} for g in rep.exact_groups]
    assert any({"pituitary/pituitary_003.jpg", "pituitary/copy_near.png"} <= s for s in as_sets)
    assert rep.summary()["exact_groups"] == 1
    # synthetic slices of one class differ in noise and blob position: not all one group
    assert max(len(s) for s in as_sets) < 10
    js = rep.to_json()
    assert js["summary"]["groups"] == len(rep.near_groups)


def test_group_split_is_deterministic_stratified_and_keeps_groups_whole():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 1000)
    groups = np.arange(1000)
    groups[100:160] = 100  # one big group
    groups[rng.choice(1000, 200)] = rng.integers(0, 50, 200)
    labels[groups == 100] = labels[100]
    for g in np.unique(groups):  # groups share a label (copies of one image)
        labels[groups == g] = labels[groups == g][0]
    tr1, va1 = stratified_group_split(labels, groups, 0.2, seed=3)
    tr2, va2 = stratified_group_split(labels, groups, 0.2, seed=3)
    assert np.array_equal(va1, va2) and np.array_equal(tr1, tr2)
    assert not np.array_equal(va1, stratified_group_split(labels, groups, 0.2, seed=4)[1])
    assert len(np.intersect1d(tr1, va1)) == 0 and len(tr1) + len(va1) == 1000
    assert not set(groups[tr1]) & set(groups[va1])
    frac = np.bincount(labels[va1], minlength=4) / np.bincount(labels, minlength=4)
    assert np.all(np.abs(frac - 0.2) < 0.05)


def test_split_file_is_made_once_and_reused(tmp_path):
    rec = load_records(_planted(tmp_path))
    path = tmp_path / "split.json"
    split, p = ensure_split(rec, path, 0.25, seed=0)
    assert p == path and path.is_file()
    again, _ = ensure_split(rec, path, 0.5, seed=9)  # the saved file wins
    assert again.val == split.val
    tr, va = Split.load(path).indices(rec)
    pair = {rec.ids.index("glioma/glioma_000.jpg"), rec.ids.index("glioma/copy_exact.jpg")}
    assert pair <= set(tr.tolist()) or pair <= set(va.tolist())


def test_user_data_split_goes_to_the_user_cache_never_the_package(tmp_path):
    from kdcore.paths import bundled, cache_dir

    rec = load_records(make_dataset(tmp_path / "mine", per_class=5))
    _, path = ensure_split(rec)
    assert path.parent == cache_dir() / "splits" and path.name.startswith(f"{tmp_path.name}-mine-")
    assert not path.is_relative_to(bundled())
