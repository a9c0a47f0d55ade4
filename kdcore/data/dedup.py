"""Duplicate images: byte-identical files (SHA-256) and near-duplicates (64-bit DCT perceptual hash).

Groups are the connected components of "identical bytes" or "perceptual hashes within ``threshold`` bits";
a split keeps each group on one side so that copies never leak from training into validation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy.fft import dctn

from kdcore.data.dataset import DecodedImages, ImageRecords, decode_cached

#: Default Hamming distance (of 256 bits) under which two images count as near-duplicates. On the MRI training
#: set the nearest-neighbour distances are bimodal: copies at 0-4 bits, a valley around 6-14, distinct slices
#: mostly above 16 (see the README's data section).
DEFAULT_THRESHOLD = 10
HASH_SIZE = 64  # images are hashed from their cached 64x64 decode
BAND = 16  # low-frequency DCT band kept: BAND x BAND = 256 bits


def perceptual_hash(pixels: np.ndarray) -> np.ndarray:
    """pHash of uint8 images ``(N, S, S)``: low ``BAND x BAND`` DCT coefficients above their median.

    Returns ``(N, 256)`` bool.
    """
    coeffs = dctn(pixels.astype(np.float32), axes=(1, 2), norm="ortho")[:, :BAND, :BAND].reshape(len(pixels), -1)
    med = np.median(coeffs[:, 1:], axis=1, keepdims=True)  # the DC term would dominate the median
    return coeffs > med


def _union_find(n: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _file_digest(src) -> str:
    if isinstance(src, (bytes, bytearray)):
        return hashlib.sha256(src).hexdigest()
    with open(src, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass
class DuplicateReport:
    """Groups of record indices (into ``records``) that are copies of each other."""

    records: ImageRecords
    exact_groups: list[list[int]]
    near_groups: list[list[int]]  # all groups: exact and perceptual links together
    threshold: int
    skipped: list[dict]

    def group_of(self) -> np.ndarray:
        """``(N,)`` int: a group id per record; records without copies get their own id."""
        gid = np.arange(len(self.records))
        for g in self.near_groups:
            gid[g] = min(g)
        return gid

    def summary(self) -> dict:
        mixed = [g for g in self.near_groups if len(set(self.records.labels[g].tolist())) > 1]
        return {
            "images": len(self.records),
            "skipped_files": len(self.skipped),
            "threshold_bits": self.threshold,
            "exact_groups": len(self.exact_groups),
            "exact_redundant_images": sum(len(g) - 1 for g in self.exact_groups),
            "groups": len(self.near_groups),
            "images_in_groups": sum(len(g) for g in self.near_groups),
            "redundant_images": sum(len(g) - 1 for g in self.near_groups),
            "groups_with_conflicting_labels": len(mixed),
        }

    def to_json(self) -> dict:
        ids, labels, names = self.records.ids, self.records.labels, self.records.class_names

        def describe(groups: list[list[int]]) -> list[list[dict]]:
            return [[{"id": ids[i], "label": names[labels[i]]} for i in g] for g in groups]

        return {
            "summary": self.summary(),
            "exact_groups": describe(self.exact_groups),
            "groups": describe(self.near_groups),
            "skipped": self.skipped,
        }


def find_duplicates(
    records: ImageRecords, threshold: int = DEFAULT_THRESHOLD, decoded: DecodedImages | None = None
) -> DuplicateReport:
    """Find exact and near-duplicate groups among ``records`` (unreadable files are skipped and listed)."""
    decoded = decoded or decode_cached(records, HASH_SIZE)
    recs = decoded.records
    digests = [_file_digest(s) for s in recs.sources]
    by_digest: dict[str, list[int]] = {}
    for i, d in enumerate(digests):
        by_digest.setdefault(d, []).append(i)
    exact_pairs = [(g[0], j) for g in by_digest.values() for j in g[1:]]
    bits = perceptual_hash(decoded.pixels)
    packed = np.packbits(bits, axis=1).view(np.uint64)  # (N, 4)
    near_pairs: list[tuple[int, int]] = []
    for start in range(0, len(packed), 256):
        block = packed[start : start + 256]
        dist = np.bitwise_count(block[:, None, :] ^ packed[None, :, :]).sum(-1)
        a, b = np.nonzero(dist <= threshold)
        near_pairs += [(int(i) + start, int(j)) for i, j in zip(a, b) if int(i) + start < j]
    return DuplicateReport(
        recs, _union_find(len(recs), exact_pairs), _union_find(len(recs), exact_pairs + near_pairs), threshold,
        decoded.skipped,
    )
