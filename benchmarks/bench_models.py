"""CPU throughput of the example backbones, and what their attention costs: FLOPs share against time share.

    OMP_NUM_THREADS=1 python benchmarks/bench_models.py [--configs ncpn_mnist_vp ncpn_cifar10_vp] [--batch-size 4]

Two passes per configuration, on random noisy inputs (``t`` drawn from ``(0, 0.1]``, half of the batch at ``t = 0``
on the data grid, so both likelihood branches run):

* training: forward + backward of ``log_prob.mean()`` in training mode (dropout on);
* likelihood: the exact likelihood at ``t = 0`` on grid images (``log_prob``), eval mode under ``torch.no_grad()``.

Each figure is the least over ``--repeats`` passes after one warm-up pass, in CPU seconds of this process
(``time.process_time``; on a shared machine wall time mostly measures the other processes), with ``--threads``
torch threads (default 1). The first table gives images per CPU-second.

The second table asks whether attention's cost is arithmetic or overhead. Its FLOPs share is counted with
``FlopCounterMode`` (``flop_count.py``: matrix products only, 2 per multiply-add, attention dense) inside the
``CausalAxialAttention`` modules; its time share is the difference between the model and the same configuration
without attention (``attention_heads = 0``, all else equal), over the model's time. A time share far above the
FLOPs share means that attention's time goes to memory traffic and per-kernel overhead (layout copies, LayerNorm,
softmax) rather than arithmetic. The CIFAR-10 configuration (≈ 73 M parameters) takes a few CPU-minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from flop_count import counter, module_flops

from ncml.models.ncpn import CausalAxialAttention, NCPNModel

CONFIG_DIR = Path(__file__).resolve().parents[1] / "examples" / "configs"


def make_inputs(model: NCPNModel, batch_size: int, generator: torch.Generator):
    c, h, w = model.image_shape
    levels = 2**model.config.num_bits
    x = torch.randint(0, levels, (batch_size, c, h, w), generator=generator) * model.bin_width - 1
    t = torch.rand(batch_size, generator=generator) * 0.1
    t[: batch_size // 2] = 0.0
    noisy = t > 0
    x_noisy = x.clone()
    x_noisy[noisy] = x[noisy] + 0.1 * torch.randn(x[noisy].shape, generator=generator)
    return x, x_noisy, t


def least_cpu_seconds(fn, repeats: int) -> float:
    """The least CPU seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def passes(model: NCPNModel, batch_size: int):
    """``(training, likelihood)``: the two passes, as functions of no argument."""
    clean, noisy, t = make_inputs(model, batch_size, torch.Generator().manual_seed(0))

    def training():
        model.train()
        model.zero_grad(set_to_none=True)
        model(noisy, t).log_prob.mean().backward()

    def likelihood():
        model.eval()
        with torch.no_grad():
            model.log_prob(clean, 0.0)

    return training, likelihood


def bench(name: str, batch_size: int, repeats: int) -> dict:
    config = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    row = {"config": name, "batch": batch_size, "heads": config.get("attention_heads", 0)}
    for attention in (True, False):
        torch.manual_seed(0)
        model = NCPNModel.from_config(config if attention else {**config, "attention_heads": 0})
        training, likelihood = passes(model, batch_size)
        suffix = "" if attention else "_plain"
        row["train" + suffix] = least_cpu_seconds(training, repeats)
        row["lik" + suffix] = least_cpu_seconds(likelihood, repeats)
        if attention:
            row["params"] = model.num_parameters()
            for key, fn in (("train", training), ("lik", likelihood)):
                with counter() as mode:
                    fn()
                row[key + "_flops"] = mode.get_total_flops()
                row[key + "_attn_flops"] = module_flops(mode, model, CausalAxialAttention)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["ncpn_mnist_vp", "ncpn_cifar10_vp"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench(name, args.batch_size, args.repeats) for name in args.configs]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; least CPU seconds of {args.repeats} passes")
    print()
    print(f"| {'config':<16} | {'parameters':>11} | {'batch':>5} | {'training img/CPU-s':>18} "
          f"| {'likelihood img/CPU-s':>20} | {'training GFLOP/s':>16} | {'likelihood GFLOP/s':>18} |")
    print(f"|{'-' * 18}|{'-' * 13}|{'-' * 7}|{'-' * 20}|{'-' * 22}|{'-' * 18}|{'-' * 20}|")
    for r in rows:
        print(f"| {r['config']:<16} | {r['params']:>11,} | {r['batch']:>5} | {r['batch'] / r['train']:>18.2f} "
              f"| {r['batch'] / r['lik']:>20.2f} | {r['train_flops'] / r['train'] / 1e9:>16.1f} "
              f"| {r['lik_flops'] / r['lik'] / 1e9:>18.1f} |")
    print()
    print("Attention: share of the counted FLOPs vs share of the CPU time (model minus the same model without "
          "attention, over the model)")
    print(f"| {'config':<16} | {'pass':<10} | {'GFLOP':>8} | {'attention FLOPs':>15} | {'CPU s':>7} "
          f"| {'CPU s, no attention':>19} | {'attention time':>14} | {'time / FLOPs share':>18} |")
    print(f"|{'-' * 18}|{'-' * 12}|{'-' * 10}|{'-' * 17}|{'-' * 9}|{'-' * 21}|{'-' * 16}|{'-' * 20}|")
    for r in rows:
        for key, label in (("train", "training"), ("lik", "likelihood")):
            flops_share = r[key + "_attn_flops"] / r[key + "_flops"]
            time_share = (r[key] - r[key + "_plain"]) / r[key]
            ratio = f"{time_share / flops_share:.1f}x" if flops_share > 0 else "-"
            print(f"| {r['config']:<16} | {label:<10} | {r[key + '_flops'] / 1e9:>8.2f} | {100 * flops_share:>14.1f}% "
                  f"| {r[key]:>7.3f} | {r[key + '_plain']:>19.3f} | {100 * time_share:>13.1f}% | {ratio:>18} |")


if __name__ == "__main__":
    main()
