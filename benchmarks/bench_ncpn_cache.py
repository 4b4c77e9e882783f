"""Cached vs naive autoregressive sampling of NCPN: wall-clock time and speed-up.

    OMP_NUM_THREADS=1 python benchmarks/bench_ncpn_cache.py                  # MNIST config, batch 16, CPU
    python benchmarks/bench_ncpn_cache.py --config examples/configs/ncpn_cifar10_vp.json --device cuda

The cached sampler draws the whole image. The naive loop (one full forward pass per pixel) costs the same for
every pixel, so by default it is timed on the first ``--naive-pixels`` pixels only (the rest given as known
pixels, which the loop skips) and extrapolated to ``H·W`` pixels; ``--naive-pixels 0`` runs it on every pixel.
Both use the same generator, so the pixels drawn by both runs must agree (checked and printed).
Weights are random (timing does not depend on them); ``t`` is mixed (half the batch at ``t = 0``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ncml.models.ncpn import NCPNModel

ROOT = Path(__file__).resolve().parents[1]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "configs" / "ncpn_mnist_vp.json"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--naive-pixels", type=int, default=28, help="pixels timed for the naive loop (0 = all)")
    parser.add_argument("--repeats", type=int, default=1, help="cached runs (the best is reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    config = {k: v for k, v in json.loads(Path(args.config).read_text()).items() if not k.startswith("_")}
    model = NCPNModel.from_config(config).to(device).eval()
    b = args.batch_size
    c, height, width = model.image_shape
    num_pixels = height * width
    t = torch.tensor([0.0, 0.05] * (b // 2) + [0.0] * (b % 2), device=device)

    def generator():
        return torch.Generator(device=device).manual_seed(args.seed)

    model.sample(b, t, generator=generator(), use_cache=True, progress=False)  # warm-up (allocator, kernels)
    runs = [timed(lambda: model.sample(b, t, generator=generator(), use_cache=True, progress=False), device)
            for _ in range(args.repeats)]
    cached, cached_s = min(runs, key=lambda r: r[1])

    naive_pixels = num_pixels if args.naive_pixels <= 0 else min(args.naive_pixels, num_pixels)
    known_mask = torch.ones(b, c, height, width, device=device)
    known_mask.view(b, c, -1)[:, :, :naive_pixels] = 0  # raster order: the first pixels are drawn
    known = torch.where(known_mask.bool(), cached, torch.zeros_like(cached))
    naive, naive_s = timed(lambda: model.sample(b, t, generator=generator(), use_cache=False, progress=False,
                                                known=known, known_mask=known_mask), device)
    drawn = ~known_mask.bool()
    clean = (t == 0)[:, None, None, None].expand_as(drawn)
    same_clean = torch.equal(naive[drawn & clean], cached[drawn & clean])
    noisy = drawn & ~clean
    max_diff = (naive[noisy] - cached[noisy]).abs().max().item() if noisy.any() else 0.0

    naive_full_s = naive_s / naive_pixels * num_pixels
    print(f"NCPN {Path(args.config).name}: {height}x{width}x{c}, batch {b}, {model.num_parameters() / 1e6:.2f} M "
          f"parameters, device {device}, torch threads {torch.get_num_threads()}")
    print(f"{'sampler':<8} {'pixels timed':>12} {'seconds':>10} {'ms/pixel':>9} {'s/batch':>9} {'images/s':>9}")
    for name, pixels, seconds in (("naive", naive_pixels, naive_s), ("cached", num_pixels, cached_s)):
        per_batch = seconds / pixels * num_pixels
        print(f"{name:<8} {pixels:>12} {seconds:>10.2f} {1e3 * seconds / pixels:>9.2f} {per_batch:>9.2f} "
              f"{b / per_batch:>9.3f}")
    extrapolated = " (naive extrapolated from its timed pixels)" if naive_pixels < num_pixels else ""
    print(f"speed-up cached vs naive: {naive_full_s / cached_s:.1f}x{extrapolated}")
    print(f"same samples on the {naive_pixels} pixels drawn by both: t = 0 identical: {same_clean}; "
          f"t > 0 max |diff| {max_diff:.2e}")


if __name__ == "__main__":
    main()
