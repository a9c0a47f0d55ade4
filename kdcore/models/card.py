"""Model cards: a Hub-compatible ``README.md`` (YAML model-index + prose) generated from a model's summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kdcore.models.folder import ModelInfo

INTENDED_USE = (
    "Research and teaching on knowledge distillation and explainability for brain-MRI classification. "
    "**Not a medical device: not for diagnosis or any clinical decision.**"
)
LIMITATIONS = (
    "Trained on the public 4-class Brain Tumor MRI Dataset (Nickparvar, Kaggle; glioma, meningioma, notumor, "
    "pituitary), which merges figshare, SARTAJ and Br35H slices. It has not seen other scanners, sequences or "
    "pathologies and says nothing useful about them; near-duplicate images were kept on one side of the split."
)


def model_card_text(info: ModelInfo, params: int, repo_id: str | None = None) -> str:
    """The card for a model folder: metrics from ``info.summary['val_metrics']`` go into the model-index.

    ``repo_id`` (``OWNER/NAME``) fills the loading snippet once the Hub repo is known.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    summary = info.summary or {}
    metrics = summary.get("val_metrics", {})
    results = [
        EvalResult(
            task_type="image-classification", dataset_type=summary.get("dataset_id", "brain-tumor-mri"),
            dataset_name=summary.get("dataset_name", "Brain Tumor MRI (own validation split)"),
            dataset_split="validation", metric_type=m, metric_value=float(metrics[m]),
        )
        for m in ("accuracy", "macro_f1")
        if m in metrics
    ]
    data = ModelCardData(
        library_name="timm", license="apache-2.0", tags=["image-classification", "timm", "kdcore", "brain-mri"],
        model_name=info.name, eval_results=results or None, pipeline_tag="image-classification",
    )
    spec = info.spec
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items() if not isinstance(v, (dict, list)))
    body = f"""# {info.name}

A `{info.arch}` ({params:,} parameters) brain-MRI classifier made with kdcore.
Classes: {", ".join(info.class_names)}.

## Input
Greyscale, {spec.channels} channel, padded to a square on black and resized to {spec.size}x{spec.size},
scaled to [0, 1], normalised with mean {spec.mean} and std {spec.std}.

## Validation metrics
{_metrics_table(metrics)}
{_epoch_note(summary)}
{_profile_section(summary.get("profile", {}))}
## Training
| field | value |
|---|---|
{rows}

## Intended use
{INTENDED_USE}

## Limitations
{LIMITATIONS}

## Load
```python
import timm
model = timm.create_model("hf-hub:{repo_id or 'OWNER/NAME'}", pretrained=True)  # or kdcore.models.load_model(folder)
```
"""
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body).content


def _metrics_table(metrics: dict) -> str:
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    if not flat:
        return "Not evaluated yet."
    return "| metric | value |\n|---|---|\n" + "\n".join(
        f"| {k} | {v:,} |" if isinstance(v, int) else f"| {k} | {v:.4g} |" for k, v in flat.items())


def _epoch_note(summary: dict) -> str:
    """Which epoch's weights these are: the final one, or the best on the same validation images."""
    epoch, epochs = summary.get("epoch", summary.get("best_epoch")), summary.get("epochs")
    if epoch is None or not epochs:
        return ""
    if summary.get("exported") == "last":
        return f"The weights and scores of the final epoch ({epoch + 1} of {epochs}).\n"
    return (f"The weights of epoch {epoch + 1} of {epochs}, the best on these validation images: chosen on them, "
            "so the scores are optimistic.\n")


def _profile_section(profile: dict) -> str:
    """``summary['profile']``: measured size and speed (numbers), the command that measured them (``measured_by``)
    and where (``machine``)."""
    if not profile:
        return ""
    where = f" ({profile['machine']})" if "machine" in profile else ""
    note = f"\nMeasured by `{profile['measured_by']}`{where}.\n" if "measured_by" in profile else ""
    return f"\n## Size and speed\n{_metrics_table(profile)}\n{note}"
