"""Duplicate images: identical files, perceptual near-copies, mirrored copies and intensity-altered copies.

Every image gets :class:`Fingerprints` (SHA-256 of the file; a 256-bit DCT perceptual hash of the image and of its
left-right mirror; a standardised 32 px detail thumbnail of both). Two images are linked when one of the
:data:`LINK_KINDS` holds; groups are the connected components of the links, and a split keeps each group on one
side so that copies never leak from training into validation. The thresholds come from the measured
nearest-neighbour distances of the MRI training set (``docs/data.md``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy.fft import dctn
from scipy.ndimage import uniform_filter

from kdcore.data.dataset import DecodedImages, ImageRecords, decode_cached

#: Hamming distance (of 256 bits) up to which two pHashes (plain or one of them mirrored) count as copies: copies
#: sit at 0-5 bits, distinct slices mostly at 24 and beyond.
DEFAULT_THRESHOLD = 10
#: Correlation of detail thumbnails (plain or mirrored) from which two images count as intensity-altered copies:
#: on the MRI training set copies sit above a valley at 0.94-0.95 and make most of 0.92-0.94; below 0.92 pairs are
#: mostly adjacent slices of one patient, then distinct slices.
DEFAULT_MIN_CORRELATION = 0.92
HASH_SIZE = 64  # images are fingerprinted from their cached 64x64 decode
BAND = 16  # low-frequency DCT band kept: BAND x BAND = 256 bits
THUMB = 32  # detail thumbnails are THUMB x THUMB
DETAIL_BOX = 5  # the thumbnail minus its DETAIL_BOX x DETAIL_BOX box blur keeps anatomy, drops shading
#: The kinds of link, in the order a pair is attributed to them: a pair counts under the first kind that holds.
LINK_KINDS = ("exact", "phash", "mirrored_phash", "intensity")
BLOCK = 256  # rows of the pairwise comparison computed at once


def perceptual_hash(pixels: np.ndarray) -> np.ndarray:
    """pHash of uint8 images ``(N, S, S)``: low ``BAND x BAND`` DCT coefficients above their median.

    Returns ``(N, 256)`` bool.
    """
    coeffs = dctn(pixels.astype(np.float32), axes=(1, 2), norm="ortho")[:, :BAND, :BAND].reshape(len(pixels), -1)
    med = np.median(coeffs[:, 1:], axis=1, keepdims=True)  # the DC term would dominate the median
    return coeffs > med


def detail_thumbnail(pixels: np.ndarray) -> np.ndarray:
    """Unit-norm, zero-mean ``THUMB x THUMB`` high-pass of uint8 images ``(N, S, S)`` (``S`` a multiple of THUMB).

    A brightness/contrast change ``a * x + b`` (``a > 0``) leaves it unchanged, so the dot product of two
    thumbnails (their correlation) stays ~1 for re-windowed or sharpened copies. Returns ``(N, THUMB * THUMB)``
    float32.
    """
    n, s = len(pixels), pixels.shape[-1]
    f = s // THUMB
    thumb = pixels.reshape(n, THUMB, f, THUMB, f).astype(np.float32).mean((2, 4))
    detail = (thumb - uniform_filter(thumb, (1, DETAIL_BOX, DETAIL_BOX))).reshape(n, -1)
    detail -= detail.mean(1, keepdims=True)
    return detail / np.maximum(np.linalg.norm(detail, axis=1, keepdims=True), 1e-6)


def _file_digest(src) -> bytes:
    if isinstance(src, (bytes, bytearray)):
        return hashlib.sha256(src).digest()
    with open(src, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


@dataclass
class Fingerprints:
    """Copy-detection keys of ``N`` images.

    ``digests`` ``(N,)`` ``S32`` SHA-256 of the files; ``hashes`` ``(N, 2, 4)`` uint64 packed pHash of the image
    and of its mirror; ``detail`` ``(N, 2, THUMB * THUMB)`` float32 detail thumbnails of the image and its mirror.
    """

    digests: np.ndarray
    hashes: np.ndarray
    detail: np.ndarray

    def __len__(self) -> int:
        return len(self.digests)

    def subset(self, index: np.ndarray) -> Fingerprints:
        return Fingerprints(self.digests[index], self.hashes[index], self.detail[index])


def fingerprints(decoded: DecodedImages) -> Fingerprints:
    """:class:`Fingerprints` of the readable images of ``decoded`` (decoded at ``HASH_SIZE``)."""
    px = decoded.pixels
    mirrored = np.ascontiguousarray(px[:, :, ::-1])
    digests = np.array([_file_digest(s) for s in decoded.records.sources], dtype="S32")
    hashes = np.stack([np.packbits(perceptual_hash(p), axis=1).view(np.uint64) for p in (px, mirrored)], 1)
    detail = np.stack([detail_thumbnail(p) for p in (px, mirrored)], 1)
    return Fingerprints(digests, hashes, detail)


def distances(a: Fingerprints, b: Fingerprints) -> dict[str, np.ndarray]:
    """How far each image of ``a`` is from each of ``b``, each ``(len(a), len(b))``.

    ``exact``: bool, identical files; ``phash``: Hamming distance of the pHashes; ``mirrored_phash``: of one
    image's pHash to the other's mirror (the smaller of both ways round); ``correlation``: of the detail
    thumbnails, plain or mirrored (the larger).
    """
    ha, hb = a.hashes, b.hashes

    def bits(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.bitwise_count(x[:, None, :] ^ y[None, :, :]).sum(-1)

    return {
        "exact": a.digests[:, None] == b.digests[None, :],
        "phash": bits(ha[:, 0], hb[:, 0]),
        "mirrored_phash": np.minimum(bits(ha[:, 0], hb[:, 1]), bits(ha[:, 1], hb[:, 0])),
        "correlation": np.maximum(a.detail[:, 0] @ b.detail[:, 0].T, a.detail[:, 0] @ b.detail[:, 1].T),
    }


def links(a: Fingerprints, b: Fingerprints, threshold: int = DEFAULT_THRESHOLD,
          min_correlation: float = DEFAULT_MIN_CORRELATION) -> dict[str, np.ndarray]:
    """Which images of ``a`` are copies of which of ``b``, per kind of :data:`LINK_KINDS` (they overlap):
    ``{kind: (len(a), len(b)) bool}``. pHashes link within ``threshold`` bits; ``intensity`` links detail
    thumbnails correlated at least ``min_correlation``."""
    d = distances(a, b)
    return {
        "exact": d["exact"],
        "phash": d["phash"] <= threshold,
        "mirrored_phash": d["mirrored_phash"] <= threshold,
        "intensity": d["correlation"] >= min_correlation,
    }


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


@dataclass
class DuplicateReport:
    """Groups of record indices (into ``records``) that are copies of each other."""

    records: ImageRecords
    exact_groups: list[list[int]]
    near_groups: list[list[int]]  # all groups: every kind of link together
    threshold: int
    min_correlation: float
    link_counts: dict[str, int]  # linked pairs per kind, each attributed to its first kind in LINK_KINDS
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
            "min_correlation": self.min_correlation,
            "exact_groups": len(self.exact_groups),
            "exact_redundant_images": sum(len(g) - 1 for g in self.exact_groups),
            **{f"pairs_{k}": n for k, n in self.link_counts.items()},
            "groups": len(self.near_groups),
            "images_in_groups": sum(len(g) for g in self.near_groups),
            "largest_group": max((len(g) for g in self.near_groups), default=0),
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
    records: ImageRecords, threshold: int = DEFAULT_THRESHOLD, min_correlation: float = DEFAULT_MIN_CORRELATION,
    decoded: DecodedImages | None = None,
) -> DuplicateReport:
    """Find exact and near-copy groups among ``records`` (unreadable files are skipped and listed)."""
    decoded = decoded or decode_cached(records, HASH_SIZE)
    fp = fingerprints(decoded)
    pairs: dict[str, list[tuple[int, int]]] = {k: [] for k in LINK_KINDS}
    n = len(fp)
    for start in range(0, n, BLOCK):  # rows start..start+BLOCK against columns start..n: each pair once
        rows, cols = np.arange(start, min(start + BLOCK, n)), np.arange(start, n)
        block = links(fp.subset(rows), fp.subset(cols), threshold, min_correlation)
        upper = rows[:, None] < cols[None, :]
        for kind in LINK_KINDS:  # each pair under its first kind
            a, b = np.nonzero(block[kind] & upper)
            pairs[kind] += list(zip((rows[a]).tolist(), cols[b].tolist()))
            upper &= ~block[kind]
    every = [p for kind in LINK_KINDS for p in pairs[kind]]
    return DuplicateReport(
        decoded.records, _union_find(n, pairs["exact"]), _union_find(n, every), threshold,
        min_correlation, {k: len(v) for k, v in pairs.items()}, decoded.skipped,
    )
