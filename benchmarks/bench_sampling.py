"""Sampling speed of both backbones: naive vs cached AR sampling, score cost, likelihood throughput, pipeline split.

    OMP_NUM_THREADS=2 python benchmarks/bench_sampling.py [--device cpu|cuda] [--batch-size 16] [--repeats 2]
        [--backbones ncpn transformer] [--configs mnist rgb32] [--naive-pixels 8] [--full-naive] [--steps 5]
        [--pipeline-configs mnist rgb32] [--max-seconds 30]

Configurations (random weights; speed does not depend on them):

* ``mnist``: ``examples/configs/{ncpn,ar_transformer}_mnist_vp.json`` (28×28×1);
* ``rgb32``: the same architectures at 32×32×3 (not the 73 M-parameter paper CIFAR-10 NCPN, whose naive sampling
  takes hours on a CPU).

Columns, per configuration and backbone, at batch ``B`` (``--batch-size``):

* ``fwd ms``: one forward pass (``t = 0.05``) under ``torch.no_grad()``; ``score ms``: one ``backbone.score`` call
  (forward + backward, as the refinement phase uses it); ``score/fwd``: their ratio (the target is ≤ 3);
  ``score/fwd+graph``: the score against a forward pass with autograd recording (as in training);
* ``lik img/s``: likelihood evaluation (``log_prob`` at ``t = 0`` on grid images, ``no_grad``), images per second;
* ``naive img/s`` / ``cached img/s``: AR sampling with ``use_cache=False`` / ``True`` at ``t = 0.05``, and their
  ratio. Naive sampling costs one full forward pass per pixel whatever the position, so by default it is timed on
  the first ``--naive-pixels`` pixels (the others given as known, which both paths skip) and extrapolated to the
  whole image (marked ``~``); ``--full-naive`` times whole images. Cached sampling is always timed on whole images
  (a cache's cost is not linear in the pixels drawn), stopped after ``--max-seconds`` (marked ``<``: an upper
  bound; a missing or ineffective cache shows up this way or as a ratio near 1).

The second table (``--pipeline-configs``, default ``mnist``) splits one ``NCMLPipeline`` call (``t_start = t_max / 2``
of the VP SDE, ``--steps`` predictor steps with one corrector step each, ``use_cache=True``) into its AR phase and
its score-based refinement (``refine s/step`` scales it to other step counts).
Timings are wall-clock medians over ``--repeats`` runs after a warm-up (sampling: a single run), with
``torch.get_num_threads()`` threads; on a shared machine they vary by tens of percent.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

from ncml.models.ar_transformer import ARTransformerModel
from ncml.models.autoregressive import ARBackbone
from ncml.models.ncpn import NCPNModel

CONFIG_DIR = Path(__file__).resolve().parents[1] / "examples" / "configs"
BACKBONES = {"ncpn": (NCPNModel, "ncpn_mnist_vp.json"), "transformer": (ARTransformerModel,
                                                                        "ar_transformer_mnist_vp.json")}
CONFIGS = {"mnist": {}, "rgb32": {"sample_size": 32, "in_channels": 3}}
T_SAMPLE = 0.05  # the pipeline's default t_start for the VP SDE (t_max / 2)


# ---- helpers -------------------------------------------------------------------------------------
def build(backbone: str, config: str, device: torch.device) -> ARBackbone:
    cls, filename = BACKBONES[backbone]
    data = json.loads((CONFIG_DIR / filename).read_text())
    data.update(CONFIGS[config])
    torch.manual_seed(0)
    return cls.from_config(data).to(device).eval()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    """Seconds of one call of ``fn``."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median_time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(timed(fn, device) for _ in range(repeats))


