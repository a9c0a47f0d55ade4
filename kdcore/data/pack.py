"""Training data in memory: the saved split applied to the decoded cache, as uint8 tensors ready to batch.

A :class:`TrainData` can also be written to one ``.safetensors`` file (:func:`save_pack`, CLI ``pack``) and used
as the data source anywhere a data folder is asked for: a machine without the image folder (a rented GPU, a
Space) then trains on exactly the same decoded pixels and split.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kdcore.data.dataset import ImageRecords, decode_cached, load_records
from kdcore.data.split import Split, make_split
from kdcore.errors import KDCoreError
from kdcore.paths import bundled, cache_dir

log = logging.getLogger(__name__)


@dataclass
class TensorSet:
    """``pixels`` uint8 ``(N, S, S)`` and ``labels`` int64 ``(N,)``."""

    pixels: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> TensorSet:
        return TensorSet(self.pixels.to(device), self.labels.to(device))


@dataclass
class TrainData:
    train: TensorSet
    val: TensorSet
    class_names: list[str]
    size: int
    split_path: str
    data_source: str
    skipped: list[dict] = field(default_factory=list)


#: The duplicate rules a split is made with, part of its file name: a dataset uses the split made with the current
#: rules. ``v2``: exact, pHash, mirrored pHash and intensity-altered copies; the older files, without the suffix
#: (exact and pHash only), stay readable through ``--split FILE``.
SPLIT_RULES = "v2"


def default_split_path(records: ImageRecords) -> Path:
    """``<parent>-<folder>-<hash of ids and labels>-<SPLIT_RULES>.json``: a dataset always maps to the same file.

    A split that ships with kdcore (``bundled/splits/``, the reference dataset's) is used as it is; any other
    dataset's split lives in the user cache (``cache_dir()/splits``), never in the package.
    """
    h = hashlib.sha1("\n".join(f"{i}\t{y}" for i, y in zip(records.ids, records.labels)).encode()).hexdigest()[:8]
    name = Path(records.root).name if records.root else "hub"
    parent = Path(records.root).parent.name if records.root else "dataset"
    filename = f"{parent}-{name}-{h}-{SPLIT_RULES}.json"
    shipped = bundled("splits", filename)
    return shipped if shipped.is_file() else cache_dir() / "splits" / filename


def ensure_split(
    records: ImageRecords, split_path: str | Path | None = None, val_fraction: float = 0.2, seed: int = 0
) -> tuple[Split, Path]:
    """Load the dataset's split file, or make it (dedup + stratified group split) and save it first."""
    path = Path(split_path) if split_path else default_split_path(records)
    if path.is_file():
        return Split.load(path), path
    from kdcore.data.dedup import find_duplicates

    report = find_duplicates(records)
    split = make_split(report.records, report.group_of(), val_fraction, seed)
    split.info["duplicates"] = report.summary()
    split.save(path)
    log.info("made split %s: %d train / %d val", path, len(split.train), len(split.val))
    return split, path


PACK_SUFFIX = ".safetensors"


def save_pack(data: TrainData, path: str | Path) -> Path:
    """Write ``data`` (pixels, labels, class names, split name, source) to one safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != PACK_SUFFIX:
        raise KDCoreError(f"{path}: a data pack is a {PACK_SUFFIX} file")
    tensors = {f"{side}_{k}": getattr(getattr(data, side), k).contiguous()
               for side in ("train", "val") for k in ("pixels", "labels")}
    meta = {"class_names": data.class_names, "size": data.size, "split": Path(data.split_path).name,
            "source": data.data_source, "skipped": len(data.skipped)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"kdcore_pack": json.dumps(meta)})
    return path


def load_pack(path: str | Path, size: int, split_path: str | Path | None = None) -> TrainData:
    """A :class:`TrainData` from a file written by :func:`save_pack`; ``size`` and ``split_path`` must match it."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("kdcore_pack", "null") or "null")
        if meta is None:
            raise KDCoreError(f"{path}: not a kdcore data pack")
        t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    if meta["size"] != size:
        raise KDCoreError(f"{path}: the pack holds {meta['size']} px images, {size} px were asked for")
    if split_path is not None and Path(split_path).name != meta["split"]:
        raise KDCoreError(f"{path}: the pack was made with split {meta['split']}, not {Path(split_path).name}")
    return TrainData(TensorSet(t["train_pixels"], t["train_labels"]), TensorSet(t["val_pixels"], t["val_labels"]),
                     meta["class_names"], size, meta["split"], meta["source"])


def load_train_data(source: str, size: int, split_path: str | Path | None = None) -> TrainData:
    """Records -> split -> decoded cache -> uint8 tensors for training and validation (or a :func:`save_pack` file)."""
    if str(source).endswith(PACK_SUFFIX) and Path(source).is_file():
        return load_pack(source, size, split_path)
    records = load_records(source)
    split, path = ensure_split(records, split_path)
    decoded = decode_cached(records, size)
    tr, va = split.indices(decoded.records)
    pix = torch.from_numpy(np.ascontiguousarray(decoded.pixels))
    lab = torch.from_numpy(decoded.records.labels)
    if len(decoded.records.class_names) < 2:
        raise KDCoreError(f"{source}: needs at least 2 classes")
    return TrainData(
        TensorSet(pix[tr], lab[tr]), TensorSet(pix[va], lab[va]), decoded.records.class_names, size, str(path),
        str(source), decoded.skipped,
    )
