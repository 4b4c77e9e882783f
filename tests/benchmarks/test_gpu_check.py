"""benchmarks/gpu_check.py runs end to end at its tiny size on CPU (slow), and its FLOP counting counts attention.

No timed assertions: the figures of a tiny run on a shared CPU measure nothing; the test keeps the code path working.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

from flop_count import counter, module_flops  # noqa: E402


def test_flop_counter_counts_attention_on_cpu():
    """``Q·Kᵀ`` and ``P·V``: 2 · (2 · B·heads·L·L·d) FLOPs forward, twice that backward — also for the CPU kernel."""
    b, heads, length, d = 2, 3, 5, 4
    q, k, v = (torch.randn(b, heads, length, d, requires_grad=True) for _ in range(3))
    with counter() as mode:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    forward = mode.get_total_flops()
    assert forward == 4 * b * heads * length * length * d
    with counter() as mode:
        out.sum().backward()
    assert mode.get_total_flops() >= 2 * forward


def test_module_flops_sums_the_attention_modules():
    from ncml.models.ncpn import CausalAxialAttention, NCPNConfig, NCPNModel

    model = NCPNModel(NCPNConfig(sample_size=4, in_channels=1, nr_resnet=1, nr_filters=8, nr_logistic_mix=2,
                                 attention_heads=2, dropout=0.0, embedding_dim=16))
    with counter() as mode, torch.no_grad():
        model(torch.zeros(1, 1, 4, 4), 0.0)
    attention = module_flops(mode, model, CausalAxialAttention)
    assert 0 < attention < mode.get_total_flops()


@pytest.mark.slow
def test_gpu_check_runs_at_tiny_size(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--compile-backend", "aot_eager"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    table = proc.stdout
    for label in ("FLOPs per training step", "training fp32", "training bf16", "achieved FLOP/s bf16",
                  "torch.compile bf16", "cached sampling", "two-part sampling", "2 processes vs 1"):
        assert f"| {label}" in table or f"|   {label}" in table, label
    assert "FAILED" not in table
    ddp = next(line for line in table.splitlines() if line.startswith("| 2 processes vs 1"))
    assert " PASS |" in ddp, ddp
