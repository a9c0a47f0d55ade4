"""The benchmarks' one report writer: the result as JSON, a markdown report, and the command that reproduces both."""

from __future__ import annotations

import json
import shlex
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parent.parent


def command(module: str, argv: list[str] | None = None) -> str:
    """The command line that reproduces this run: ``python -m bench.NAME ARGS`` (``argv``, else the process's)."""
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "-m", module, *(relative(a) if Path(a).is_absolute() else a for a in args)])


def relative(path: str | Path) -> str:
    """``path`` relative to the repository root (``../shared/...`` beside it too), so results name no machine's
    folders; a path on another branch of the file system stays as it is."""
    p = Path(path).resolve()
    if p.is_relative_to(REPO):
        return str(p.relative_to(REPO))
    return str(Path("..") / p.relative_to(REPO.parent)) if p.is_relative_to(REPO.parent) else str(path)


def md_table(header: list[str], rows: Iterable[Iterable[object]]) -> list[str]:
    """Markdown table lines: ``header``, its rule, then one line per row."""
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header)] + [
        f"| {' | '.join(str(c) for c in row)} |" for row in rows]


def mean_std(xs: list[float]) -> str:
    """``"mean ± std"`` at 4 decimals (std 0 for a single value)."""
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.4f}"


def write(out: str | Path, result: dict, title: str, body: list[str], note: str = "",
          indent: int | None = 1) -> str:
    """Write ``result`` to ``OUT.json`` and the report to ``OUT.md``, print the report and return it.

    The report is ``# title``, ``Command: `result["command"]` `` followed by ``note`` (machine, settings), then
    ``body`` (lines). ``indent=None`` keeps large results (per-image predictions) on one line.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=indent))
    text = "\n".join([f"# {title}", "", f"Command: `{result['command']}`{note}", "", *body]) + "\n"
    out.with_suffix(".md").write_text(text)
    print(text)
    return text


def fmt_diff(d: dict) -> str:
    """``+0.0123 [-0.0045, +0.0290]``: a paired difference and its 95% interval."""
    return f"{d['diff']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"


def fmt_over_seeds(d: dict) -> str:
    """``+0.0123 [-0.0045, +0.0290], p 0.0625``: the mean over seeds, its t-interval and sign-flip p-value."""
    return f"{fmt_diff(d)}, p {d['p']:.4f}" if d["ci95"] else f"{d['diff']:+.4f} (one seed)"