def grid_images(model: ARBackbone, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    levels = 2**model.config.num_bits
    k = torch.randint(0, levels, (batch_size, *model.image_shape), generator=generator)
    return (k * model.bin_width - 1).to(model.device)


def sample_seconds(model: ARBackbone, batch_size: int, *, use_cache: bool, pixels: int | None) -> float:
    """Seconds of one AR sampling call; ``pixels``: only the first ``pixels`` raster positions are drawn."""
    kwargs = {}
    if pixels is not None:
        c, h, w = model.image_shape
        mask = torch.ones(batch_size, c, h * w, device=model.device)
        mask[:, :, :pixels] = 0
        kwargs = {"known": torch.full((batch_size, c, h, w), -1.0, device=model.device),
                  "known_mask": mask.reshape(batch_size, c, h, w)}
    generator = torch.Generator(model.device).manual_seed(0)
    return timed(lambda: model.sample(batch_size, T_SAMPLE, generator=generator, use_cache=use_cache,
                                      progress=False, **kwargs), model.device)


def naive_images_per_second(model: ARBackbone, batch_size: int, *, probe_pixels: int, full: bool) -> tuple[float, str]:
    """(images/s, mark) of naive sampling: measured on whole images (mark ``""``) or extrapolated (``"~"``).

    The naive loop costs one full forward pass per drawn pixel wherever it is, so the first ``probe_pixels``
    pixels (the rest given as known, which it skips) scale linearly to the whole image.
    """
    _, h, w = model.image_shape
    sample_seconds(model, batch_size, use_cache=False, pixels=min(2, h * w))  # warm-up
    if full:
        return batch_size / sample_seconds(model, batch_size, use_cache=False, pixels=None), ""
    probe = sample_seconds(model, batch_size, use_cache=False, pixels=probe_pixels)
    return batch_size / (probe / probe_pixels * h * w), "~"


def cached_images_per_second(model: ARBackbone, batch_size: int, *, max_seconds: float) -> tuple[float, str]:
    """(images/s, mark) of cached sampling on whole images; mark ``"<"`` if it ran past ``max_seconds`` and was stopped.

    A cache's cost is not linear in the pixels drawn (row-wise work, every position visited, set-up), so it is
    timed on whole images, under an alarm so that a missing or ineffective cache cannot stall the run.
    """
    try:
        with time_limit(max_seconds):
            return batch_size / sample_seconds(model, batch_size, use_cache=True, pixels=None), ""
    except TimeoutError:
        return batch_size / max_seconds, "<"


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise ``TimeoutError`` in the main thread after ``seconds`` (SIGALRM; no limit where that is unavailable)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"over {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def bench_backbone(backbone: str, config: str, args, device: torch.device) -> dict:
    model = build(backbone, config, device)
    b = args.batch_size
    g = torch.Generator().manual_seed(0)
    x_clean = grid_images(model, b, g)
    x_noisy = x_clean + 0.2 * torch.randn(x_clean.shape, generator=g).to(device)

    def forward():
        with torch.no_grad():
            model(x_noisy, T_SAMPLE)

    def forward_with_graph():  # as in training: autograd records the pass
        model(x_noisy, T_SAMPLE).log_prob.sum()

    def score():
        with torch.no_grad():  # as in the pipelines: score enables autograd itself
            model.score(x_noisy, T_SAMPLE)

    def likelihood():
        with torch.no_grad():
            model.log_prob(x_clean, 0.0)

    fwd = median_time(forward, device, args.repeats)
    fwd_graph = median_time(forward_with_graph, device, args.repeats)
    scr = median_time(score, device, args.repeats)
    lik = median_time(likelihood, device, args.repeats)
    probe = min(args.naive_pixels, model.image_shape[1] * model.image_shape[2])
    naive, naive_mark = naive_images_per_second(model, b, probe_pixels=probe, full=args.full_naive)
    cached, cached_mark = cached_images_per_second(model, b, max_seconds=args.max_seconds)
    return {"config": config, "backbone": backbone, "params": model.num_parameters(), "fwd_ms": 1e3 * fwd,
            "score_ms": 1e3 * scr, "score_over_fwd": scr / fwd,
            "score_over_fwd_graph": scr / fwd_graph, "lik_img_s": b / lik, "naive_img_s": naive,
            "naive_mark": naive_mark, "cached_img_s": cached, "cached_mark": cached_mark, "speedup": cached / naive}


@contextlib.contextmanager
def ar_phase_timer(model: ARBackbone, device: torch.device):
    """Within the block, ``model.sample`` (the AR phase of a pipeline call) also appends its seconds to the yielded
    list (synchronised on ``device``); an instance attribute shadows the method and is removed on exit."""
    ar_seconds: list[float] = []
    original = model.sample

    @functools.wraps(original)  # keeps the signature, which the pipeline inspects for `progress`
    def timed_sample(*a, **kw):
        synchronize(device)
        start = time.perf_counter()
        out = original(*a, **kw)
        synchronize(device)
        ar_seconds.append(time.perf_counter() - start)
        return out

    model.sample = timed_sample
    try:
        yield ar_seconds
    finally:
        del model.sample


def bench_pipeline(backbone: str, config: str, args, device: torch.device) -> dict | str:
    try:
        from ncml.pipelines import NCMLPipeline
        from ncml.schedulers import VPSDEScheduler
    except ImportError as e:
        return f"ncml.pipelines does not import ({e})"
    model = build(backbone, config, device)
    pipe = NCMLPipeline(model, VPSDEScheduler())
    pipe.set_progress_bar_config(disable=True)
    with ar_phase_timer(model, device) as ar_seconds:
        generator = torch.Generator(device).manual_seed(0)
        outputs = []
        total = timed(lambda: outputs.append(pipe(args.batch_size, num_inference_steps=args.steps,
                                                  generator=generator, output_type="np")), device)
    ar = ar_seconds[0]
    return {"config": config, "backbone": backbone, "total_s": total, "ar_s": ar, "refine_s": total - ar,
            "steps": args.steps, "refine_s_per_step": (total - ar) / args.steps, "nfe": outputs[0].nfe}


# ---- tables ------------------------------------------------------------------------------------------
def print_table(rows: list[dict], columns: list[tuple]) -> None:
    """``columns``: ``(header, format string or function of the row)``; right-aligned plain text."""
    cells = [[fmt.format(**row) if isinstance(fmt, str) else fmt(row) for _, fmt in columns] for row in rows]
    headers = [h for h, _ in columns]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per forward/score/likelihood figure")
    parser.add_argument("--backbones", nargs="+", choices=sorted(BACKBONES), default=sorted(BACKBONES))
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["mnist", "rgb32"])
    parser.add_argument("--naive-pixels", type=int, default=8, help="pixels timed to extrapolate naive sampling")
    parser.add_argument("--full-naive", action="store_true", help="time naive sampling on whole images (slow)")
    parser.add_argument("--max-seconds", type=float, default=30.0,
                        help="time cached sampling on whole images when the probe predicts at most this")
    parser.add_argument("--steps", type=int, default=5, help="refinement steps of the pipeline call (0 = skip)")
    parser.add_argument("--pipeline-configs", nargs="*", choices=sorted(CONFIGS), default=["mnist"],
                        help="configurations whose pipeline call is timed (none: skip the second table)")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch_size}; t = {T_SAMPLE}")

    rows, pipeline_rows = [], []
    for config in args.configs:
        for backbone in args.backbones:
            print(f"timing {config} / {backbone} …", file=sys.stderr, flush=True)
            rows.append(bench_backbone(backbone, config, args, device))
            if args.steps > 0 and config in args.pipeline_configs:
                print(f"timing {config} / {backbone}: pipeline call …", file=sys.stderr, flush=True)
                pipeline_rows.append(bench_pipeline(backbone, config, args, device))

    def img_s(key):
        return lambda r: r[key.replace("img_s", "mark")] + f"{r[key]:.3g}"

    print()
    print_table(rows, [("config", "{config}"), ("backbone", "{backbone}"), ("params", "{params:,}"),
                       ("fwd ms", "{fwd_ms:.1f}"), ("score ms", "{score_ms:.1f}"),
                       ("score/fwd", "{score_over_fwd:.2f}"),
                       ("score/fwd+graph", "{score_over_fwd_graph:.2f}"), ("lik img/s", "{lik_img_s:.1f}"),
                       ("naive img/s", img_s("naive_img_s")),
                       ("cached img/s", img_s("cached_img_s")),
                       ("cached/naive", lambda r: r["cached_mark"] + f"{r['speedup']:.1f}x")])
    print("~ = extrapolated from the first --naive-pixels pixels; < = stopped after --max-seconds (an upper bound)")
    if pipeline_rows:
        print()
        failed = [r for r in pipeline_rows if isinstance(r, str)]
        if failed:
            print(f"pipeline: skipped, {failed[0]}")
        else:
            print(f"NCMLPipeline call (VP, t_start = {T_SAMPLE}, {args.steps} steps × (1 predictor + 1 corrector))")
            print_table(pipeline_rows, [("config", "{config}"), ("backbone", "{backbone}"),
                                        ("total s", "{total_s:.2f}"), ("AR s", "{ar_s:.2f}"),
                                        ("refine s", "{refine_s:.2f}"),
                                        ("refine s/step", "{refine_s_per_step:.3f}"), ("nfe", "{nfe}"),
                                        ("AR share", lambda r: f"{100 * r['ar_s'] / r['total_s']:.0f}%")])


if __name__ == "__main__":
    main()
