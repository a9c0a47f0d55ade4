"""What the proxy validation measured, shipped with the library: each proxy's agreement with distilled accuracy and
each candidate's distilled accuracy.

``python -m bench.rank_validate --publish`` writes ``kdcore/bundled/ranking/validation.json``: the teacher and
the recipe every candidate was distilled with, ``proxies`` (``{proxy: {tau, low, high, p, n, seconds}}``: Kendall
tau against the mean distilled accuracy, its 95% bootstrap interval over candidates, the permutation p-value, the
number of candidates, the median seconds per candidate) and ``distilled`` (``{candidate: {accuracy, std}}``: mean
and std over seeds of the final validation accuracy). :func:`with_accuracy` joins those accuracies to a ranking
and marks its accuracy/latency Pareto set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kdcore.paths import bundled

VALIDATION_FILE = bundled("ranking", "validation.json")


@dataclass(frozen=True)
class Validation:
    """The published validation (empty when none is shipped)."""

    proxies: dict[str, dict[str, float]] = field(default_factory=dict)
    distilled: dict[str, dict[str, float]] = field(default_factory=dict)
    teacher: str = ""
    recipe: str = ""
    command: str = ""


def load_validation(path: str | Path = VALIDATION_FILE) -> Validation:
    """The validation published at ``path``, or an empty one when there is no file."""
    path = Path(path)
    if not path.is_file():
        return Validation()
    d = json.loads(path.read_text())
    return Validation(d["proxies"], d["distilled"], d["teacher"], d["recipe"], d["command"])


def pareto_set(points: dict[str, tuple[float, float]]) -> set[str]:
    """The names whose ``(accuracy, latency)`` no other point beats: at least as accurate and as fast, and strictly
    better in one."""
    return {n for n, (acc, lat) in points.items()
            if not any(a >= acc and t <= lat and (a > acc or t < lat) for a, t in points.values())}


def with_accuracy(rows: list[dict], validation: Validation) -> list[dict]:
    """``rows`` of a ranking (``name``, ``latency_ms``), each with ``distilled_accuracy`` and ``distilled_std``
    (None when the candidate was not distilled) and ``pareto`` (on the accuracy/latency Pareto set of the
    ranked candidates with a known accuracy)."""
    known = {r["name"]: (validation.distilled[r["name"]]["accuracy"], r["latency_ms"]) for r in rows
             if r["name"] in validation.distilled}
    front = pareto_set(known)
    out = []
    for r in rows:
        d = validation.distilled.get(r["name"], {})
        out.append(r | {"distilled_accuracy": d.get("accuracy"), "distilled_std": d.get("std"),
                        "pareto": r["name"] in front})
    return out


def accuracy_text(row: dict) -> str | None:
    """``"0.922 ± 0.004"``: a ranked row's distilled accuracy and its seed std, or None when not distilled."""
    if row.get("distilled_accuracy") is None:
        return None
    return f"{row['distilled_accuracy']:.3f} ± {row['distilled_std']:.3f}"
