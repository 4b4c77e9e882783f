"""GPU check of NCPN: training throughput and FLOP/s, memory, torch.compile, sampling cost, multi-process training.

    python benchmarks/gpu_check.py                        # CUDA: the paper's CIFAR-10 config, batch 64 (minutes)
    python benchmarks/gpu_check.py --peak_tflops 989      # dense bf16 peak of a device missing from PEAK_TFLOPS
    python benchmarks/gpu_check.py --tiny                 # a tiny config on any device (the default without CUDA)

One command; prints one table. With random weights (speed does not depend on them) it measures:

* **training**: steps of ``NCMLLoss`` forward + backward + Adam at ``--batch-size`` (64), in float32 and in bfloat16
  autocast: images/s, the achieved FLOP/s and its fraction of the device's dense peak, and the peak memory
  (``torch.cuda.max_memory_allocated`` over the timed steps). FLOPs per step are counted, not estimated: one float32
  step runs under ``FlopCounterMode`` (``flop_count.py``: convolutions, matrix products and attention, forward and
  backward, 2 FLOPs per multiply-add; elementwise work and the optimizer are not counted). Peaks come from
  ``PEAK_TFLOPS`` (matched against the device name) or ``--peak_tflops`` / ``--peak_tflops_fp32``; float32 is
  compared with the TF32 tensor-core peak when cuDNN may use TF32 (PyTorch's default for convolutions, which carry
  almost all of NCPN's FLOPs), else with the plain float32 peak;
* **torch.compile** (measured last: compiling can take minutes): the same bfloat16 step with ``torch.compile(model)``: the speed-up over eager, and the seconds of
  the first (compiling) step;
* **cached sampling**: ``model.sample(use_cache=True)`` of whole images (32×32×3 for CIFAR-10) at ``t = 0.05`` and
  batch ``--sample-batch`` (64), images/s;
* **cached == naive**: the tiny config sampled with and without the cache on the device, TF32 off: every value equal
  at t = 0, within 1e-3 at t = 0.05 (PASS/FAIL);
* **two-part sampling**: one ``NCMLPipeline`` call (``VPSDEScheduler``, the library's default sampler unless
  ``--pipeline-steps``), seconds per image, split into the AR phase and the refinement;
* **2 processes vs 1**: ``accelerate launch`` of a small model with 2 processes at batch ``n`` each against 1 process
  at ``2n`` (per-example generators, so both see the same examples and draws): the gradient of the first step and
  the loss after 3 steps must agree to float rounding (printed as PASS/FAIL). The processes use 2 GPUs where there
  are 2, else the CPU (gloo).

On CPU, or with ``--tiny``, the same code runs at a tiny size (a slow test keeps it working); its figures are not
meaningful. Exit status 1 if a measurement fails or the 2-process check does not pass.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # flop_count and bench_sampling, also when imported or launched from elsewhere

from bench_sampling import ar_phase_timer  # noqa: E402
from bench_sampling import timed as seconds  # noqa: E402
from flop_count import counter  # noqa: E402

from ncml.losses.ncml_loss import NCMLLoss  # noqa: E402
from ncml.models.ncpn import NCPNModel  # noqa: E402
from ncml.schedulers import VPSDEScheduler  # noqa: E402

#: Dense peak TFLOP/s per device (bfloat16 tensor cores, TF32 tensor cores, plain float32), from the vendors' data
#: sheets (SXM variants unless named); the first entry whose key the device name contains is used.
PEAK_TFLOPS = {
    "H200": (989.0, 494.0, 67.0),
    "H100 PCIe": (756.0, 378.0, 51.0),
    "H100": (989.0, 494.0, 67.0),
    "GH200": (989.0, 494.0, 67.0),
    "A100": (312.0, 156.0, 19.5),
    "L40S": (362.0, 183.0, 91.6),
    "L4": (121.0, 60.0, 30.3),
    "A10": (125.0, 62.5, 31.2),
}
TINY = dict(sample_size=8, in_channels=3, num_bits=8, nr_resnet=1, nr_filters=16, nr_logistic_mix=3,
            attention_heads=2, dropout=0.0, num_classes=None, fourier_scale=1.0, embedding_dim=32)
DDP_MODEL = dict(TINY, nr_filters=12)  # the 2-process check: small, no dropout (runs compare across layouts)
T_SAMPLE = 0.05  # the AR phase's t of the default two-part sampler (VP: t_max / 2)


# ---- helpers -----------------------------------------------------------------------------------------------------
def grid_images(model: NCPNModel, batch: int, generator: torch.Generator) -> torch.Tensor:
    k = torch.randint(0, 2**model.config.num_bits, (batch, *model.image_shape), generator=generator)
    return k * model.bin_width - 1


def load_config(args) -> dict:
    if args.tiny:
        return dict(TINY)
    data = json.loads(Path(args.config).read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def peaks(device: torch.device, args) -> tuple[float | None, float | None, str]:
    """``(bf16 peak, float32 peak, note)`` in TFLOP/s for the FLOP/s fractions (``None`` where unknown)."""
    bf16 = fp32 = None
    source = "no peak known (give --peak_tflops)"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (b, tf32, f32) in PEAK_TFLOPS.items():
            if key in name:
                tf32_on = torch.backends.cudnn.allow_tf32
                bf16, fp32 = b, tf32 if tf32_on else f32
                source = f"{key} data sheet: bf16 {b:g}, float32 {fp32:g} ({'TF32' if tf32_on else 'no TF32'})"
                break
    if args.peak_tflops:
        bf16, source = args.peak_tflops, f"--peak_tflops {args.peak_tflops:g}"
    if args.peak_tflops_fp32:
        fp32, source = args.peak_tflops_fp32, source + f", --peak_tflops_fp32 {args.peak_tflops_fp32:g}"
    return bf16, fp32, source


# ---- training ----------------------------------------------------------------------------------------------------
def training_step(model, optimizer, x0, *, precision: str, generator: torch.Generator):
    """One NCML training step: loss (bfloat16 autocast if asked), backward, Adam."""
    loss_fn, scheduler = NCMLLoss(), VPSDEScheduler()
    device = x0.device

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = loss_fn(model, scheduler, x0, generator=generator)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss.detach()

    return step


def measure_training(model, args, device, precision: str, *, compiled: bool = False) -> dict:
    """images/s, s/step, peak memory and the first step's seconds of ``--steps`` timed steps after warm-up."""
    net = torch.compile(model, backend=args.compile_backend) if compiled else model
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    x0 = grid_images(model, args.batch_size, torch.Generator().manual_seed(0)).to(device)
    if args.channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    step = training_step(net, optimizer, x0, precision=precision,
                         generator=torch.Generator(device).manual_seed(0))
    first = seconds(step, device)  # compiles, if compiled
    seconds(step, device)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    total = seconds(lambda: [step() for _ in range(args.steps)], device)
    memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    del optimizer
    return {"images_s": args.batch_size * args.steps / total, "step_s": total / args.steps, "first_s": first,
            "memory": memory}


