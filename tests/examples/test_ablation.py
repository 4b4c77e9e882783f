"""The noise-level ablation runs end to end in --quick mode (a few steps and 64 samples per variant)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ablation_quick(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "examples" / "ablate_noise_levels.py"), "--quick", "--out", str(tmp_path / "runs"),
           "--variants", "uniform-T0.02", "mle", "--jobs", "1", "--report_dir", str(tmp_path / "report")]
    subprocess.run(cmd, env=env, check=True, cwd=tmp_path)
    report = json.loads((tmp_path / "report" / "ablation.json").read_text())
    assert report["winner"] == "uniform-T0.02" and set(report["variants"]) == {"uniform-T0.02", "mle"}
    ncml_run = report["variants"]["uniform-T0.02"]
    assert set(ncml_run["two_part"]) == {"0.003", "0.01"}  # T = 0.02 admits both sampling starts
    assert ncml_run["plain_ar"]["n"] == 64 and ncml_run["delta_logp_pi1"]["0"] > 0
    assert "two_part" not in report["variants"]["mle"] or not report["variants"]["mle"]["two_part"]
    assert (tmp_path / "report" / "ablation.png").stat().st_size > 0
    assert (tmp_path / "runs" / "uniform-T0.02" / "model_index.json").is_file()
