"""How long a DisWOT ranking takes on this CPU: per candidate and for the whole registry, building included.

Times the steps of ``python -m kdcore rank``: the candidate table (params, FLOPs, 5-repeat batch-1 latency), the
teacher's terms (once) and each candidate's build + terms, for one stratified batch of N = 64 at the teacher's
resolution; the ``thesis`` variant (LRP maps) on a few candidates. The load average is recorded because the
CPU is shared. Writes ``bench/results/diswot_speed.json`` and ``.md``.

    nice -n 10 python -m bench.diswot_speed --teacher teacher
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from bench.report import RESULTS, command, md_table, write
from kdcore.data.pack import load_train_data
from kdcore.models import load_model
from kdcore.rank.candidates import CANDIDATES, build_candidate, candidate_table
from kdcore.rank.diswot import SCORES, compare, model_terms, sample_inputs

THESIS_SUBSET = ["lcnet_035", "mobilenetv3_small_100", "mobilenetv2_100", "efficientnet_b0"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/brain-tumor-mri/train")
    p.add_argument("--teacher", default="teacher")
    p.add_argument("--out", default=str(RESULTS / "diswot_speed"))
    a = p.parse_args(argv)
    teacher, info = load_model(a.teacher)
    spec = info.spec
    data = load_train_data(a.data, spec.size)
    batches = sample_inputs(data.train.pixels, data.train.labels, spec, 64, 1, seed=0)
    res = {"command": command("bench.diswot_speed", argv),
           "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg(),
           "size": spec.size, "n": 64}
    clock = lambda: (time.perf_counter(), time.process_time())  # noqa: E731  (wall, CPU of this process)
    since = lambda t: (time.perf_counter() - t[0], time.process_time() - t[1])  # noqa: E731
    k = len(info.class_names)
    t0 = clock()
    table = candidate_table(spec, list(CANDIDATES), num_classes=k)
    res["table_s"] = since(t0)
    # what ``rank`` does, step by step, so that each step's wall and CPU time is seen
    refs, res["teacher_s"], res["original"], res["thesis"] = {}, {}, {}, {}

    def score(variant: str, names: list[str]) -> None:
        t1 = clock()
        refs[variant] = model_terms(teacher, batches, SCORES[variant])
        res["teacher_s"][variant] = since(t1)
        for name in names:
            t1 = clock()
            compare(refs[variant], model_terms(build_candidate(name, k, spec), batches, SCORES[variant]))
            res[variant][name] = since(t1)

    t1 = clock()
    score("original", [r["name"] for r in table])
    res["rank_s"], res["total_s"] = since(t1), since(t0)  # total: table + teacher once + every candidate
    score("thesis", THESIS_SUBSET)
    res["loadavg_end"] = os.getloadavg()
    wall = sorted(w for w, _ in res["original"].values())
    cpu = sorted(c for _, c in res["original"].values())
    fmt = lambda t: f"{t[0]:.2f} / {t[1]:.2f}" if t else "-"  # noqa: E731
    body = md_table(["step", "wall (s)", "CPU (s)"], [
        [f"candidate table ({len(table)} candidates: build, FLOPs, 5-repeat latency)", f"{res['table_s'][0]:.1f}",
         f"{res['table_s'][1]:.1f}"],
        ["teacher terms, original (once per ranking)", *(f"{t:.2f}" for t in res["teacher_s"]["original"])],
        [f"teacher + build and score {len(table)} candidates, original", *(f"{t:.1f}" for t in res["rank_s"])],
        ["**total, table included**", *(f"**{t:.1f}**" for t in res["total_s"])],
        ["teacher terms, thesis (LRP maps on 16 images, once per ranking)",
         *(f"{t:.2f}" for t in res["teacher_s"]["thesis"])],
        ["one candidate, original: median / max", f"{wall[len(wall) // 2]:.2f} / {wall[-1]:.2f}",
         f"{cpu[len(cpu) // 2]:.2f} / {cpu[-1]:.2f}"]])
    body += ["", "Per candidate (build + terms), seconds wall / CPU:", "",
             *md_table(["candidate", "original", "thesis (LRP maps on 16 images)"],
                       [[n, fmt(t), fmt(res["thesis"].get(n))] for n, t in res["original"].items()])]
    write(a.out, res, "DisWOT ranking speed", body,
          f"  \n{res['threads']} threads on {res['cpu_count']} cores, N = 64 at {spec.size} px, one batch, one init; "
          f"load average {res['loadavg_start'][0]:.1f} at start, {res['loadavg_end'][0]:.1f} at end "
          "(the CPU was shared with training jobs, so wall times are inflated; CPU time is this process's own, "
          "summed over its threads).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
