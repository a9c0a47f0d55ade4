"""Time from upload to all Diagnose results (both predictions + four rendered heatmaps), through the running app.

Launches the app on 127.0.0.1, uploads each sample with gradio_client and waits for the whole answer (HTTP upload,
decode, two forward passes, LRP and Grad-CAM for each model, overlays, response). Also times the in-process parts
with ``kdcore.service.diagnose``. Writes ``bench/results/app_latency.json`` and ``.md``.

    python -m bench.app_latency [--teacher REF] [--student REF] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from gradio_client import Client, handle_file

from bench.report import RESULTS, command, md_table, write
from kdcore.explain.render import MAX_ALPHA
from kdcore.paths import samples_dir
from kdcore.service import ModelStore, diagnose
from kdcore_app import build_demo

TARGET_MS = 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="teacher")
    p.add_argument("--student", default="student")
    p.add_argument("--samples", default=str(samples_dir()))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "app_latency"))
    a = p.parse_args(argv)
    samples = sorted(p for p in Path(a.samples).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not samples:
        raise SystemExit(f"no samples in {a.samples}")

    store = ModelStore.with_defaults(a.teacher, a.student)
    diagnose(samples[0], store)  # warm-up: load models, first-call overheads
    parts = []
    for s in samples:
        d = diagnose(s, store)
        parts.append({"sample": s.name, "total_ms": d.seconds * 1000,
                      **{f"{who}_{k}": v for who, pr in (("teacher", d.teacher), ("student", d.student))
                         for k, v in [("inference_ms", pr.inference_ms),
                                      *[(f"{m}_ms", ms) for m, ms in pr.explain_ms.items()]]}})

    demo = build_demo(a.teacher, a.student, a.samples)
    demo.queue(default_concurrency_limit=2)
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    client = Client(url, verbose=False)
    client.predict(handle_file(str(samples[0])), "teacher", "student", 0, MAX_ALPHA, api_name="/diagnose")  # warm-up
    e2e = []
    for _ in range(a.repeats):
        for s in samples:
            t0 = time.perf_counter()
            client.predict(handle_file(str(s)), "teacher", "student", 0, MAX_ALPHA, api_name="/diagnose")
            e2e.append((time.perf_counter() - t0) * 1000)
    demo.close()

    e2e.sort()
    res = {
        "command": command("bench.app_latency", argv), "teacher": a.teacher, "student": a.student,
        "samples": len(samples), "requests": len(e2e),
        "upload_to_results_ms": {"median": statistics.median(e2e), "p90": e2e[int(0.9 * (len(e2e) - 1))],
                                 "max": e2e[-1]},
        "target_ms": TARGET_MS,
        "in_process_median_ms": {k: statistics.median(r[k] for r in parts) for k in parts[0] if k != "sample"},
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
        "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "per_sample": parts,
    }
    u = res["upload_to_results_ms"]
    body = md_table(["upload to all results", "ms"],
                    [["median", f"{u['median']:.0f}"], ["p90", f"{u['p90']:.0f}"], ["max", f"{u['max']:.0f}"],
                     ["target", TARGET_MS]])
    body += ["", "In-process parts (`kdcore.service.diagnose`, median over the samples):", "",
             *md_table(["part", "ms"], [[k, f"{v:.1f}"] for k, v in res["in_process_median_ms"].items()])]
    write(a.out, res, "Diagnose latency: upload to all results", body,
          f" ({res['date']}, {res['cpu_count']} CPU cores, torch threads {res['torch_threads']}, 1-min load average "
          f"{res['load_avg_1m']:.1f} at the end).\nTeacher `{a.teacher}`, student `{a.student}`.\n"
          f"{len(samples)} samples x {a.repeats} requests through gradio_client (HTTP upload included).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