def count_step_flops(model, args, device) -> int:
    """FLOPs of one float32 training step (forward + backward), counted by ``FlopCounterMode``."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x0 = grid_images(model, args.batch_size, torch.Generator().manual_seed(0)).to(device)
    step = training_step(model, optimizer, x0, precision="fp32", generator=torch.Generator(device).manual_seed(0))
    with counter() as mode:
        step()
    return mode.get_total_flops()


# ---- sampling ----------------------------------------------------------------------------------------------------
def measure_cached_sampling(model, args, device) -> dict:
    model.eval()
    b, (c, h, w) = args.sample_batch, model.image_shape
    mask = torch.ones(b, c, h, w, device=device)
    mask[:, :, :1] = 0  # warm-up: the first row only
    model.sample(b, T_SAMPLE, known=torch.zeros_like(mask), known_mask=mask, progress=False,
                 generator=torch.Generator(device).manual_seed(0))
    s = seconds(lambda: model.sample(b, T_SAMPLE, progress=False, generator=torch.Generator(device).manual_seed(0)),
                device)
    return {"images_s": b / s, "seconds": s, "ms_pixel": 1e3 * s / (h * w)}


def check_cache_matches(device) -> dict:
    """Cached vs naive sampling of the tiny config on ``device`` (TF32 off): equal draws at t = 0, max gap at t > 0."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        torch.manual_seed(0)
        model = NCPNModel.from_config(TINY).to(device).eval()
        out = {}
        for t in (0.0, T_SAMPLE):
            cached, naive = (model.sample(4, t, use_cache=use_cache, progress=False,
                                          generator=torch.Generator(device).manual_seed(0))
                             for use_cache in (True, False))
            out[t] = (cached == naive).float().mean().item() if t == 0 else (cached - naive).abs().max().item()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    return {"equal": out[0.0], "gap": out[T_SAMPLE], "passed": out[0.0] == 1.0 and out[T_SAMPLE] < 1e-3}


