"""Duplicate groups on planted copies (identical, re-sized, mirrored, contrast-stretched, sharpened, mirrored and
gamma-corrected), and splits that are stratified, deterministic and keep groups whole."""

import shutil

import numpy as np
from PIL import Image, ImageFilter

from kdcore.data.dataset import decode_cached, load_records
from kdcore.data.dedup import HASH_SIZE, LINK_KINDS, find_duplicates, fingerprints, links
from kdcore.data.pack import SPLIT_RULES, ensure_split
from kdcore.data.split import Split, stratified_group_split
from kdcore.paths import bundled
from tests.helpers import make_dataset

#: planted copy -> (its original, the kind of link expected between them)
PLANTED = {
    "glioma/copy_exact.jpg": ("glioma/glioma_000.jpg", "exact"),
    "pituitary/copy_near.png": ("pituitary/pituitary_003.jpg", "phash"),
    "meningioma/copy_mirrored.png": ("meningioma/meningioma_001.jpg", "mirrored_phash"),
    "notumor/copy_contrast.png": ("notumor/notumor_002.jpg", "intensity"),
    "glioma/copy_sharpened.png": ("glioma/glioma_004.jpg", "intensity"),
    "pituitary/copy_mirrored_gamma.png": ("pituitary/pituitary_005.jpg", "intensity"),
}


def _planted(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=10, size=96)

    def original(copy: str) -> Image.Image:
        return Image.open(root / PLANTED[copy][0])

    shutil.copy(root / PLANTED["glioma/copy_exact.jpg"][0], root / "glioma/copy_exact.jpg")  # other name
    original("pituitary/copy_near.png").resize((150, 150)).save(root / "pituitary/copy_near.png")  # re-encoded
    original("meningioma/copy_mirrored.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        root / "meningioma/copy_mirrored.png")
    contrast = np.asarray(original("notumor/copy_contrast.png"), np.float32) * 2.5 - 20  # clipped at white
    Image.fromarray(np.clip(contrast, 0, 255).astype(np.uint8)).save(root / "notumor/copy_contrast.png")
    original("glioma/copy_sharpened.png").filter(ImageFilter.UnsharpMask(radius=2, percent=200, threshold=0)).save(
        root / "glioma/copy_sharpened.png")
    gamma = (np.asarray(original("pituitary/copy_mirrored_gamma.png"), np.float32)[:, ::-1] / 255) ** 0.5 * 330
    Image.fromarray(np.clip(gamma, 0, 255).astype(np.uint8)).save(root / "pituitary/copy_mirrored_gamma.png")
    return root


def test_planted_copies_are_grouped_with_their_original_and_distinct_slices_are_not(tmp_path):
    rep = find_duplicates(load_records(_planted(tmp_path)))
    ids = rep.records.ids
    groups = sorted(sorted(ids[i] for i in g) for g in rep.near_groups)
    assert groups == sorted(sorted([copy, orig]) for copy, (orig, _) in PLANTED.items())  # pairs, nothing else
    assert [sorted(ids[i] for i in g) for g in rep.exact_groups] == [["glioma/copy_exact.jpg", "glioma/glioma_000.jpg"]]
    summary = rep.summary()
    assert summary["groups"] == len(PLANTED) and summary["largest_group"] == 2
    assert summary["groups_with_conflicting_labels"] == 0
    assert sum(summary[f"pairs_{k}"] for k in LINK_KINDS) == len(PLANTED)  # each pair counted once
    assert rep.to_json()["summary"]["groups"] == len(PLANTED)


def test_each_kind_of_copy_is_found_by_its_rule(tmp_path):
    decoded = decode_cached(load_records(_planted(tmp_path)), HASH_SIZE)
    fp, ids = fingerprints(decoded), decoded.records.ids
    linked = links(fp, fp)
    for copy, (orig, kind) in PLANTED.items():
        i, j = ids.index(copy), ids.index(orig)
        assert linked[kind][i, j] and linked[kind][j, i], (copy, kind)
        if kind in ("mirrored_phash", "intensity"):  # what only the new rules find
            assert not linked["phash"][i, j], copy
        if kind == "intensity":
            assert not linked["mirrored_phash"][i, j], copy


def test_split_keeps_every_planted_copy_with_its_original(tmp_path):
    rec = load_records(_planted(tmp_path))
    split, _ = ensure_split(rec, tmp_path / "split.json", 0.5, seed=0)
    side = {i: "train" for i in split.train} | {i: "val" for i in split.val}
    assert all(side[copy] == side[orig] for copy, (orig, _) in PLANTED.items())
    assert {side[c] for c in PLANTED} == {"train", "val"}  # with half in validation, copies land on both sides


def test_reference_splits_old_and_new_are_bundled():
    """The split made with the current rules is the reference dataset's default; the older one stays readable."""
    new = Split.load(bundled("splits", f"brain-tumor-mri-train-10d4276d-{SPLIT_RULES}.json"))
    old = Split.load(bundled("splits", "brain-tumor-mri-train-10d4276d.json"))
    assert (len(new.train), len(new.val)) == (len(old.train), len(old.val)) == (4570, 1142)
    assert set(new.train + new.val) == set(old.train + old.val)
    assert new.info["val_counts"] == old.info["val_counts"] and new.info["duplicates"]["min_correlation"] > 0


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
    assert len(tr) + len(va) == len(rec)


def test_user_data_split_goes_to_the_user_cache_never_the_package(tmp_path):
    from kdcore.paths import bundled, cache_dir

    rec = load_records(make_dataset(tmp_path / "mine", per_class=5))
    _, path = ensure_split(rec)
    assert path.parent == cache_dir() / "splits" and path.name.startswith(f"{tmp_path.name}-mine-")
    assert path.name.endswith(f"-{SPLIT_RULES}.json")
    assert not path.is_relative_to(bundled())
