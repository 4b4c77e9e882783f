"""`make demo`: two-part sampling from the bundled NCML model, and its held-out bits/dim.

    python examples/demo.py --out samples.png

1. loads the bundled pipeline ``ncml.pretrained("ncpn-mnist5k-vp")`` (an NCPN trained with NCML on
   MNIST-5k, VP SDE);
2. samples 16 digits in two parts — autoregressive draws of ``x_{t_start}`` (cached sampler), then
   score-based refinement to ``t = 0`` with the model's own score — and writes a grid PNG. The sampler settings
   are the pipeline's own (``sampling_config.json``: the best setting measured on validation digits);
   ``--t-start`` / ``--steps`` override them;
3. prints the model's held-out negative log-likelihood (bits/dim at ``t = 0``) on the MNIST-5k test split
   and the time each part took.
"""

from __future__ import annotations

import argparse
import time

import torch

import ncml
from ncml.data import load_dataset
from ncml.evaluation import bits_per_dim, make_grid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", default="ncpn-mnist5k-vp", help="a bundled name, a folder or a Hub repo id")
    p.add_argument("--out", default="samples.png", help="sample grid PNG")
    p.add_argument("--num-images", type=int, default=16)
    p.add_argument("--t-start", type=float, default=None, help="noise level of the AR draw (default: the pipeline's)")
    p.add_argument("--steps", type=int, default=None, help="refinement steps (default: the pipeline's)")
    p.add_argument("--num-test-images", type=int, default=500, help="held-out images for bits/dim")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    start = time.perf_counter()
    try:
        folder = ncml.pretrained(args.pipeline)
    except ValueError:
        folder = args.pipeline  # not a bundled name: a folder or a repo id
    pipe = ncml.NCMLPipeline.from_pretrained(folder)
    print(f"pipeline: {folder}  ({type(pipe.backbone).__name__}, {pipe.backbone.num_parameters():,} parameters, "
          f"{type(pipe.scheduler).__name__})")

    t0 = time.perf_counter()
    settings = pipe.sampling_config.replace(t_start=args.t_start, num_inference_steps=args.steps)
    out = pipe(batch_size=args.num_images, t_start=settings.t_start, num_inference_steps=settings.num_inference_steps,
               generator=torch.Generator().manual_seed(args.seed), output_type="np")
    t_sample = time.perf_counter() - t0
    make_grid(out.images, nrow=4, scale=4).save(args.out)
    print(f"wrote {args.out}: {args.num_images} digits, sampler {settings}, {out.nfe} network evaluations, "
          f"{t_sample:.1f} s")

    t0 = time.perf_counter()
    images, _ = load_dataset("mnist5k", "test")
    bpd = bits_per_dim(pipe.backbone, images[: args.num_test_images], t=0.0, desc="held-out bits/dim")
    print(f"held-out NLL on {min(len(images), args.num_test_images)} MNIST-5k test digits: {bpd.mean:.4f} bits/dim "
          f"({time.perf_counter() - t0:.1f} s)")
    print(f"total time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
