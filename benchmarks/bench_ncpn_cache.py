"""Cached vs naive autoregressive sampling of NCPN: speed-up, and where the cached sampler's time goes.

    OMP_NUM_THREADS=1 python benchmarks/bench_ncpn_cache.py --profile                 # MNIST config, batch 16, CPU
    OMP_NUM_THREADS=1 python benchmarks/bench_ncpn_cache.py --preset rgb32 --profile   # 32×32×3, batch 8
    python benchmarks/bench_ncpn_cache.py --config examples/configs/ncpn_cifar10_vp.json --device cuda

Presets: ``mnist`` (``examples/configs/ncpn_mnist_vp.json``, batch 16) and ``rgb32`` (the same architecture at
32×32×3 — attention included — batch 8); ``--sample-size``, ``--in-channels``, ``--attention-heads`` and
``--batch-size`` override them. Weights are random (timing does not depend on them); ``t`` is mixed (half the batch
at ``t = 0``).

The cached sampler draws whole images. The naive loop (one full forward pass per pixel) costs the same for every
pixel, so it is timed on the first ``--naive-pixels`` pixels only (the rest given as known pixels, which the loop
skips) and extrapolated to ``H·W`` pixels; ``--naive-pixels 0`` runs it on every pixel. Both use the same
generator, so the pixels drawn by both runs must agree (checked and printed). Each figure is the minimum over
``--repeats`` runs (the measurements interleaved), in **CPU seconds of this process** (``time.process_time``) as well
as wall seconds: on a shared machine the wall clock mostly measures the other processes, while CPU time measures this
one (on CPU with one thread the speed-up is taken from CPU time; on CUDA from wall time). It also prints one forward
pass, the arithmetic of a whole image done in large kernels — the cached sampler does the same arithmetic in small
pieces, so ``H·W`` forward passes over one forward pass bound the speed-up from above. "its network alone" runs the
cache over the drawn images without drawing (no mixture sampling, no sampling loop): the rest of the cached
sampler's time is the template's draws and loop, unbiased by profiling.

``--profile`` runs the cached sampler once more under ``cProfile`` (timed by CPU time) and splits its time by layer
kind: the ``u`` stream (whole rows), the row preparation of the ``ul`` stream (top kernel rows), the ``ul`` gated
resnets (convolutions, gate, ``concat_elu``), their attention (cache update and attention), the other ``ul`` steps
(input, down- and up-sampling), the mixture head, the mixture sampling (``ARBackbone._sample_position``: the
template's, not the cache's) and the rest (sampling loop, canvas writes); and over all of it, the share spent
inside torch calls (kernels and their dispatch) against Python.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import time
from pathlib import Path

import torch

from ncml.models import ncpn
from ncml.models.autoregressive import ARBackbone
from ncml.models.ncpn import NCPNModel
from ncml.models.ncpn_cache import NCPNCache

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"mnist": ({}, 16), "rgb32": ({"sample_size": 32, "in_channels": 3}, 8)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> tuple:
    """``(output, wall seconds, CPU seconds)`` of one call."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def least(runs: list[tuple], device) -> tuple:
    """The run with the least CPU time (wall time on CUDA)."""
    return min(runs, key=lambda run: run[1] if device.type == "cuda" else run[2])


