"""A job scheduler for a multi-process GPU training campaign: teachers, then the students, the ablation's cells and
the DisWOT validation against the best teacher, as parallel processes sharing one GPU within a time budget.

``--tiny`` runs the same plan with toy budgets on the CPU to check it first. The data comes as a
:func:`kdcore.data.pack.save_pack` file (an ``.xz``-compressed one is unpacked first).

1. Teachers (resnet18, several schedules) and the ablation's student-alone cells, all at once.
2. When the teachers are done (or at ``--teacher-deadline``): the best by validation accuracy is saved in fp16 as
   the bundled teacher (its fp16 predictions checked against fp32) and its logit/LRP/Grad-CAM caches are built once;
   then the shipped-student candidates, the ablation's KD cells and the DisWOT candidates' distillations run,
   most important first, ``--parallel`` at a time, until ``--deadline``.
3. Everything small (metrics, configs, cells, results, the new teacher and students) goes into ``OUT`` as a tar
   split into parts of at most 15 MB, with ``campaign.json`` (what ran, how long, what was cut); the cut ablation
   cells' checkpoints are added, furthest along first, while the whole stays within ``--upload-mb``.

    python -m kdcore pack DATA --size 128 --out brain-128.safetensors && xz -9 -k brain-128.safetensors
    python -m scripts.gpu_campaign --pack brain-128.safetensors.xz --out OUT --mps
    python -m scripts.gpu_campaign --pack brain-128.safetensors.xz --out /tmp/campaign --tiny

``--teacher NAME_OR_DIR`` skips step 1's teachers and distils from that model (``teacher``: the bundled one);
``--students``, ``--epochs`` and ``--amp`` set the ablation's cells; ``--skip-finished`` leaves out
the ablation cells already in ``bench/results/distill_ablation.json``; ``--jobs 'ablation/*'`` runs the ablation's
cells alone.

Sharing the GPU (an 80 GiB H100 with 16 CPU cores):

- With NVIDIA's Multi-Process Service (``--mps``) the processes run kernels side by side instead of in time slices:
  with 17 processes, per-step-teacher KD ran at about 760 img/s each and resnet10t_w20 ``sem(lrp)`` cells at
  340-600, against 380 and 169 with 16 processes without it (a different mix): about 2-3x.
- 16 processes of 4-5 GiB fill the 80 GiB: a job that dies of CUDA out-of-memory is queued again with one process
  fewer at once, and resumes from its last epoch's checkpoint.
- The GPU is the bottleneck: with 10 processes (6 ``sem(lrp)``, 4 Grad-CAM cells of mobilenetv2_035) the
  ``sem(lrp)`` jobs took 357-369 s and the Grad-CAM ones 194-197 s; 3 Grad-CAM jobs alone took 102-106 s. Fewer
  processes at once finish each sooner at about the same total rate, so the cells that must end go first, few at
  a time.
- A cell cut after its last epoch comes back with its best and final weights alone (about 1.6 MB each for
  mobilenetv2_035: 0.40 M fp32 parameters), from which ``python -m bench.distill_ablation --only`` writes its
  ``cell.json`` without training; a cell cut earlier brings its checkpoint (14.5 MB for mobilenetv2_035: the
  projector's optimizer state, and the best weights), which ``--resume`` takes back to a GPU.

Run it with the timm and zennit of ``requirements.txt``: timm 1.0.29 writes no ``model_args`` into ``config.json``,
so a saved width variant (``resnet10t_w20``) would not load.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from bench.distill_ablation import AMP_TITLES, CONFIGS, STUDENTS
from bench.report import RESULTS
from kdcore.paths import bundled_model
from kdcore.rank.candidates import CANDIDATES

REPO = Path(__file__).resolve().parent.parent
ABLATION_CONFIGS = tuple(CONFIGS)
TEACHER_ARCNAME = "kdcore/bundled/models/teacher"  # where the new teacher goes when the results are unpacked
TUNING = ("2-kd@T2", "3-diswot@w0.1", "4-thesis@w0.1", "5a-diswot+cosine@w0.1", "5b-diswot+lrp@w0.1")  # seed 0


@dataclass
class Job:
    name: str
    argv: list[str]
    priority: int  # lower runs first
    log: Path
    proc: subprocess.Popen | None = None
    status: str = "queued"  # queued, running, ok, failed, killed, skipped
    start: float | None = None
    end: float | None = None
    info: dict = field(default_factory=dict)


class Pool:
    """Runs jobs as child processes, ``parallel`` at a time, lowest priority number first."""

    def __init__(self, parallel: int, env: dict, t0: float):
        self.parallel, self.env, self.t0 = parallel, env, t0
        self.jobs: list[Job] = []

    def add(self, job: Job) -> None:
        self.jobs.append(job)

    def running(self) -> list[Job]:
        return [j for j in self.jobs if j.status == "running"]

    def poll(self, launch: bool = True) -> None:
        for j in self.running():
            rc = j.proc.poll()
            if rc is not None:
                j.status, j.end = ("ok" if rc == 0 else "failed"), self.now()
                if rc != 0 and ran_out_of_memory(j.log) and j.info.get("oom", 0) < 2:
                    # queued again, and one process fewer at once: the GPU's memory was full (16 cells of ~5 GiB
                    # each fill an 80 GiB H100); a cell resumes from its last epoch's checkpoint
                    j.info["oom"] = j.info.get("oom", 0) + 1
                    j.status, self.parallel = "queued", max(1, self.parallel - 1)
        if launch:
            for j in sorted((j for j in self.jobs if j.status == "queued"), key=lambda j: j.priority):
                if len(self.running()) >= self.parallel:
                    break
                j.log.parent.mkdir(parents=True, exist_ok=True)
                with open(j.log, "w") as log:  # the child keeps its own copy of the descriptor
                    j.proc = subprocess.Popen([sys.executable, *j.argv], cwd=REPO, env=self.env,
                                              start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
                j.status, j.start = "running", self.now()

    def kill(self, jobs: list[Job]) -> None:
        for j in jobs:
            if j.status == "running":
                os.killpg(j.proc.pid, signal.SIGKILL)
                j.proc.wait()
                j.status, j.end = "killed", self.now()
            elif j.status == "queued":
                j.status = "skipped"

    def now(self) -> float:
        return round(time.time() - self.t0, 1)

    def report(self) -> list[dict]:
        return [{"name": j.name, "status": j.status, "start_s": j.start, "end_s": j.end, **j.info} for j in self.jobs]


def ran_out_of_memory(log: Path) -> bool:
    """Whether the job's log ends in a CUDA out-of-memory error."""
    with open(log, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
        return b"CUDA out of memory" in f.read()


def start_mps() -> str:
    """Start NVIDIA's Multi-Process Service, so that the campaign's processes run kernels on the GPU side by side
    rather than in time slices; ``"on"``, or why it is off (then nothing changed)."""
    ctl = shutil.which("nvidia-cuda-mps-control")
    if ctl is None:
        return "off: no nvidia-cuda-mps-control"
    if subprocess.run([ctl, "-d"], capture_output=True).returncode != 0:
        if subprocess.run([ctl], input=b"get_server_list", capture_output=True).returncode == 0:
            return "on (a daemon was already running)"  # e.g. left by an earlier campaign on the same machine
        return "off: the daemon did not start"
    probe = subprocess.run([sys.executable, "-c", "import torch; torch.zeros(1, device='cuda')"], capture_output=True,
                           timeout=120)
    if probe.returncode != 0:
        subprocess.run([ctl], input=b"quit", capture_output=True)
        return "off: a CUDA client failed under it"
    return "on"


def plan(a: argparse.Namespace, pack: Path, runs: Path) -> tuple[list[tuple], list[tuple]]:
    """(stage-1 jobs, stage-2 jobs) as (name, argv, priority); lower priorities start first.

    Stage 2, by priority: 0 the shipped-student candidates (full 120-epoch per-step KD schedules: 80-epoch runs were
    still noisy near their end) and the first ablation student's cells, the longest first (``sem(lrp)``, then Grad-
    CAM ``sem``, then the logit terms alone); 1 its tuning grid (seed 0: T 2 for KD, weight 0.1 on feat and sem) and
    the tuned thesis on seeds 1-2; 2 the thesis with per-step teacher maps (``4-thesis@perstep``, seeds 0-2: the
    cached maps, warped with the augmentation, are at cosine 0.61 from the per-step ones); 3 and 4 the next
    student's cells and tuning grid (its grid keeps the thesis at weight 1), and so on; last, DisWOT.
    Rates seen with 16 processes on one H100: ``sem(lrp)`` 169 img/s on resnet10t_w20 but 22 img/s on
    mobilenetv2_035 (PyTorch's double backward of a depthwise convolution, one call per channel, before
    :mod:`kdcore.explain.grouped_conv`), Grad-CAM ``sem`` 370, ce+kd 565-925, per-step-teacher KD 380; with 4
    processes alone, per-step-teacher KD ran at 3000-3200 img/s each. ``--jobs 'ablation/*'`` runs the ablation alone.
    """
    t = a.tiny
    cap = ["--max-images", "64"] if t else []
    teachers = [  # (name, epochs, batch, lr, seed): a short one that surely ends in time, and longer schedules
        ("teacher-e60-b128", 60, 128, 4e-3, 0), ("teacher-e100-b64", 100, 64, 2e-3, 0),
        ("teacher-e120-b128", 120, 128, 4e-3, 1), ("teacher-e150-b64", 150, 64, 2e-3, 2),
    ][: 0 if a.teacher else 2 if t else 4]
    stage1 = [(n, ["-m", "kdcore", "train-teacher", "--arch", "resnet18", "--data", str(pack), "--out", str(runs / n),
                   "--epochs", str(1 if t else e), "--batch-size", str(b), "--lr", str(lr), "--seed", str(s), *cap], 0)
              for n, e, b, lr, s in teachers]
    teacher, ablation_students = a.teacher or "teacher", a.students.split(",")
    ablation = ["-m", "bench.distill_ablation", "--data", str(pack), "--teacher", teacher,
                "--students", ",".join(ablation_students),
                "--size", "128", "--epochs", str(1 if t else a.epochs), "--batch-size", "128", "--lr", "4e-3",
                *(["--amp", a.amp] if a.amp else []), "--runs", str(runs / "ablation"),
                "--out", str(runs / "ablation" / "table"), *cap]  # a table of its own: the cells' validation set
    cell = lambda st, c, s, prio: (f"ablation/{st}/{c}/{s}", [*ablation, "--only", f"{st}/{c}/{s}"], prio)  # noqa: E731
    seeds = range(2 if t else 5)
    stage1 += [cell(st, "1-alone", s, 1) for s in seeds for st in ablation_students]
    students = [  # (name, extra args): the shipped recipe's full schedule on four seeds, and a short weight average
        *((f"student-r10w20-kd-e120-s{s}", ["--seed", str(s)]) for s in range(4)),
        ("student-r10w20-kd-e120-ema995-s1", ["--seed", "1", "--ema", "0.995"]),
    ]
    stage2 = [(n, ["-m", "kdcore", "distill", "--teacher", teacher, "--student", "resnet10t_w20", "--data", str(pack),
                   "--out", str(runs / n), "--loss", "ce=1,kd=1", "--no-teacher-cache",
                   "--epochs", str(1 if t else 120),
                   "--batch-size", "64", "--lr", "3e-3", *extra, *cap], 0)
              for n, extra in students]
    # per student in turn: its cells, the longest first (sem(lrp), then Grad-CAM sem, then logits alone: the
    # campaign ends soonest); then its tuning grid (seed 0; the first student's also the tuned thesis on seeds 1-2);
    # then the first's per-step control
    by_cost = sorted(ABLATION_CONFIGS[1:], key=cost)
    for i, st in enumerate(ablation_students):
        stage2 += [cell(st, c, s, 3 * i) for c in by_cost for s in seeds]
        stage2 += [cell(st, c, 0, 3 * i + 1) for c in TUNING]
        if i == 0:
            stage2 += [cell(st, "4-thesis@w0.1", s, 1) for s in seeds if 1 <= s <= 2]
            stage2 += [cell(st, "4-thesis@perstep", s, 2) for s in seeds if s <= 2]  # the teacher cache's control
    proxies = ["-m", "bench.rank_validate", "--data", str(pack), "--teacher", teacher, "--runs", str(runs / "rank"),
               *(["--epochs", "1"] if t else []), *cap]
    stage2 += [(f"rank/{c}/{s}", [*proxies, "--only", f"{c}/{s}"], 3 * len(ablation_students)) for s in (0, 1, 2)
               for c in list(CANDIDATES)[: 2 if t else None]]
    return stage1, stage2


def cost(config: str) -> int:
    """A configuration's rank by training time per step: 0 sem(lrp), 1 Grad-CAM sem, 2 logit terms alone."""
    return {"lrp": 0, "gradcam": 1}.get(CONFIGS[config].get("sem_map"), 2)


def select_teacher(runs: Path, names: list[str], pack: Path) -> dict:
    """Ship the best teacher run's model in fp16 as the bundled teacher (its predictions checked against fp32)."""

    from kdcore.engine.dist import default_device
    from kdcore.models import load_model, save_model
    from scripts.bundle_model import fp16_predictions

    scores = {}
    for n in names:
        cfg = runs / n / "best" / "config.json"
        if cfg.is_file():
            scores[n] = json.loads(cfg.read_text())["kdcore"]["summary"]["val_metrics"]["accuracy"]
    best = max(scores, key=scores.get)
    model, info = load_model(runs / best / "best", default_device())
    pred32, pred16, labels = fp16_predictions(model, info, str(pack))
    dst = bundled_model("teacher")
    shutil.rmtree(dst, ignore_errors=True)
    save_model(model.cpu(), dst, info, half=True)
    return {"scores": scores, "chosen": best, "fp16_same_predictions": int((pred32 == pred16).sum()),
            "val_images": len(pred32), "fp16_accuracy": float((pred16 == labels).float().mean())}


def build_teacher_caches(pack: Path, cache_dir: Path, teacher_name: str = "teacher") -> dict:
    """The teacher's logit, LRP and Grad-CAM caches, built once before the students start."""

    from kdcore.data.pack import load_train_data
    from kdcore.distill.teacher_cache import build_cache
    from kdcore.engine.dist import default_device
    from kdcore.models import load_model

    teacher, info = load_model(teacher_name, default_device())
    data = load_train_data(str(pack), info.spec.size)
    os.environ["KDCORE_CACHE"] = str(cache_dir)
    t0 = time.perf_counter()
    for method in (None, "lrp", "gradcam"):
        for _ in build_cache(teacher, info.spec, data.train.pixels, data.train.labels, method, 32):
            pass
    return {"cache_build_s": round(time.perf_counter() - t0, 1)}


def select(jobs: list[tuple], patterns: list[str], done: set[str]) -> list[tuple]:
    """The jobs whose name matches one of ``patterns`` (fnmatch) and is not in ``done``."""
    return [j for j in jobs if any(fnmatch(j[0], pat) for pat in patterns) and j[0] not in done]


def finished_cells() -> set[str]:
    """Job names of the ablation cells already in ``bench/results/distill_ablation.json`` (same settings)."""
    path = RESULTS / "distill_ablation.json"
    if not path.is_file():
        return set()
    return {f"ablation/{key}" for key in json.loads(path.read_text()).get("cells", {})}


def cut_cells(runs: Path) -> list[Path]:
    """Ablation cells with a checkpoint but no ``cell.json`` (cut by the deadline), the furthest along first."""
    def epochs(cell: Path) -> int:
        return json.loads((cell / "checkpoint.json").read_text()).get("epoch", -1)

    cells = [c.parent for c in runs.glob("ablation/*/*/seed*/checkpoint.json") if not (c.parent / "cell.json").exists()]
    return sorted(cells, key=epochs, reverse=True)


def trained_out(cell: Path) -> bool:
    """Whether a cut cell's checkpoint is its last epoch's: only ``cell.json`` was missing when it was cut."""
    config = cell / "config.json"
    if not config.is_file():
        return False
    epochs = json.loads(config.read_text())["train"]["epochs"]
    return json.loads((cell / "checkpoint.json").read_text()).get("epoch", -1) + 1 >= epochs


def pack_results(out: Path, runs: Path, part_mb: int = 15, budget_mb: int = 58,
                 teacher: Path | None = None) -> list[str]:
    """Small files of every run, plus the model folder ``teacher`` (a new one was chosen), into ``out/results.tar``
    parts of ``part_mb``; then the cut ablation cells, furthest first, each that keeps the tar within ``budget_mb``
    (an upload limit): their checkpoints and best weights, which ``python -m bench.distill_ablation --only`` resumes
    wherever the cell's folder is put back (``--resume`` here), or, for a cell cut after its last epoch, its best
    and final weights alone, from which ``--only`` writes ``cell.json``."""
    keep = ("metrics.jsonl", "config.json", "cell.json", "result.json", "README.md", "model.safetensors", ".log")
    tar_path = out / "results.tar"
    with tarfile.open(tar_path, "w") as tar:
        if teacher is not None:
            tar.add(teacher, arcname=TEACHER_ARCNAME)
        for f in sorted(runs.rglob("*")):
            rel = f.relative_to(runs)
            if not f.is_file() or not f.name.endswith(keep) or "checkpoint" in f.name:
                continue
            best_student = rel.parts[0].startswith("student") and rel.parts[1:2] == ("best",)
            if f.name == "model.safetensors" and not best_student:
                continue  # weights: only the shipped-student candidates' best models
            tar.add(f, arcname=f"runs/{rel}")
        for cell in cut_cells(runs):
            files = [cell / "best" / "model.safetensors", cell / "last" / "model.safetensors"]
            if not trained_out(cell) or not files[1].is_file():
                files += [cell / "checkpoint.safetensors", cell / "checkpoint.json"]
            files = [f for f in files if f.is_file()]
            if tar.offset + sum(f.stat().st_size + 1024 for f in files) > budget_mb << 20:
                continue
            for f in files:
                tar.add(f, arcname=f"runs/{f.relative_to(runs)}")
    data, parts = tar_path.read_bytes(), []
    tar_path.unlink()
    for i in range(0, len(data), part_mb << 20):
        name = f"results.tar.part{i // (part_mb << 20):02d}"
        (out / name).write_bytes(data[i : i + (part_mb << 20)])
        parts.append(name)
    return parts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pack", required=True, help="data pack (.safetensors or .safetensors.xz)")
    p.add_argument("--out", required=True)
    p.add_argument("--work", default="/dev/shm/kdcore-campaign", help="fast scratch folder for runs and caches")
    p.add_argument("--parallel", type=int, default=16)
    p.add_argument("--teacher-deadline", type=float, default=230.0, help="seconds: stop waiting for teachers")
    p.add_argument("--deadline", type=float, default=500.0,
                   help="the time budget in seconds: then kill what still runs and pack the results")
    p.add_argument("--upload-mb", type=int, default=58,
                   help="an upload limit: cut cells' checkpoints are packed only while the results stay within it")
    p.add_argument("--max-priority", type=int, default=99, help="start no stage-2 job of a higher priority number")
    p.add_argument("--mps", action="store_true", help="start NVIDIA MPS first (processes share the GPU at once)")
    p.add_argument("--tiny", action="store_true", help="toy budgets, to check the plan on the CPU")
    p.add_argument("--teacher", default=None, help="train no teachers: distil from this model name or folder "
                   "('teacher': the bundled one); default: train teachers and ship the best")
    p.add_argument("--students", default=",".join(STUDENTS), help="the ablation's students, a comma list")
    p.add_argument("--epochs", type=int, default=20, help="the ablation cells' epochs")
    p.add_argument("--amp", choices=[k for k in AMP_TITLES if k], default=None, help="the ablation cells' autocast")
    p.add_argument("--jobs", default="*", help="comma-separated name patterns (fnmatch) of the jobs to run, e.g. "
                   "'ablation/*' for the ablation's cells alone or 'ablation/mobilenetv2_035/3-diswot/*'")
    p.add_argument("--resume", help="folder of cut ablation cells (<student>/<config>/seed<k>, with checkpoints, as "
                   "packed back): they go into the runs folder first, and their jobs resume them")
    p.add_argument("--skip-finished", action="store_true",
                   help="leave out the ablation cells already in bench/results/distill_ablation.json")
    a = p.parse_args(argv)
    t0 = time.time()
    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    runs = work / "runs"
    runs.mkdir(parents=True)
    pack = Path(a.pack)
    if pack.suffix == ".xz":
        dst = work / pack.stem
        with lzma.open(pack) as src, open(dst, "wb") as f:
            shutil.copyfileobj(src, f, 1 << 24)
        pack = dst
    env = os.environ | {"OMP_NUM_THREADS": "1", "TQDM_MININTERVAL": "10", "KDCORE_CACHE": str(work / "cache"),
                        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}  # less memory lost to fragments
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv, "tiny": a.tiny,
                    "unpack_s": round(time.time() - t0, 1)}
    if a.mps:
        report["mps"] = start_mps()
    try:
        import torch

        report["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        report["torch"] = torch.__version__
    except Exception as e:
        report["device"] = repr(e)
    done = finished_cells() if a.skip_finished else set()
    stage1, stage2 = (select(stage, a.jobs.split(","), done) for stage in plan(a, pack, runs))
    if a.resume:
        shutil.copytree(a.resume, runs / "ablation", dirs_exist_ok=True)
    if a.skip_finished:
        report["skipped_finished"] = sorted(done)
    pool = Pool(a.parallel, env, t0)
    for name, args, prio in stage1:
        pool.add(Job(name, args, prio, runs / "logs" / f"{name.replace('/', '_')}.log"))
    teachers = [j for j in pool.jobs if j.name.startswith("teacher")]
    stage2_started = False
    write = lambda: (out / "campaign.json").write_text(json.dumps(report | {"jobs": pool.report()}, indent=1))  # noqa: E731
    while True:
        pool.poll()
        now = pool.now()
        if not stage2_started and (all(j.status not in ("queued", "running") for j in teachers)
                                   or now > a.teacher_deadline):
            pool.kill([j for j in teachers if j.status in ("queued", "running")])
            report["teacher_stage_end_s"] = now
            try:
                report["teacher"] = {} if a.teacher else select_teacher(runs, [j.name for j in teachers], pack)
                report["teacher"] |= build_teacher_caches(pack, work / "cache", a.teacher or "teacher")
            except Exception as e:
                report["teacher"] = {"error": repr(e)}
                break
            report["teacher"]["selected_at_s"] = pool.now()
            for name, args, prio in (j for j in stage2 if j[2] <= a.max_priority):
                pool.add(Job(name, args, prio, runs / "logs" / f"{name.replace('/', '_')}.log"))
            stage2_started = True
            write()
        if stage2_started and not pool.running() and not any(j.status == "queued" for j in pool.jobs):
            break
        if now > a.deadline:
            break
        time.sleep(1.0)
    pool.poll(launch=False)
    pool.kill(pool.jobs)
    report["end_s"] = pool.now()
    write()
    report["parts"] = pack_results(out, runs, budget_mb=a.upload_mb,
                                   teacher=None if a.teacher else bundled_model("teacher"))
    report["packed_s"] = pool.now()
    write()
    print(json.dumps({k: v for k, v in report.items() if k != "jobs"}, indent=1))
    print({s: sum(j.status == s for j in pool.jobs) for s in ("ok", "failed", "killed", "skipped")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
