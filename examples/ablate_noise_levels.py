#!/usr/bin/env python
"""Ablation of the NCML noise-level distribution μ at equal budget: which recipe makes two-part sampling pay off?

    python examples/ablate_noise_levels.py              # train every variant (resumable), evaluate, write the page
    python examples/ablate_noise_levels.py --quick      # a few steps and samples each: checks the pipeline end to end

Every variant continues the bundled NCML model (``ncml.pretrained("ncpn-mnist5k-vp")``, 6,000 steps) for the same
number of extra steps with the same batch, learning rate, seed and data order; only the loss's μ (and, for the
"small T" variants, the scheduler's ``t_max``) differ. The MLE variant (``clean_fraction=1``) is the baseline at
the same budget. Training uses the training digits without the validation split
(``ncml.data.load_dataset("mnist5k", "train", exclude_validation=True)``), and every figure that picks the winner
or the sampler settings is measured on the 500 validation digits; the test digits are not touched here.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ncml

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "examples" / "train_ncml.py"
CONFIG = ROOT / "examples" / "configs" / "ncpn_mnist_vp.json"

# name -> (train_ncml.py flags that define the variant, what it tests)
VARIANTS: dict[str, tuple[list[str], str]] = {
    "uniform-T0.1": (["--clean_fraction", "0.5", "--noise_distribution", "uniform", "--t_max", "0.1"],
                     "today's recipe: t = 0 for half the batch, else t ~ U(0, 0.1]"),
    "loguniform-T0.1": (["--clean_fraction", "0.5", "--noise_distribution", "log_uniform", "--t_min", "1e-4",
                         "--t_max", "0.1"], "log t ~ U[log 1e-4, log 0.1]: the same share of examples per decade"),
    "uniform-T0.02": (["--clean_fraction", "0.5", "--noise_distribution", "uniform", "--t_max", "0.02"],
                      "a smaller T: t ~ U(0, 0.02], the range two-part sampling uses"),
    "loguniform-T0.02": (["--clean_fraction", "0.5", "--noise_distribution", "log_uniform", "--t_min", "1e-4",
                          "--t_max", "0.02"], "both: log t ~ U[log 1e-4, log 0.02]"),
    "mle": (["--clean_fraction", "1.0", "--t_max", "0.1"], "the MLE baseline at the same budget (t = 0 always)"),
}

# shared by every variant: a fine-tune of the bundled model (its optimizer state is not shipped: warm up again)
COMMON = ["--dataset", "mnist5k", "--validation_split", "--train_batch_size", "32", "--learning_rate", "2e-4",
          "--lr_warmup_steps", "50", "--ema_decay", "0.995", "--seed", "0", "--eval_max_images", "200",
          "--num_sample_images", "0", "--checkpoints_total_limit", "1", "--resume_from_checkpoint", "latest"]


def init_pipeline(variant: str) -> str:
    """Where a variant starts: the bundled MLE model for the MLE variant, the bundled NCML model otherwise."""
    return ncml.pretrained("ncpn-mnist5k-mle" if variant == "mle" else "ncpn-mnist5k-vp")


def train_command(variant: str, out: Path, steps: int, eval_steps: int) -> list[str]:
    flags, _ = VARIANTS[variant]
    return [sys.executable, str(TRAIN), "--config", str(CONFIG), "--output_dir", str(out / variant),
            "--max_train_steps", str(steps), "--eval_steps", str(eval_steps),
            "--checkpointing_steps", str(max(1, min(200, steps))), "--init_from", init_pipeline(variant),
            *COMMON, *flags]


def train_all(variants: list[str], out: Path, steps: int, eval_steps: int, jobs: int) -> None:
    """Train (or resume) every variant, ``jobs`` at a time, one torch thread each; logs in ``out/<variant>.log``."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def run(variant: str) -> None:
        if (out / variant / "model_index.json").is_file():
            return  # finished earlier
        with open(out / f"{variant}.log", "a") as log:
            subprocess.run(train_command(variant, out, steps, eval_steps), env=env, stdout=log,
                           stderr=subprocess.STDOUT, check=True)

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(run, variants))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "ablation", help="runs and results")
    p.add_argument("--steps", type=int, default=600, help="extra training steps per variant")
    p.add_argument("--jobs", type=int, default=2, help="variants trained at once (one thread each)")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--stage", choices=("train", "all"), default="all")
    p.add_argument("--quick", action="store_true", help="a few steps and samples: an end-to-end check")
    args = p.parse_args(argv)
    steps = 2 if args.quick else args.steps
    train_all(args.variants, args.out, steps, eval_steps=0 if args.quick else 200, jobs=args.jobs)


if __name__ == "__main__":
    main()
