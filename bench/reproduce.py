"""``kdcore reproduce`` of a preset, timed per stage, as a committed report (``bench/results/reproduce_<preset>``).

Runs (or, where ``--runs`` already holds it, resumes) the whole pipeline, then writes its summary: the time per
stage and both models' validation scores, the final epoch's and the exported (best) epoch's, labelled as such.

    python -m bench.reproduce --data ../shared/data/brain-tumor-mri/train --runs runs/repro-cpu --preset cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench.report import REPO, RESULTS, command, md_table, relative, write
from kdcore.engine.loop import run_to_end
from kdcore.reproduce import STATE_FILE, reproduce


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train")
    p.add_argument("--runs", required=True, help="the reproduction's folder (resumed when it holds one)")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--split", default=None)
    p.add_argument("--out", default=None, help="results path without extension (default: reproduce_<preset>)")
    a = p.parse_args(argv)
    runs = Path(a.runs)
    end = run_to_end(reproduce(a.data, runs, a.preset, resume=(runs / STATE_FILE).is_file(), split=a.split))
    if end.get("event") != "done":
        raise SystemExit(f"the reproduction stopped: {end}")
    summary = end["summary"]
    summary["split"] = relative(summary["split"])
    summary |= {"command": command("bench.reproduce", argv),
                "commands": (runs / "commands.sh").read_text().replace(f"{REPO}/", "").splitlines()}
    body = (runs / "summary.md").read_text().splitlines()[2:]  # its title and blank line replaced by the report's
    rows = []
    for name, model in summary["models"].items():
        model["folder"], times = relative(model["folder"]), model["epoch_time_s"]
        rows.append([name, len(times), f"{min(times):.0f}", f"{statistics.median(times):.0f}", f"{max(times):.0f}"])
    body += ["", "Training seconds per epoch (a spread far above the minimum means other jobs shared the CPU):", "",
             *md_table(["model", "epochs", "min", "median", "max"], rows)]
    body += ["", f"Each stage as its own command (`{relative(runs / 'commands.sh')}`):", "", "```bash",
             *summary["commands"], "```"]
    write(a.out or RESULTS / f"reproduce_{a.preset}", json.loads(json.dumps(summary)),
          f"Reproduction of both models, preset `{a.preset}`", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
