"""Time from upload to all Diagnose results (both predictions + four rendered heatmaps), through the running app.

Launches the app on 127.0.0.1, uploads each sample with gradio_client and waits for the whole answer (HTTP upload,
decode, two forward passes, LRP and Grad-CAM for each model, overlays, response). Also times the in-process parts
with ``kdcore.service.diagnose``. Writes ``bench/results/app_latency.{json,md}``.

    python bench/app_latency.py [--teacher REF] [--student REF] [--repeats 3]

Default models: the bundled ``models/teacher`` / ``models/student``; where they are missing, the teacher in
training (``runs/teacher-r18-128/best``) and a freshly initialised student of the ``short`` distillation preset
(latency does not depend on training).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def default_models(tmp: Path) -> tuple[str, str, dict]:
    from kdcore.distill import PRESETS
    from kdcore.data.imageio import InputSpec
    from kdcore.models import BUNDLED, create_model, load_model, save_model, ModelInfo

    note = {}
    teacher = "teacher" if (BUNDLED["teacher"] / "model.safetensors").is_file() else str(
        REPO / "runs" / "teacher-r18-128" / "best")
    if (BUNDLED["student"] / "model.safetensors").is_file():
        return teacher, "student", note
    _, tinfo = load_model(teacher)
    arch, size = PRESETS["short"]["student"], PRESETS["short"]["size"]
    spec = InputSpec(size, 1, tinfo.spec.mean, tinfo.spec.std)
    student = save_model(create_model(arch, len(tinfo.class_names), spec), tmp / "student",
                         ModelInfo(arch, tinfo.class_names, spec))
    note["student"] = f"untrained {arch} at {size} px (no bundled student yet)"
    return teacher, str(student), note


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=None)
    p.add_argument("--student", default=None)
    p.add_argument("--samples", default=str(REPO / "samples"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    a = p.parse_args()

    import torch
    from gradio_client import Client, handle_file

    from kdcore_app import build_demo
    from kdcore.service import ModelStore, diagnose

    tmp = Path(tempfile.mkdtemp(prefix="kdcore-bench-"))
    teacher, student, note = default_models(tmp)
    teacher, student = a.teacher or teacher, a.student or student
    samples = sorted(p for p in Path(a.samples).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not samples:
        raise SystemExit(f"no samples in {a.samples}")

    store = ModelStore.with_defaults(teacher, student)
    diagnose(samples[0], store)  # warm-up: load models, first-call overheads
    parts = []
    for s in samples:
        d = diagnose(s, store)
        parts.append({"sample": s.name, "total_ms": d.seconds * 1000,
                      **{f"{who}_{k}": v for who, pr in (("teacher", d.teacher), ("student", d.student))
                         for k, v in [("inference_ms", pr.inference_ms),
                                      *[(f"{m}_ms", ms) for m, ms in pr.explain_ms.items()]]}})

    demo = build_demo(teacher, student, a.samples)
    demo.queue(default_concurrency_limit=2)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    client = Client(url, verbose=False)
    client.predict(handle_file(str(samples[0])), "teacher", "student", api_name="/diagnose")  # warm-up
    e2e = []
    for _ in range(a.repeats):
        for s in samples:
            t0 = time.perf_counter()
            client.predict(handle_file(str(s)), "teacher", "student", api_name="/diagnose")
            e2e.append((time.perf_counter() - t0) * 1000)
    demo.close()

    e2e.sort()
    summary = {
        "command": "python bench/app_latency.py " + " ".join(sys.argv[1:]),
        "teacher": teacher, "student": student, "note": note, "samples": len(samples), "requests": len(e2e),
        "upload_to_results_ms": {"median": statistics.median(e2e), "p90": e2e[int(0.9 * (len(e2e) - 1))],
                                 "max": e2e[-1]},
        "target_ms": 2000,
        "in_process_median_ms": {k: statistics.median(r[k] for r in parts) for k in parts[0] if k != "sample"},
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
        "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "app_latency.json").write_text(json.dumps(summary | {"per_sample": parts}, indent=1))
    u = summary["upload_to_results_ms"]
    rows = "\n".join(f"| {k} | {v:.1f} |" for k, v in summary["in_process_median_ms"].items())
    (out / "app_latency.md").write_text(f"""# Diagnose latency: upload to all results

Command: `{summary['command']}` ({summary['date']}, {summary['cpu_count']} CPU cores, torch threads
{summary['torch_threads']}, 1-min load average {summary['load_avg_1m']:.1f} at the end).
Teacher `{teacher}`, student `{student}`{' (' + note['student'] + ')' if note else ''}.
{len(samples)} samples x {a.repeats} requests through gradio_client (HTTP upload included).

| upload to all results | ms |
|---|---|
| median | {u['median']:.0f} |
| p90 | {u['p90']:.0f} |
| max | {u['max']:.0f} |
| target | 2000 |

In-process parts (`kdcore.service.diagnose`, median over the samples):

| part | ms |
|---|---|
{rows}
""")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
