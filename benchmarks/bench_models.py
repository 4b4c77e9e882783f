"""CPU throughput of the example backbones: forward and forward+backward images/s, printed as a table.

    OMP_NUM_THREADS=2 python benchmarks/bench_models.py [--configs ncpn_mnist_vp ncpn_cifar10_vp] [--batch-size 4]

Each row times ``--repeats`` passes after one warm-up pass on random noisy inputs (``t`` drawn from
``(0, 0.1]``, half of the batch at ``t = 0`` on the data grid, so both likelihood branches run).
Training mode (dropout on) for forward+backward, eval mode for forward under ``torch.no_grad()``.
The CIFAR-10 configuration (≈ 73 M parameters) takes a couple of minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from ncml.models.ncpn import NCPNModel

CONFIG_DIR = Path(__file__).resolve().parents[1] / "examples" / "configs"


def make_inputs(model: NCPNModel, batch_size: int, generator: torch.Generator):
    c, h, w = model.image_shape
    levels = 2**model.config.num_bits
    x = torch.randint(0, levels, (batch_size, c, h, w), generator=generator) * model.bin_width - 1
    t = torch.rand(batch_size, generator=generator) * 0.1
    t[: batch_size // 2] = 0.0
    noisy = t > 0
    x[noisy] = x[noisy] + 0.1 * torch.randn(x[noisy].shape, generator=generator)
    return x, t


def time_passes(fn, repeats: int) -> tuple[float, float]:
    """Mean (wall-clock seconds, process CPU seconds) per pass; CPU time is less sensitive to a shared machine."""
    fn()  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def bench(name: str, batch_size: int, repeats: int) -> dict:
    config = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    torch.manual_seed(0)
    model = NCPNModel.from_config(config)
    x, t = make_inputs(model, batch_size, torch.Generator().manual_seed(0))

    def forward():
        with torch.no_grad():
            model(x, t)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(x, t).log_prob.mean().backward()

    model.eval()
    fwd, fwd_cpu = time_passes(forward, repeats)
    model.train()
    fwd_bwd, fwd_bwd_cpu = time_passes(forward_backward, repeats)
    return {"config": name, "params": model.num_parameters(), "batch": batch_size,
            "fwd": batch_size / fwd, "fwd_bwd": batch_size / fwd_bwd,
            "fwd_cpu_ms": 1000 * fwd_cpu / batch_size, "fwd_bwd_cpu_ms": 1000 * fwd_bwd_cpu / batch_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["ncpn_mnist_vp", "ncpn_cifar10_vp"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows = [bench(name, args.batch_size, args.repeats) for name in args.configs]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"| {'config':<16} | {'parameters':>11} | {'batch':>5} | {'forward img/s':>13} | {'fwd+bwd img/s':>13} "
          f"| {'fwd CPU-ms/img':>14} | {'fwd+bwd CPU-ms/img':>18} |")
    print(f"|{'-' * 18}|{'-' * 13}|{'-' * 7}|{'-' * 15}|{'-' * 15}|{'-' * 16}|{'-' * 20}|")
    for r in rows:
        print(f"| {r['config']:<16} | {r['params']:>11,} | {r['batch']:>5} | {r['fwd']:>13.2f} | {r['fwd_bwd']:>13.2f} "
              f"| {r['fwd_cpu_ms']:>14.1f} | {r['fwd_bwd_cpu_ms']:>18.1f} |")


if __name__ == "__main__":
    main()
