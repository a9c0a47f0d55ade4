"""What every tab shares: the model list, the distillation runs, the default data reference, the sample slices."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kdcore.errors import KDCoreError
from kdcore.paths import samples_dir as bundled_samples
from kdcore.service import DEMO_DATA, ModelStore, RunRegistry

#: Uploads the app accepts (and sample files it lists): plain images, DICOM files, NIfTI volumes.
IMAGE_TYPES = (".jpg", ".jpeg", ".png", ".dcm", ".dicom", ".nii", ".nii.gz")
#: What the upload's label says it takes.
FORMATS = "JPEG, PNG, DICOM, NIfTI"
#: what the data fields of Rank, Distill and Benchmark accept
DATA_HELP = "demo (the bundled demo set), a labelled folder on the server, or a Hub dataset id"
#: Class ids (as the model configs hold them) -> the names the UI shows; ids not listed show as they are.
DISPLAY_NAMES = {"notumor": "no tumour"}


def display_name(class_id: str) -> str:
    """The UI's name of a class id, e.g. ``notumor`` -> ``no tumour``."""
    return DISPLAY_NAMES.get(class_id, class_id)


@dataclass
class AppState:
    """One app's shared state (every session sees the same model list)."""

    store: ModelStore
    runs: RunRegistry
    data_dir: str  # the data reference the Rank, Distill and Benchmark tabs start with (default: the demo set)
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
        slices, ``data_dir`` to ``KDCORE_DATA`` or the bundled demo set, runs to :func:`kdcore.paths.runs_dir`."""
        store = ModelStore.with_defaults(teacher, student)
        samples = Path(samples_dir or bundled_samples())
        files = sorted(p for p in samples.glob("*") if p.name.lower().endswith(IMAGE_TYPES)) if samples.is_dir() else []
        return cls(store, RunRegistry(store, runs_dir), data_dir or os.environ.get("KDCORE_DATA") or DEMO_DATA, files,
                   Path(tempfile.mkdtemp(prefix="kdcore-app-")))

    def models(self) -> list[str]:
        """The model list's names, for dropdowns."""
        return self.store.names()

    def student_arch(self) -> str | None:
        """The architecture of the model list's ``student`` (None when it cannot be loaded)."""
        try:
            return self.store.get("student")[1].arch
        except KDCoreError:
            return None
