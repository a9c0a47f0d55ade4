"""Where an upload sits in the model's square input: :func:`kdcore.data.imageio.square_resize` as coordinates.

Coordinates are continuous pixel coordinates ``(x, y)``, origin at the top-left corner of the top-left pixel,
pixel ``i`` spanning ``[i, i + 1)`` (so pixel centres are at ``i + 0.5``), in the convention of PIL's resize. The
upload ``(height, width)`` is padded on black to a centred square of side ``max(height, width)``, then resized to
``size x size``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """The mapping between an upload ``(height, width)`` and the model's ``(size, size)`` input, both ways."""

    height: int
    width: int
    size: int

    @property
    def side(self) -> int:
        """Side of the padded square, in upload pixels."""
        return max(self.height, self.width)

    @property
    def offset(self) -> np.ndarray:
        """``(left, top)`` padding added before the upload, in upload pixels."""
        return np.array([(self.side - self.width) // 2, (self.side - self.height) // 2], dtype=np.float64)

    @property
    def scale(self) -> float:
        """Input pixels per upload pixel."""
        return self.size / self.side

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Upload coordinates ``(..., 2)`` as ``(x, y)`` -> input coordinates (same shape)."""
        return (np.asarray(xy, dtype=np.float64) + self.offset) * self.scale

    def to_upload(self, xy: np.ndarray) -> np.ndarray:
        """Input coordinates ``(..., 2)`` as ``(x, y)`` -> upload coordinates (same shape)."""
        return np.asarray(xy, dtype=np.float64) / self.scale - self.offset

    def box_to_input(self, box: np.ndarray) -> np.ndarray:
        """A box ``(x0, y0, x1, y1)`` in upload coordinates -> the same box in input coordinates."""
        return self.to_input(np.asarray(box, dtype=np.float64).reshape(2, 2)).reshape(4)

    def box_to_upload(self, box: np.ndarray) -> np.ndarray:
        """A box ``(x0, y0, x1, y1)`` in input coordinates -> the same box in upload coordinates."""
        return self.to_upload(np.asarray(box, dtype=np.float64).reshape(2, 2)).reshape(4)
