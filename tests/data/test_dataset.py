"""Loading class folders through `datasets`, the decoded cache, and bad data folders."""

import numpy as np
import pytest

from kdcore.data.dataset import decode_cached, load_records
from kdcore.errors import KDCoreError
from tests.helpers import CLASSES, make_dataset


def test_load_records_class_names_sorted_and_labels(tiny_data):
    rec = load_records(tiny_data)
    assert rec.class_names == sorted(CLASSES)
    assert len(rec) == 48 and rec.class_counts() == {c: 12 for c in CLASSES}
    assert all(r.split("/")[0] == rec.class_names[y] for r, y in zip(rec.ids, rec.labels))


def test_cache_is_reused_and_keyed_by_size(tiny_data, monkeypatch):
    rec = load_records(tiny_data)
    a = decode_cached(rec, 32)
    import kdcore.data.dataset as ds

    monkeypatch.setattr(ds, "_decode_one", lambda job: pytest.fail("decoded again instead of using the cache"))
    b = decode_cached(rec, 32)
    assert np.array_equal(a.pixels, b.pixels) and a.pixels.shape == (48, 32, 32)
    monkeypatch.undo()
    assert decode_cached(rec, 16).pixels.shape == (48, 16, 16)


def test_two_writers_of_one_cache_entry_both_succeed(tiny_data, monkeypatch):
    """Two runs that decode the same set at once (two processes) must not take each other's temporary file."""
    import itertools

    import kdcore.data.dataset as ds

    rec, pids, real_save = load_records(tiny_data), itertools.count(100), np.save
    monkeypatch.setattr(ds.os, "getpid", lambda: next(pids))
    inner: list = []

    def save_then_let_the_other_writer_finish(path, arr):
        real_save(path, arr)
        if not inner:
            inner.append(None)
            inner[0] = decode_cached(rec, 24)  # the other process writes and renames in between

    monkeypatch.setattr(ds.np, "save", save_then_let_the_other_writer_finish)
    outer = decode_cached(rec, 24)
    assert np.array_equal(outer.pixels, inner[0].pixels) and outer.pixels.shape == (48, 24, 24)
    assert not list(ds.cache_dir().glob("*.tmp*"))


def test_corrupt_files_are_skipped_and_counted(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=3)
    (root / "glioma" / "notes.jpg").write_text("not an image")
    good = (root / "meningioma" / "meningioma_000.jpg").read_bytes()
    (root / "meningioma" / "cut.jpg").write_bytes(good[: len(good) // 3])
    dec = decode_cached(load_records(root), 32)
    assert len(dec.records) == 12 and len(dec.skipped) == 2
    assert {s["id"] for s in dec.skipped} == {"glioma/notes.jpg", "meningioma/cut.jpg"}


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(KDCoreError, match="no such data folder"):
        load_records(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KDCoreError, match="no class sub-folders"):
        load_records(tmp_path / "empty")
    (tmp_path / "empty" / "a").mkdir()
    with pytest.raises(KDCoreError, match="hold no image files"):
        load_records(tmp_path / "empty")


def test_linked_files_and_folders_are_followed_and_named_as_listed(tmp_path, caplog):
    store = make_dataset(tmp_path / "store", per_class=2)
    root = tmp_path / "linked"
    for name in CLASSES[1:]:
        (root / name).mkdir(parents=True)
        for f in sorted((store / name).iterdir()):
            (root / name / f"link-{f.name}").symlink_to(f)
    (root / CLASSES[0]).symlink_to(store / CLASSES[0], target_is_directory=True)  # a whole class folder linked
    (root / "notumor" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (store / CLASSES[0] / "loop").symlink_to(store / CLASSES[0], target_is_directory=True)
    (root / ".hidden").mkdir()
    rec = load_records(root)
    assert rec.class_names == CLASSES and rec.class_counts() == {c: 2 for c in CLASSES}
    assert rec.ids[:3] == ["glioma/glioma_000.jpg", "glioma/glioma_001.jpg", "meningioma/link-meningioma_000.jpg"]
    assert all(s.startswith(str(root)) for s in rec.sources)  # the links' own paths, not their targets
    assert "gone.jpg" in caplog.text
    assert len(decode_cached(rec, 16).records) == 8


def test_a_class_folder_without_images_is_an_error(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=1)
    (root / "extra").mkdir()
    with pytest.raises(KDCoreError, match="extra hold no image files"):
        load_records(root)