def build(args, device) -> NCPNModel:
    overrides, _ = PRESETS[args.preset]
    config = {k: v for k, v in json.loads(Path(args.config).read_text()).items() if not k.startswith("_")}
    config.update(overrides)
    for key in ("sample_size", "in_channels", "attention_heads"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    torch.manual_seed(args.seed)
    return NCPNModel.from_config(config).to(device).eval()


# ---- the profile split -------------------------------------------------------------------------------------
def _code_key(fn) -> tuple[str, int, str]:
    code = fn.__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def _methods(names: list[str], method: str) -> list[tuple[str, int, str]]:
    """The cProfile keys of ``ncpn.<name>.<method>`` for the classes that exist (layouts differ between versions)."""
    return [_code_key(getattr(getattr(ncpn, n), method)) for n in names
            if hasattr(ncpn, n) and hasattr(getattr(ncpn, n), method)]


GROUPS = [  # (label, cProfile keys of functions whose cumulative time is the group's); nested groups are subtracted
    ("u stream: whole rows", lambda: _methods(["_InputRows", "_ResnetRows", "_DownsizeRows", "_UpsizeRows"],
                                                       "row")),
    ("ul row preparation (top kernel rows)", lambda: _methods(["_InputPositions", "_ResnetPositions",
                                                               "_DownsizePositions", "_UpsizePositions"], "start")),
    ("ul attention (cache update + attention)", lambda: _methods(["_AttentionPositions"], "__call__")),
    ("ul gated resnets (convs, gate, concat_elu)", lambda: _methods(["_ResnetPositions"], "at")),
    ("ul input, down-/up-sampling", lambda: _methods(["_InputPositions", "_DownsizePositions", "_UpsizePositions"],
                                                     "at")),
    ("mixture head (nin)", lambda: _methods(["_HeadPositions"], "__call__")),
    ("mixture sampling (template's draw)", lambda: [_code_key(ARBackbone._sample_position)]),
]


def profile_split(run, repeats: int = 1) -> tuple[float, list[tuple[str, float]], float]:
    """``(total CPU s, [(group, CPU s)], CPU s inside torch calls)`` of ``run()`` under cProfile (CPU-time timer);
    the least total of ``repeats`` runs. Group times are cumulative, with attention taken out of the resnets."""
    best = None
    for _ in range(repeats):
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        run()
        profiler.disable()
        stats = pstats.Stats(profiler).stats  # key -> (primitive calls, calls, tottime, cumtime, callers)
        total = sum(v[2] for v in stats.values())
        if best is None or total < best[0]:
            best = (total, stats)
    total, stats = best
    cumulative = {label: sum(stats[k][3] for k in keys() if k in stats) for label, keys in GROUPS}
    cumulative["ul gated resnets (convs, gate, concat_elu)"] -= cumulative["ul attention (cache update + attention)"]
    rows = [(label, cumulative[label]) for label, _ in GROUPS]
    rows.append(("rest: sampling loop, canvas, driver", total - sum(s for _, s in rows)))
    in_torch = sum(v[2] for k, v in stats.items() if k[0] == "~" and ("torch" in k[2] or "Tensor" in k[2]))
    return total, rows, in_torch


# ---- main --------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mnist")
    parser.add_argument("--config", default=str(ROOT / "examples" / "configs" / "ncpn_mnist_vp.json"))
    parser.add_argument("--sample-size", dest="sample_size", type=int)
    parser.add_argument("--in-channels", dest="in_channels", type=int)
    parser.add_argument("--attention-heads", dest="attention_heads", type=int)
    parser.add_argument("--batch-size", type=int, help="default: the preset's (mnist 16, rgb32 8)")
    parser.add_argument("--naive-pixels", type=int, default=8, help="pixels timed for the naive loop (0 = all)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement (the least is reported)")
    parser.add_argument("--profile", action="store_true", help="split the cached sampler's time by layer kind")
    parser.add_argument("--skip-naive", action="store_true", help="cached sampler (and profile) only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = torch.device(args.device)
    model = build(args, device)
    b = args.batch_size or PRESETS[args.preset][1]
    c, height, width = model.image_shape
    num_pixels = height * width
    t = torch.tensor([0.0, 0.05] * (b // 2) + [0.0] * (b % 2), device=device)
    cpu_key = device.type == "cpu"  # CPU time on CPU, wall time on CUDA

    def generator():
        return torch.Generator(device=device).manual_seed(args.seed)

    def cached_run():
        return model.sample(b, t, generator=generator(), use_cache=True, progress=False)

    naive_pixels = num_pixels if args.naive_pixels <= 0 else min(args.naive_pixels, num_pixels)
    known_mask = torch.ones(b, c, height, width, device=device)
    known_mask.view(b, c, -1)[:, :, :naive_pixels] = 0  # raster order: the first pixels are drawn
    x = cached_run()  # warm-up (allocator, kernels)
    known = torch.where(known_mask.bool(), x, torch.zeros_like(x))

    def naive_run():
        return model.sample(b, t, generator=generator(), use_cache=False, progress=False, known=known,
                            known_mask=known_mask)

    def forward():
        with torch.no_grad():
            return model(x, t)

    def network_alone():  # the cached network on the drawn image, without the draws and the sampling loop
        with torch.no_grad():
            cache = NCPNCache(model, x, model.conditioning(t, None, x.dtype))
            for i in range(height):
                cache.start_row(i)
                for j in range(width):
                    cache.params_at(i, j)
                    cache.set_pixel(i, j, x[:, :, i, j])

    forward()
    # interleaved, so that every measurement has the same chance of a quiet moment on a shared machine
    runs = {"cached": [], "forward": [], "network": [], "naive": []}
    for _ in range(args.repeats):
        runs["cached"].append(timed(cached_run, device))
        runs["forward"].append(timed(forward, device))
        runs["network"].append(timed(network_alone, device))
        if not args.skip_naive:
            runs["naive"].append(timed(naive_run, device))
    cached, cached_wall, cached_cpu = least(runs["cached"], device)
    _, fwd_wall, fwd_cpu = least(runs["forward"], device)
    _, net_wall, net_cpu = least(runs["network"], device)
    cached_s, fwd_s = (cached_cpu, fwd_cpu) if cpu_key else (cached_wall, fwd_wall)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"NCPN {Path(args.config).name} ({args.preset}): {height}x{width}x{c}, attention heads "
          f"{model.config.attention_heads}, batch {b}, {model.num_parameters() / 1e6:.2f} M parameters, device "
          f"{device}, torch threads {torch.get_num_threads()}, load average {load:.1f} on {os.cpu_count()} CPUs")
    clock = "CPU" if cpu_key else "wall"
    print(f"times: the least of {args.repeats} interleaved runs; ratios from {clock} seconds")
    print(f"{'':<28} {'pixels':>7} {'CPU s':>9} {'wall s':>9} {'ms/pixel':>9} {'images/s':>9}")

    def line(name, pixels, wall, cpu):
        per_pixel = (cpu if cpu_key else wall) / pixels
        print(f"{name:<28} {pixels:>7} {cpu:>9.3f} {wall:>9.3f} {1e3 * per_pixel:>9.3f} "
              f"{b / (per_pixel * num_pixels):>9.3f}")

    line("cached sampler", num_pixels, cached_wall, cached_cpu)
    line("  its network alone", num_pixels, net_wall, net_cpu)
    if not args.skip_naive:
        naive, naive_wall, naive_cpu = least(runs["naive"], device)
        line("naive loop", naive_pixels, naive_wall, naive_cpu)
        naive_s = (naive_cpu if cpu_key else naive_wall) / naive_pixels * num_pixels
        drawn = ~known_mask.bool()
        clean = (t == 0)[:, None, None, None].expand_as(drawn)
        same_clean = torch.equal(naive[drawn & clean], cached[drawn & clean])
        noisy = drawn & ~clean
        max_diff = (naive[noisy] - cached[noisy]).abs().max().item() if noisy.any() else 0.0
        extrapolated = f" (naive extrapolated from {naive_pixels} pixels)" if naive_pixels < num_pixels else ""
        print(f"speed-up cached vs naive: {naive_s / cached_s:.1f}x{extrapolated}")
        print(f"same samples on the {naive_pixels} pixels drawn by both: t = 0 identical: {same_clean}; "
              f"t > 0 max |diff| {max_diff:.2e}")
    print(f"one forward pass: {fwd_cpu:.3f} CPU s, {fwd_wall:.3f} wall s; the cached sampler takes "
          f"{cached_s / fwd_s:.1f} forward passes (H·W = {num_pixels} would be no gain)")

    if args.profile:
        total, rows, in_torch = profile_split(cached_run, args.repeats)
        print(f"\ncached sampler under cProfile: {total:.3f} CPU s (profiling adds overhead), "
              f"{1e3 * total / num_pixels:.3f} ms/pixel")
        print(f"{'layer kind':<46} {'CPU s':>7} {'share':>6} {'us/pixel':>9}")
        for label, seconds in rows:
            print(f"{label:<46} {seconds:>7.3f} {100 * seconds / total:>5.1f}% {1e6 * seconds / num_pixels:>9.1f}")
        print(f"{'inside torch calls (kernels + dispatch)':<46} {in_torch:>7.3f} {100 * in_torch / total:>5.1f}%")
        print(f"{'in Python (incl. tensor indexing)':<46} {total - in_torch:>7.3f} "
              f"{100 * (total - in_torch) / total:>5.1f}%")
    if hasattr(os, "getloadavg"):
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
