"""Data-parallel distillation (torchrun, gloo, 2 CPU processes) follows the 1-process loss curve.

Each rank takes half of the same global batch of 16; batch-mean terms (ce, kd, feat) and DDP's averaged
gradients then match one process. BatchNorm does not: every rank normalises with the statistics of its own 8
images (student and ``feat`` projector). So the test runs two cases (``tests/ddp_distill_worker.py``):
a GroupNorm student with ce + kd must match to float round-off (1e-5 relative per step), and a BatchNorm
student with ce + kd + feat within 5% per step (measured: at most 2.5% over 8 steps). ``rel`` is not a
batch mean (a B x B relation per rank) and is left out.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ddp_distill_worker.py")


def _curves(tmp: Path, cmd: list[str]) -> dict[str, list[float]]:
    tmp.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(WORKER.parents[2]))
    out = tmp / "curves.json"
    subprocess.run([*cmd, str(WORKER), str(out)], check=True, env=env, timeout=300, capture_output=True)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_process_curve_matches_one_process(tmp_path):
    one = _curves(tmp_path / "one", [sys.executable])
    two = _curves(tmp_path / "two", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                     "--master_port", "29517"])
    for case, rel in (("groupnorm_ce_kd", 1e-5), ("batchnorm_ce_kd_feat", 0.05)):
        assert len(one[case]) == len(two[case]) == 8
        assert two[case] == pytest.approx(one[case], rel=rel), case
