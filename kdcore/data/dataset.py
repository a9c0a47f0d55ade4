"""Image-classification datasets: one loader for local class folders and Hub datasets, and a decoded cache.

A dataset is an :class:`ImageRecords` list (one source and label per image, class names sorted). Decoding is
paid once: :func:`decode_cached` keeps a uint8 ``(N, S, S)`` array per resolution on disk, keyed by the files
(path, size, mtime) and the preprocessing, so that a training epoch is bound by compute, not by JPEG decoding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdcore.data.imageio import ImageDecodeError, decode_to_uint8
from kdcore.data.medical import EXTENSIONS as MEDICAL_EXTENSIONS
from kdcore.errors import KDCoreError
from kdcore.paths import bundled, cache_dir

log = logging.getLogger(__name__)

CACHE_VERSION = "1"
DEMO_DATA = "demo"  # the data reference of the bundled demo set (kdcore/bundled/demo)
HUB_ID = re.compile(r"[\w-][\w.-]*(/[\w-][\w.-]*)?")  # a Hub dataset id: NAME or OWNER/NAME
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm",
                    ".ppm", ".pnm", *MEDICAL_EXTENSIONS)


@dataclass
class ImageRecords:
    """The images of a dataset: ``sources[i]`` (a file path, or encoded bytes for Hub rows) has ``labels[i]``.

    ``ids`` are stable names used in splits and reports: paths relative to ``root`` for folders, row numbers
    for Hub datasets.
    """

    sources: list
    labels: np.ndarray
    class_names: list[str]
    ids: list[str]
    root: str | None = None

    def __len__(self) -> int:
        return len(self.sources)

    def subset(self, index: np.ndarray | list[int]) -> ImageRecords:
        index = list(map(int, index))
        return ImageRecords(
            [self.sources[i] for i in index], self.labels[index], self.class_names, [self.ids[i] for i in index],
            self.root,
        )

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {c: int(n) for c, n in zip(self.class_names, counts)}


def _hidden(name: str) -> bool:
    """Entries a folder loader skips: dot files and folders, and ``__MACOSX``-style special folders."""
    return name.startswith((".", "__"))


def image_files(class_dir: Path) -> list[Path]:
    """Image files under ``class_dir`` (any depth), following symbolic links to files and folders elsewhere.

    Paths keep the names found under ``class_dir`` (links are not resolved); hidden entries and broken links
    are left out (the latter with a warning), and a folder reached twice through links is walked once.
    """
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        for name in filenames:
            path = Path(dirpath, name)
            if _hidden(name) or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            if path.is_file():
                found.append(path)
            else:
                log.warning("skipped %s: a link to nothing", path)
    return found


def _folder_records(source: str | os.PathLike) -> ImageRecords:
    root = Path(source).resolve()
    class_names = sorted(d.name for d in root.iterdir() if d.is_dir() and not _hidden(d.name))
    if not class_names:
        raise KDCoreError(f"{source}: no class sub-folders (expected {source}/<class>/<image files>)")
    found = {f.relative_to(root).as_posix(): (str(f), label)
             for label, name in enumerate(class_names) for f in image_files(root / name)}
    if not found:
        raise KDCoreError(f"{source}: the class folders hold no image files")
    empty = sorted(set(class_names) - {class_names[label] for _, label in found.values()})
    if empty:
        raise KDCoreError(f"{source}: class folder(s) {', '.join(empty)} hold no image files")
    ids = sorted(found)  # a stable order whatever the file system's
    return ImageRecords([found[i][0] for i in ids], np.asarray([found[i][1] for i in ids], dtype=np.int64),
                        class_names, ids, str(root))


def resolve_data(ref: str | os.PathLike | None) -> str:
    """A data reference -> what the loaders open: ``""`` or ``"demo"`` is the bundled demo set; a local folder, a data
    pack or a Hub dataset id stays as it is."""
    ref = str(ref or "").strip()
    return str(bundled(DEMO_DATA)) if ref in ("", DEMO_DATA) else ref


def load_records(source: str | os.PathLike, split: str = "train") -> ImageRecords:
    """Load a local folder with one sub-folder per class, or a Hub dataset id (through ``datasets``).

    Images are not decoded here. Folders: class names are the sorted sub-folder names, symbolic links (to files or
    folders anywhere) are followed, and ids are paths relative to the folder as listed, e.g. ``glioma/x.jpg``.
    Hub: class names are the label feature's names, ids ``<split>/<row>``. ``"demo"`` is the bundled demo set
    (:func:`resolve_data`). Raises :class:`KDCoreError` for a missing or empty folder, or a Hub dataset that cannot
    be loaded.
    """
    source = resolve_data(source)
    if Path(source).is_dir():
        return _folder_records(source)
    if not HUB_ID.fullmatch(str(source)):  # a path, not ``NAME`` or ``OWNER/NAME``
        raise KDCoreError(f"{source}: no such data folder")
    import datasets  # local: importing datasets costs ~1 s

    try:
        ds = datasets.load_dataset(str(source), split=split)
    except Exception as e:  # the Hub raises many types; the user needs one line
        raise KDCoreError(f"{source}: cannot load as a Hub dataset ({type(e).__name__}: {e})") from None
    image_col = next((k for k, f in ds.features.items() if isinstance(f, datasets.Image)), None)
    label_col = next((k for k, f in ds.features.items() if isinstance(f, datasets.ClassLabel)), None)
    if image_col is None or label_col is None:
        raise KDCoreError(f"{source}: needs an image column and a class-label column, has {list(ds.features)}")
    ds = ds.cast_column(image_col, datasets.Image(decode=False))
    sources = [row["bytes"] if row.get("bytes") else row["path"] for row in ds[image_col]]
    return ImageRecords(
        sources, np.asarray(ds[label_col], dtype=np.int64), list(ds.features[label_col].names),
        [f"{split}/{i}" for i in range(len(sources))], None,
    )


def _fingerprint(records: ImageRecords, size: int) -> str:
    h = hashlib.sha1(f"kdcore-cache-v{CACHE_VERSION}-size{size}".encode())
    for src, _rid in zip(records.sources, records.ids):
        if isinstance(src, (bytes, bytearray)):
            h.update(hashlib.sha1(src).digest())
        else:
            st = os.stat(src)
            h.update(f"{os.path.abspath(src)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _decode_one(args: tuple) -> tuple[np.ndarray | None, str | None]:
    src, size = args
    try:
        return decode_to_uint8(src, size), None
    except ImageDecodeError as e:
        return None, str(e)


@dataclass
class DecodedImages:
    """Decoded images: ``pixels`` uint8 ``(N, S, S)`` for the ``N`` readable records; ``skipped`` the others."""

    pixels: np.ndarray
    records: ImageRecords
    skipped: list[dict] = field(default_factory=list)


def decode_cached(records: ImageRecords, size: int, workers: int | None = None) -> DecodedImages:
    """Decode every record to uint8 ``(size, size)`` greyscale, reading/writing the on-disk cache.

    Unreadable files are skipped with a warning and listed in ``skipped`` ({"id", "reason"}).
    """
    key = _fingerprint(records, size)
    base = cache_dir() / f"images-{size}-{key}"
    npy, meta = base.with_suffix(".npy"), base.with_suffix(".json")
    if npy.exists() and meta.exists():
        info = json.loads(meta.read_text())
        keep = np.asarray(info["kept"], dtype=np.int64)
        return DecodedImages(np.load(npy, mmap_mode=None), records.subset(keep), info["skipped"])
    workers = workers or min(4, os.cpu_count() or 1)
    jobs = [(src, size) for src in records.sources]
    if workers > 1 and len(jobs) > 64:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_decode_one, jobs, chunksize=64))
    else:
        results = [_decode_one(j) for j in jobs]
    kept = [i for i, (arr, _) in enumerate(results) if arr is not None]
    skipped = [{"id": records.ids[i], "reason": err} for i, (_, err) in enumerate(results) if err is not None]
    for s in skipped:
        log.warning("skipped %s", s["reason"])
    pixels = np.stack([results[i][0] for i in kept]) if kept else np.zeros((0, size, size), np.uint8)
    base.parent.mkdir(parents=True, exist_ok=True)
    tmp = base.with_name(f"{base.name}.{os.getpid()}.tmp")  # per process: concurrent runs may decode the same set
    np.save(tmp.with_suffix(".npy"), pixels)
    tmp.with_suffix(".json").write_text(json.dumps({"kept": kept, "skipped": skipped}))
    os.replace(tmp.with_suffix(".npy"), npy)
    os.replace(tmp.with_suffix(".json"), meta)
    return DecodedImages(pixels, records.subset(kept), skipped)
