"""What every tab shares: the model list, the distillation runs, the default data folder, the sample slices."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kdcore.paths import samples_dir as bundled_samples
from kdcore.service import ModelStore, RunRegistry

#: Uploads the app accepts (and sample files it lists).
IMAGE_TYPES = (".jpg", ".jpeg", ".png")


@dataclass
class AppState:
    """One app's shared state (every session sees the same model list)."""

    store: ModelStore
    runs: RunRegistry
    data_dir: str  # the data folder the Rank, Distill and Benchmark tabs start with
    samples: list[Path]  # example slices under the upload
    downloads: Path  # zipped model folders handed to the browser

    @classmethod
    def create(
        cls,
        teacher: str | None = None,
        student: str | None = None,
        samples_dir: str | os.PathLike | None = None,
        data_dir: str | None = None,
        runs_dir: str | os.PathLike | None = None,
    ) -> AppState:
        """Models default to ``KDCORE_TEACHER``/``KDCORE_STUDENT`` or the bundled ones, samples to the bundled
        slices, ``data_dir`` to ``KDCORE_DATA``, runs to :func:`kdcore.paths.runs_dir`."""
        store = ModelStore.with_defaults(teacher, student)
        samples = Path(samples_dir or bundled_samples())
        files = sorted(p for p in samples.glob("*") if p.suffix.lower() in IMAGE_TYPES) if samples.is_dir() else []
        return cls(store, RunRegistry(store, runs_dir), data_dir or os.environ.get("KDCORE_DATA", ""), files,
                   Path(tempfile.mkdtemp(prefix="kdcore-app-")))

    def models(self) -> list[str]:
        """The model list's names, for dropdowns."""
        return self.store.names()
