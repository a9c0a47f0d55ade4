"""The app's fixtures: upload files of every kind and the app launched on loopback with tiny models."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import CLASSES, synthetic_slice, write_split


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims ``w`` x ``h`` (no real pixel data): a 20000x20000 upload without 400 MB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(1)
    grey = synthetic_slice(0, rng, 96)
    Image.fromarray(grey).save(d / "slice.jpg", quality=95)
    jpeg = (d / "slice.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (d / "text.jpg").write_text("this is not an image\n")
    (d / "empty.jpg").write_bytes(b"")
    (d / "huge.png").write_bytes(_png_header_only(20000, 20000))
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 200)])
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(d / "sixteen.png")
    Image.fromarray(rng.integers(0, 256, (96, 96), dtype=np.uint8)).save(d / "noise.png")  # no MRI at all
    assert Image.open(d / "sixteen.png").mode.startswith("I")
    return {p.stem: p for p in d.iterdir()}


@pytest.fixture(scope="module")
def app(tiny_model_dir, tiny_data, tmp_path_factory):
    """The app on 127.0.0.1 (random port): teacher = tiny 32 px test_resnet, student = a 48 px one, both with a
    temperature and an OOD check fitted on the tiny data (9 train, 3 validation slices per class)."""
    from kdcore.data.imageio import InputSpec
    from kdcore.engine.calibrate import calibrate_model
    from kdcore.models import ModelInfo, create_model, save_model
    from kdcore_app import build_demo

    tmp = tmp_path_factory.mktemp("app")
    torch.manual_seed(1)
    spec = InputSpec(size=48)
    student = save_model(create_model("test_resnet", 4, spec), tmp / "student48",
                         ModelInfo("test_resnet", CLASSES, spec))
    teacher = shutil.copytree(tiny_model_dir, tmp / "teacher")
    split = write_split(tiny_data, tmp / "split.json")
    samples = tmp / "samples"
    samples.mkdir()
    Image.fromarray(synthetic_slice(3, np.random.default_rng(2), 64)).save(samples / "pituitary.jpg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDCORE_CACHE", str(tmp / "cache"))
        for folder in (teacher, student):
            calibrate_model(str(folder), str(tiny_data), str(split), ood_per_kind=16)
        demo = build_demo(str(teacher), str(student), samples, None, tmp / "runs")  # data: the demo set
        demo.queue(default_concurrency_limit=2)
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
        try:
            yield {"url": url, "demo": demo, "tmp": tmp, "samples": samples}
        finally:
            demo.close()