def measure_pipeline(model, args, device) -> dict:
    from ncml.pipelines import NCMLPipeline

    model.eval()
    pipe = NCMLPipeline(model, VPSDEScheduler())
    pipe.set_progress_bar_config(disable=True)
    outputs = []
    kwargs = {} if args.pipeline_steps is None else {"num_inference_steps": args.pipeline_steps}
    with ar_phase_timer(model, device) as ar_seconds:
        total = seconds(lambda: outputs.append(pipe(args.sample_batch, generator=torch.Generator(device).manual_seed(0),
                                                    output_type="np", **kwargs)), device)
    b, ar = args.sample_batch, ar_seconds[0]
    settings = pipe.sampling_config
    steps = args.pipeline_steps or settings.num_inference_steps
    return {"total": total / b, "ar": ar / b, "refine": (total - ar) / b, "steps": steps,
            "correct": settings.correct_steps, "nfe": outputs[0].nfe}


# ---- 2 processes vs 1 -------------------------------------------------------------------------------------------
DDP_GLOBAL_BATCH, DDP_STEPS = 8, 3


def ddp_worker(out_dir: str) -> None:
    """Run under ``accelerate launch``: the first step's gradient and the loss of every step, written by rank 0."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if accelerator.device.type == "cuda":  # compare float32 sums, not TF32 ones
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = NCPNModel.from_config(DDP_MODEL)  # the same initial weights in every process
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    backbone = accelerator.unwrap_model(model)
    n = DDP_GLOBAL_BATCH // accelerator.num_processes
    mine = range(accelerator.process_index * n, (accelerator.process_index + 1) * n)
    images = grid_images(backbone, DDP_GLOBAL_BATCH, torch.Generator().manual_seed(1))[list(mine)]
    x0 = images.to(accelerator.device)
    loss_fn, scheduler = NCMLLoss(), VPSDEScheduler()
    losses, gradient = [], None
    for step in range(DDP_STEPS):
        generators = [torch.Generator().manual_seed(1000 * step + k) for k in mine]  # per example: layout-free
        out = loss_fn(model, scheduler, x0, generator=generators)
        accelerator.backward(out.loss)
        if step == 0:
            gradient = torch.cat([p.grad.flatten() for p in backbone.parameters()]).cpu()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(accelerator.reduce(out.loss.detach(), "mean").item())
    if accelerator.is_main_process:
        torch.save({"losses": losses, "gradient": gradient, "processes": accelerator.num_processes,
                    "device": str(accelerator.device), "distributed": str(accelerator.distributed_type)},
                   Path(out_dir) / "result.pt")
    accelerator.wait_for_everyone()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, out_dir: Path, on_gpus: bool, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes > 1:
        cmd += ["--multi_gpu", "--main_process_port", str(free_port())]
    cmd += [str(Path(__file__).resolve()), "--ddp-worker", str(out_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if not on_gpus:
        env.update(CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="true")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"accelerate launch ({processes} processes) failed:\n{proc.stderr[-3000:]}")
    return torch.load(out_dir / "result.pt", weights_only=True)


def check_processes(timeout: float) -> dict:
    on_gpus = torch.cuda.is_available() and torch.cuda.device_count() >= 2
    with tempfile.TemporaryDirectory() as tmp:
        two_dir, one_dir = Path(tmp) / "two", Path(tmp) / "one"
        two_dir.mkdir()
        one_dir.mkdir()
        two = launch(2, two_dir, on_gpus, timeout)
        one = launch(1, one_dir, on_gpus, timeout)
    scale = one["gradient"].abs().max().item()
    grad_diff = (two["gradient"] - one["gradient"]).abs().max().item() / scale
    loss_diff = max(abs(a - b) / abs(b) for a, b in zip(two["losses"], one["losses"]))
    passed = two["processes"] == 2 and grad_diff < 1e-4 and loss_diff < 1e-5
    return {"grad_diff": grad_diff, "loss_diff": loss_diff, "passed": passed, "device": two["device"],
            "distributed": two["distributed"], "losses": two["losses"]}


# ---- main --------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "configs" / "ncpn_cifar10_vp.json"))
    parser.add_argument("--tiny", action="store_true", help="a tiny config (the default without CUDA)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--batch-size", type=int, help="training batch (default 64; tiny 4)")
    parser.add_argument("--steps", type=int, help="timed training steps (default 5; tiny 2)")
    parser.add_argument("--sample-batch", type=int, help="sampling batch (default 64; tiny 2)")
    parser.add_argument("--pipeline-steps", type=int, help="refinement steps (default: the library's; tiny 2)")
    parser.add_argument("--peak_tflops", type=float, help="the device's dense bf16 peak, TFLOP/s")
    parser.add_argument("--peak_tflops_fp32", type=float, help="the device's float32 (or TF32) peak, TFLOP/s")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend (the slow test uses aot_eager: it traces forward and backward "
                             "without generating code, which takes minutes on a CPU)")
    parser.add_argument("--no-ddp", action="store_true", help="skip the 2-process check")
    parser.add_argument("--no-sampling", action="store_true", help="skip the three sampling rows")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the two-part sampling row")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    parser.add_argument("--channels-last", action="store_true", help="train with channels_last weights and inputs")
    parser.add_argument("--ddp-timeout", type=float, default=900.0, help="seconds per accelerate launch")
    parser.add_argument("--ddp-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args.ddp_worker)
        return 0

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.tiny = args.tiny or device.type != "cuda"
    tiny = args.tiny
    args.batch_size = args.batch_size or (4 if tiny else 64)
    args.steps = args.steps or (2 if tiny else 5)
    args.sample_batch = args.sample_batch or (2 if tiny else 64)
    if args.pipeline_steps is None and tiny:
        args.pipeline_steps = 2
    config = load_config(args)
    torch.manual_seed(0)
    model = NCPNModel.from_config(config).to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark or torch.backends.cudnn.benchmark
    c, h, w = model.image_shape
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"gpu_check: {name}; torch {torch.__version__}; NCPN {'tiny' if tiny else Path(args.config).name} "
          f"({model.num_parameters() / 1e6:.2f} M parameters, {h}x{w}x{c}); training batch {args.batch_size}, "
          f"{args.steps} timed steps; sampling batch {args.sample_batch}", flush=True)
    if device.type == "cuda":
        print(f"TF32: cuDNN {torch.backends.cudnn.allow_tf32}, matmul {torch.backends.cuda.matmul.allow_tf32}; "
              f"cudnn.benchmark {torch.backends.cudnn.benchmark}; channels_last {args.channels_last}", flush=True)

    class Rows(list):
        """The table's rows; each is also printed as it is measured, so a run cut short keeps what it measured."""

        def append(self, row: tuple[str, str, str]) -> None:
            super().append(row)
            print(" | ".join(row), flush=True)

    rows = Rows()
    failures = []

    def run(label, fn):
        print(f"… {label}", file=sys.stderr, flush=True)
        try:
            return fn()
        except Exception as e:  # one failing measurement must not hide the others
            failures.append(label)
            rows.append((label, "FAILED", f"{type(e).__name__}: {str(e).splitlines()[0][:90]}"))
            traceback.print_exc()
            return None

    def verdict(label: str, passed: bool, note: str) -> None:
        rows.append((label, "PASS" if passed else "FAIL", note))
        if not passed:
            failures.append(label)

    bf16_peak, fp32_peak, peak_note = peaks(device, args)
    flops = run("FLOPs per training step", lambda: count_step_flops(model, args, device))
    if flops is not None:
        rows.append(("FLOPs per training step", f"{flops / 1e9:.4g} GFLOP",
                     f"{flops / args.batch_size / 1e9:.4g} GFLOP/image, FlopCounterMode (fwd + bwd matrix products)"))
    results = {}
    for precision, peak in (("fp32", fp32_peak), ("bf16", bf16_peak)):
        r = results[precision] = run(f"training {precision}", lambda p=precision: measure_training(model, args, device,
                                                                                                     p))
        if r is None:
            continue
        rows.append((f"training {precision}", f"{r['images_s']:.1f} images/s", f"{r['step_s'] * 1e3:.1f} ms/step"))
        if flops is not None:
            achieved = flops / r["step_s"] / 1e12
            share = f"{100 * achieved / peak:.1f}% of {peak:g}" if peak else "peak unknown"
            rows.append((f"  achieved FLOP/s {precision}", f"{achieved:.3g} TFLOP/s", share))
        if r["memory"] is not None:
            rows.append((f"  peak memory {precision}", f"{r['memory'] / 2**30:.2f} GiB",
                         f"batch {args.batch_size}, max_memory_allocated"))
    r = None if args.no_sampling else run("cached sampling", lambda: measure_cached_sampling(model, args, device))
    if r is not None:
        rows.append(("cached sampling", f"{r['images_s']:.2f} images/s",
                     f"{h}x{w}x{c}, batch {args.sample_batch}, t = {T_SAMPLE}, {r['ms_pixel']:.2f} ms/pixel"))
    r = None if args.no_sampling else run("cached == naive", lambda: check_cache_matches(device))
    if r is not None:
        verdict("cached == naive (tiny)", r["passed"], f"TF32 off; t = 0: {100 * r['equal']:.1f}% of values equal; "
                f"t = {T_SAMPLE}: max |gap| {r['gap']:.1e}")
    r = None if args.no_sampling or args.no_pipeline else run("two-part sampling",
                                                                lambda: measure_pipeline(model, args, device))
    if r is not None:
        rows.append(("two-part sampling", f"{r['total']:.3f} s/image",
                     f"AR {r['ar']:.3f} + refinement {r['refine']:.3f} s/image; {r['steps']} steps x (1 + "
                     f"{r['correct']} corrector), nfe {r['nfe']}, batch {args.sample_batch}"))
    if not args.no_ddp:
        r = run("2 processes vs 1", lambda: check_processes(args.ddp_timeout))
        if r is not None:
            verdict("2 processes vs 1 (accelerate)", r["passed"], f"{r['distributed']} on {r['device']}: step-1 "
                    f"gradient max rel diff {r['grad_diff']:.1e}, loss after {DDP_STEPS} steps rel diff "
                    f"{r['loss_diff']:.1e}")
    if not args.no_compile and results.get("bf16"):  # last: compiling can take minutes
        r = run("torch.compile bf16", lambda: measure_training(model, args, device, "bf16", compiled=True))
        if r is not None:
            rows.append(("torch.compile bf16", f"{results['bf16']['step_s'] / r['step_s']:.2f}x speed-up",
                         f"{r['images_s']:.1f} images/s; first step {r['first_s']:.0f} s (compiling); backend "
                         f"{args.compile_backend}"))
    rows.append(("peak used for the fractions", "", peak_note))

    widths = [max(len(row[i]) for row in rows + [("check", "value", "notes")]) for i in range(3)]
    print()
    print(f"| {'check':<{widths[0]}} | {'value':>{widths[1]}} | {'notes':<{widths[2]}} |")
    print(f"|{'-' * (widths[0] + 2)}|{'-' * (widths[1] + 2)}|{'-' * (widths[2] + 2)}|")
    for label, value, note in rows:
        print(f"| {label:<{widths[0]}} | {value:>{widths[1]}} | {note:<{widths[2]}} |")
    if tiny:
        print("(tiny configuration: the figures test the code path, they do not measure the device)")
    if failures:
        print(f"failed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
