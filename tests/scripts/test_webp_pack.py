"""scripts/webp_pack.py: a pack shrunk to lossless WebP expands to the same file."""

from __future__ import annotations

import torch

from kdcore.data.pack import TensorSet, TrainData, load_pack, save_pack
from scripts import webp_pack


def test_a_shrunk_pack_expands_to_the_same_bytes(tmp_path):
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (7, 24, 24), generator=g, dtype=torch.uint8)
    pixels[:, :6] = 0  # black borders, as in the MRIs
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    data = TrainData(TensorSet(pixels[:5], labels[:5]), TensorSet(pixels[5:], labels[5:]), ["a", "b", "c", "d"], 24,
                     "split-v2.json", "somewhere")
    pack = save_pack(data, tmp_path / "p.safetensors")
    small = webp_pack.shrink(pack, tmp_path / "p.webp.zip")
    back = webp_pack.expand(small, tmp_path / "back.safetensors")
    assert back.read_bytes() == pack.read_bytes()
    got = load_pack(back, 24)
    assert torch.equal(got.train.pixels, pixels[:5]) and torch.equal(got.val.labels, labels[5:])
    assert got.class_names == ["a", "b", "c", "d"]


def test_an_empty_side_expands(tmp_path):
    data = TrainData(TensorSet(torch.zeros(2, 8, 8, dtype=torch.uint8), torch.tensor([0, 1])),
                     TensorSet(torch.zeros(0, 8, 8, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)),
                     ["a", "b"], 8, "s.json", "x")
    pack = save_pack(data, tmp_path / "p.safetensors")
    back = webp_pack.expand(webp_pack.shrink(pack, tmp_path / "p.zip"), tmp_path / "b.safetensors")
    assert len(load_pack(back, 8).val) == 0 and back.read_bytes() == pack.read_bytes()
