"""The measured figures the Benchmark tab shows: the committed reports of ``bench/`` (``bench/results/*.md``, each
with the command that reproduces it), read beside the app in a checkout and copied into a Space by
:func:`kdcore_app.space.assemble_space`."""

from __future__ import annotations

from pathlib import Path

#: The reports, by the title the tab lists them under -> their name in ``bench/results``
REPORTS = {
    ("Distillation on the v2 split at 64 px, 60 epochs, fixed views: every configuration on the <= 1% student "
     "and on the shipped student's architecture, 5 seeds each, and the tuning grid"):
        "distill_ablation_views_64",
    "Each student's learning rate, trained alone (64 px, 60 epochs): the recipe its ablation runs at": "student_lr_64",
    "Distillation at the <= 1% student's own learning rate (1.5e-2, 64 px, 60 epochs): the logit configurations, "
    "6 seeds": "distill_ablation_views_64_lr",
    "Distillation on the mobile student at its own learning rate (mobilenetv2_035, 3e-2, 64 px, 60 epochs): every "
    "configuration, 5-6 seeds each, and the tuning grid": "distill_ablation_views_64_mobile",
    "Distillation on the v2 split at 128 px: every configuration, three students, 15 epochs, 5 seeds":
        "distill_ablation_gpu_e15",
    "Distillation on the v2 split at 128 px, the <= 1% student: KD and DIST, 60 epochs, 5 seeds":
        "distill_ablation_w8_128",
    "Distillation on the v2 split at 128 px, the shipped student's architecture: KD, 60 epochs, 5 seeds":
        "distill_ablation_w20_128",
    "The <= 1% student (student-tiny): recipes tried, one run each": "tiny_student",
    "Distillation on the v2 split, CPU scale: verdicts on the <= 1% student": "distill_ablation_cpu",
    "Distillation: the thesis's claims, verdicts and ablation (first split)": "distill_ablation",
    "The Distill tab's short preset: KD against the student alone": "short_preset_bf16",
    "The short preset in float32, with the 24-epoch v2 teacher": "short_preset",
    "The short preset in float32, with a 48-epoch v2 teacher": "short_preset_teacher48",
    "Reproduction of both bundled models on a 2-core CPU (preset cpu)": "reproduce_cpu",
    "The bundled models: accuracy, size and CPU latency": "models",
    "Explanations: tumour localisation, faithfulness, lattice": "explain",
    "Explanations of student-tiny beside the teacher's": "explain_tiny",
    "Explanations: the best pointing game a coarse Grad-CAM grid allows": "gradcam_ceiling",
    "Explanations: which strided layers draw the LRP stride lattice": "lrp_lattice_sources",
    "Student selection: training-free proxies against distilled accuracy": "rank_validate_v2",
    "Student selection with the first-split teacher (the previous validation)": "rank_validate",
    "Calibration and the out-of-distribution check": "calibration_ood",
    "The validation split: copies of training images it holds": "split_leak",
}
#: ``bench/results`` of the checkout (or Space folder) that holds this app
RESULTS_DIR = Path(__file__).resolve().parent.parent / "bench" / "results"


def report_markdown(title: str, folder: Path = RESULTS_DIR) -> str:
    """The report listed under ``title``, or one line saying where it would be."""
    name = REPORTS.get(title)
    if name is None:
        return f"No report named {title!r}."
    path = folder / f"{name}.md"
    if not path.is_file():
        return (f"This install holds no `bench/results/{name}.md`; the project's repository has it, with the command "
                "that measures it.")
    return path.read_text()
