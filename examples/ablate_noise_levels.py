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

``--ship`` replaces the bundled pipelines by the winner and the MLE variant (with their recommended sampler
settings in ``sampling_config.json``). A later rerun then continues from those shipped models, not from the
6,000-step ones the recorded ablation started from: the step counts in the model cards say which is which.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import ncml
from ncml import NCMLPipeline
from ncml.configuration_utils import config_to_dict
from ncml.data import load_dataset, to_model_space, to_uint8
from ncml.evaluation import (bits_per_dim, classifier_features, frechet_distance_bootstrap, make_grid,
                             noise_robustness)
from ncml.pipelines.refinement import refine
from ncml.pipelines.sampling_config import SamplingConfig

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
            "--checkpointing_steps", str(max(1, min(200, steps))), "--init_from", str(init_pipeline(variant)),
            *COMMON, *flags]


START = "start-ncml"  # a copy of the NCML starting point, scored like the variants: the continuation's step 0


def train_all(variants: list[str], out: Path, steps: int, eval_steps: int, jobs: int) -> None:
    """Train (or resume) every variant, ``jobs`` at a time, one torch thread each; logs in ``out/<variant>.log``."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / START).is_dir():  # kept, because --ship replaces the bundled models it is copied from
        shutil.copytree(init_pipeline("uniform-T0.1"), out / START)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def run(variant: str) -> None:
        if (out / variant / "model_index.json").is_file():
            return  # finished earlier
        with open(out / f"{variant}.log", "a") as log:
            subprocess.run(train_command(variant, out, steps, eval_steps), env=env, stdout=log,
                           stderr=subprocess.STDOUT, check=True)

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(run, variants))


# ---------------------------------------------------------------------------------------------------------------
# evaluation on the validation digits
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Refinement:
    """One refinement setting of the two-part sampler (the AR draw at ``t_start`` is shared by all of them)."""

    steps: int
    correct_steps: int = 1
    spacing: str = "uniform"
    denoise: bool | str = True

    @property
    def name(self) -> str:
        return (f"{self.steps} steps{' + corrector' if self.correct_steps else ''}, {self.spacing} grid"
                f"{', Tweedie last step' if self.denoise == 'tweedie' else ''}")


T_STARTS = (0.003, 0.01)  # where the AR draw starts (every variant): the unrefined draw is scored at both
REFINE_T_STARTS = (0.01,)  # where it is also refined (the 2-core budget: a refinement costs 10 score evaluations)
REFINEMENTS = (Refinement(5),)  # every variant, at REFINE_T_STARTS
WINNER_T_STARTS = REFINE_T_STARTS
WINNER_REFINEMENTS = (Refinement(5, spacing="log"),
                      Refinement(1, correct_steps=0, denoise="tweedie"))  # the last: one Tweedie step, nothing else


class Evaluator:
    """Scores one trained variant on the validation digits; every draw is seeded, so reruns reproduce it."""

    def __init__(self, reference: np.ndarray, real: np.ndarray, num_samples: int, batch_size: int, seed: int,
                 num_likelihood: int):
        self.reference, self.real = reference, real  # validation digits (FD reference), other real digits
        self.reference_features = classifier_features(reference)
        self.n, self.bs, self.seed, self.num_likelihood = num_samples, batch_size, seed, num_likelihood

    def fd(self, images: np.ndarray) -> dict:
        fd, sd = frechet_distance_bootstrap(classifier_features(images), self.reference_features, seed=self.seed)
        return {"fd": fd, "fd_std": sd, "n": len(images)}

    def draw(self, backbone, t: float) -> torch.Tensor:
        """``n`` AR draws of ``x_t`` (model space, float), in seeded batches (batch b: seed·1,000,003 + b)."""
        out = []
        for b in tqdm(range(0, self.n, self.bs), desc=f"AR draws t={t:g}", unit="batch", leave=False):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + b)
            out.append(backbone.sample(min(self.bs, self.n - b), t, generator=g, progress=False))
        return torch.cat(out)

    def refine(self, backbone, scheduler, noisy: torch.Tensor, t_start: float, r: Refinement) -> tuple[np.ndarray, float]:
        out, start = [], time.perf_counter()
        for b in tqdm(range(0, len(noisy), self.bs), desc=f"refine t={t_start:g} {r.name}", unit="batch", leave=False):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + b + 7)
            with torch.no_grad():
                x = refine(backbone, scheduler, noisy[b:b + self.bs], t_start=t_start, num_inference_steps=r.steps,
                           correct_steps=r.correct_steps, spacing=r.spacing, denoise=r.denoise, generator=g).sample
            out.append(to_uint8(x))
        return np.concatenate(out), (time.perf_counter() - start) / len(noisy)

    def floor(self, scheduler, t: float) -> dict:
        """Real (non-validation) digits noised to ``t`` and quantised: the best an AR draw at ``t`` can score."""
        x0 = to_model_space(self.real[: self.n])
        g = torch.Generator().manual_seed(self.seed)
        return self.fd(to_uint8(scheduler.add_noise(x0, torch.randn(x0.shape, generator=g, dtype=x0.dtype), t)))

    def likelihoods(self, backbone, t_starts) -> dict:
        """Validation bits/dim at t = 0 and the sanity test's Δlog p (π = 1) at t = 0 and each ``t_start``."""
        rob = noise_robustness(backbone, self.reference[: self.num_likelihood], pis=(0.0, 1.0), ts=(0.0, *t_starts),
                               batch_size=100, generator=torch.Generator().manual_seed(self.seed), progress=False)
        return {"bpd_t0": bits_per_dim(backbone, self.reference, 0.0, batch_size=100, progress=False).mean,
                "delta_logp_pi1": {f"{t:g}": float(rob.delta[i, 1]) for i, t in enumerate(rob.ts)}}

    def plain_ar(self, backbone, grids: Path | None) -> dict:
        start = time.perf_counter()
        plain = to_uint8(self.draw(backbone, 0.0))
        if grids is not None:
            make_grid(plain[:64], nrow=8, scale=2).save(grids / "plain_ar.png")
        return {**self.fd(plain), "seconds_per_image": (time.perf_counter() - start) / self.n}

    def two_part(self, pipe: NCMLPipeline, t: float, refinements, grids: Path | None) -> dict:
        """The unrefined AR draw at ``t``, its floor, and each refinement of that same draw."""
        start = time.perf_counter()
        noisy = self.draw(pipe.backbone, t)
        entry = {"floor": self.floor(pipe.scheduler, t), "unrefined": self.fd(to_uint8(noisy)),
                 "ar_seconds_per_image": (time.perf_counter() - start) / self.n, "refined": {}}
        if grids is not None:
            make_grid(to_uint8(noisy[:64]), nrow=8, scale=2).save(grids / f"unrefined_t{t:g}.png")
        for r in refinements:
            images, sec = self.refine(pipe.backbone, pipe.scheduler, noisy, t, r)
            entry["refined"][r.name] = {**self.fd(images), **asdict(r), "seconds_per_image": sec,
                                        "score_evaluations": r.steps * (1 + r.correct_steps)}
            if grids is not None:
                slug = f"{r.steps}{'pc' if r.correct_steps else ''}_{r.spacing}{'_tweedie' if r.denoise == 'tweedie' else ''}"
                make_grid(images[:64], nrow=8, scale=2).save(grids / f"two_part_t{t:g}_{slug}.png")
        return entry

    def __call__(self, pipe: NCMLPipeline, *, mle: bool, refinements, grids: Path | None = None) -> dict:
        t_starts = () if mle else tuple(t for t in T_STARTS if t <= pipe.scheduler.t_max)
        res = {**self.likelihoods(pipe.backbone, t_starts), "plain_ar": self.plain_ar(pipe.backbone, grids)}
        res["two_part"] = {f"{t:g}": self.two_part(pipe, t, refinements if t in REFINE_T_STARTS else (), grids)
                           for t in t_starts}
        return res


def best_two_part(res: dict) -> tuple[str, str, dict] | None:
    """(t_start, refinement name, entry) with the lowest validation Fréchet distance at the refined t_starts (the
    same for every variant), or None (MLE)."""
    found = [(t, name, e) for t, tp in res.get("two_part", {}).items() for name, e in tp["refined"].items()
             if float(t) in REFINE_T_STARTS]
    return min(found, key=lambda x: x[2]["fd"]) if found else None


def evaluate_all(variants: list[str], out: Path, args, *, sweep: bool = True) -> dict:
    """Evaluate each trained variant (memoised in ``out/<variant>/ablation.json``), then (``sweep``) pick the winner
    and sweep its sampler settings (memoised in ``out/<winner>/ablation_sweep.json``)."""
    reference, _ = load_dataset("mnist5k", "validation")
    real, _ = load_dataset("mnist5k", "train", exclude_validation=True)
    real = real[np.random.default_rng(args.seed).permutation(len(real))]
    ev = Evaluator(reference, real, args.num_samples, args.batch_size, args.seed, args.num_likelihood)
    results = {}
    for variant in variants:
        path = out / variant / "ablation.json"
        if path.is_file():
            results[variant] = json.loads(path.read_text())
            continue
        pipe = NCMLPipeline.from_pretrained(out / variant)
        grids = out / variant / "grids"
        grids.mkdir(exist_ok=True)
        results[variant] = ev(pipe, mle=variant == "mle", grids=grids,
                              refinements=REFINEMENTS if not args.quick else (Refinement(2),))
        path.write_text(json.dumps(results[variant], indent=1))
    ncml_variants = [v for v in variants if v != "mle"]
    if not ncml_variants or not sweep:
        return results
    start = out / START / "ablation.json"
    if (out / START).is_dir() and not start.is_file():
        start.write_text(json.dumps(ev(NCMLPipeline.from_pretrained(out / START), mle=False, grids=None,
                                       refinements=REFINEMENTS if not args.quick else (Refinement(2),)), indent=1))
    if start.is_file():
        results["_start"] = json.loads(start.read_text())
    winner = min(ncml_variants, key=lambda v: best_two_part(results[v])[2]["fd"])
    path = out / winner / "ablation_sweep.json"
    if not path.is_file():  # more t_starts and refinement settings for the winner only
        pipe = NCMLPipeline.from_pretrained(out / winner)
        done = results[winner]["two_part"]
        sweep = {}
        for t in (t for t in WINNER_T_STARTS if t <= pipe.scheduler.t_max):
            todo = [r for r in (REFINEMENTS + WINNER_REFINEMENTS if not args.quick else (Refinement(2, spacing="log"),))
                    if r.name not in done.get(f"{t:g}", {}).get("refined", {})]
            sweep[f"{t:g}"] = ev.two_part(pipe, t, todo, out / winner / "grids")
            sweep[f"{t:g}"]["refined"].update(done.get(f"{t:g}", {}).get("refined", {}))
        sweep["delta_logp_pi1"] = ev.likelihoods(pipe.backbone, [t for t in WINNER_T_STARTS
                                                                 if f"{t:g}" not in done])["delta_logp_pi1"]
        path.write_text(json.dumps(sweep, indent=1))
    results["_winner"] = winner
    results["_sweep"] = json.loads(path.read_text())
    return results


# ---------------------------------------------------------------------------------------------------------------
# the report (docs/results/ablation.json + a figure) and shipping the winner as the bundled models
# ---------------------------------------------------------------------------------------------------------------
def recommended(results: dict) -> tuple[SamplingConfig, dict]:
    """The winner's lowest-FD setting on the validation digits (plain AR included) and its figures."""
    winner = results[results["_winner"]]
    best = (SamplingConfig(t_start=0.0), winner["plain_ar"])
    for t, entry in results["_sweep"].items():
        if t == "delta_logp_pi1":
            continue
        for e in entry["refined"].values():
            if e["fd"] < best[1]["fd"]:
                best = (SamplingConfig(t_start=float(t), num_inference_steps=e["steps"], correct_steps=e["correct_steps"],
                                       spacing=e["spacing"], denoise=e["denoise"]), e)
    return best


def write_report(results: dict, args) -> Path:
    """``docs/results/ablation.json`` (every number) and ``ablation.png`` (Fréchet distance per variant)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig_dir = args.report_dir
    fig_dir.mkdir(parents=True, exist_ok=True)
    setting, _ = recommended(results)
    report = {"steps": args.steps, "variants": {v: {"flags": VARIANTS[v][0], "what": VARIANTS[v][1],
                                                     "init": Path(init_pipeline(v)).name, **results[v]}
                                                 for v in results if not v.startswith("_")},
              "common_flags": COMMON, "winner": results["_winner"], "sweep": results["_sweep"],
              "start": results.get("_start"),
              "recommended": config_to_dict(setting), "num_samples": args.num_samples,
              "num_likelihood": args.num_likelihood, "seed": args.seed}
    (fig_dir / "ablation.json").write_text(json.dumps(report, indent=1))
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    names = [v for v in report["variants"]]
    kinds = [("plain AR (t = 0)", lambda r: r["plain_ar"])]
    for t in T_STARTS:
        kinds += [(f"AR draw at t = {t:g}, unrefined", lambda r, t=t: r["two_part"].get(f"{t:g}", {}).get("unrefined")),
                  (f"two-part from t = {t:g}", lambda r, t=t: best_refined(r, t))]
    width = 0.8 / len(kinds)
    for k, (label, get) in enumerate(kinds):
        xs, ys, es = [], [], []
        for i, v in enumerate(names):
            e = get(report["variants"][v])
            if e:
                xs.append(i + (k - (len(kinds) - 1) / 2) * width)
                ys.append(e["fd"])
                es.append(e["fd_std"])
        ax.bar(xs, ys, width, yerr=es, label=label, capsize=2)
    floors = {t: report["variants"][results["_winner"]]["two_part"][f"{t:g}"]["floor"]["fd"] for t in T_STARTS
              if f"{t:g}" in report["variants"][results["_winner"]]["two_part"]}
    for t, f in floors.items():
        ax.axhline(f, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(f"Fréchet distance ({args.num_samples} samples)")
    ax.set_title(f"{args.steps} extra steps per variant; validation digits; dotted: real digits noised to t_start")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    path = fig_dir / "ablation.png"
    fig.savefig(path, dpi=110)
    return path


def best_refined(res: dict, t: float) -> dict | None:
    refined = res["two_part"].get(f"{t:g}", {}).get("refined", {})
    return min(refined.values(), key=lambda e: e["fd"]) if refined else None


def ship(results: dict, args) -> None:
    """The winner and the MLE variant become the bundled pipelines, with their recommended sampler settings."""
    setting, figures = recommended(results)
    for name, variant, sampling in (("ncpn-mnist5k-vp", results["_winner"], setting),
                                    ("ncpn-mnist5k-mle", "mle", SamplingConfig(t_start=0.0))):
        pipe = NCMLPipeline.from_pretrained(args.out / variant)
        pipe.sampling_config = sampling
        dest = Path(ncml.pretrained(name))
        for old in ("backbone", "scheduler"):
            shutil.rmtree(dest / old, ignore_errors=True)
        (dest / "README.md").unlink(missing_ok=True)
        pipe.save_pretrained(dest)
        (dest / "README.md").write_text(model_card(name, variant, pipe, results, figures if variant != "mle" else None,
                                                         args.steps))
        shutil.copy(args.out / variant / "logs" / "metrics.jsonl", ROOT / "docs" / "training" /
                    f"{name}.finetune.metrics.jsonl")
    print(f"shipped {results['_winner']} as ncpn-mnist5k-vp with {setting}, and mle as ncpn-mnist5k-mle")


def model_card(name: str, variant: str, pipe: NCMLPipeline, results: dict, best: dict | None, steps: int) -> str:
    """The bundled model's card: how it was trained, and its validation figures."""
    r = results[variant]
    flags = " ".join(VARIANTS[variant][0])
    mle = variant == "mle"
    usage = ("images = pipe(batch_size=16).images  # the recommended sampler settings (sampling_config.json)")
    lines = [
        f"# NCPNModel trained with {'MLE' if mle else 'NCML'} on mnist5k", "",
        "An autoregressive image model (NCPN: PixelCNN++ with causal axial attention and a log-t Fourier noise "
        f"embedding, {pipe.backbone.num_parameters():,} parameters) trained by "
        f"{'plain maximum likelihood (`clean_fraction=1`), the baseline of ncpn-mnist5k-vp' if mle else 'noise conditional maximum likelihood'} "
        "with the ncml library's `examples/train_ncml.py`.", "",
        "```python", "import ncml", "from ncml import NCMLPipeline", "",
        f"pipe = NCMLPipeline.from_pretrained(ncml.pretrained(\"{name}\"))", usage, "```", "",
        "## How it was trained", "",
        f"1. 6,000 steps of batch 32 on the 4,500 MNIST-5k training digits ({'clean_fraction=1' if mle else 'VP SDE, T = 0.1, t = 0 for half of each batch, else t ~ U(0, 0.1]'}; "
        "learning rate 5e-4, EMA 0.995, seed 0), in legs joined by exact resume "
        "(`docs/training/" + name + ".metrics.jsonl`).",
        f"2. {steps} more steps from those EMA weights with "
        f"`examples/ablate_noise_levels.py` (variant `{variant}`: `{flags}`), on the training digits without the 500 "
        "validation digits, learning rate 2e-4 with 50 warm-up steps, EMA 0.995, seed 0 "
        f"(`docs/training/{name}.finetune.metrics.jsonl`). "
        + ("" if mle else "This recipe won the ablation of the noise-level distribution in the ncml repository's "
           "docs/RESULTS.md (section 7): it gave the lowest two-part Fréchet distance on the validation digits, "
           "though by less than the bootstrap std; what the continuation did for every recipe alike is larger "
           "(its AR draw at t = 0.01 went from about twice the plain-AR distance to within a few per cent)."), "",
        "## Validation figures (500 MNIST-5k validation digits, carved from the training split)", "",
        "| metric | value |", "| --- | --- |",
        f"| bits/dim at t = 0 | {r['bpd_t0']:.4f} |",
        f"| Δlog p (π = 1) at t = 0 | {r['delta_logp_pi1']['0']:.4f} |",
        f"| Fréchet distance, plain AR ({r['plain_ar']['n']} samples) | {r['plain_ar']['fd']:.2f} ± {r['plain_ar']['fd_std']:.2f} |",
    ]
    if best is not None:
        lines.append(f"| Fréchet distance, recommended sampler | {best['fd']:.2f} ± {best['fd_std']:.2f} |")
    lines += ["", "Test-set figures (reported once) are in docs/RESULTS.md of the ncml repository "
              "(`make results`).", ""]
    front = ["---", "datasets:", "- mnist5k", "library_name: ncml", "license: apache-2.0", "tags:", "- ncml",
             "- autoregressive", "- noise-conditional", "- NCPNModel", "---", ""]
    return "\n".join(front + lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "ablation", help="runs and results")
    p.add_argument("--steps", type=int, default=600, help="extra training steps per variant")
    p.add_argument("--jobs", type=int, default=2, help="variants trained at once (one thread each)")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--stage", choices=("train", "evaluate", "report", "all"), default="all",
                   help="train; evaluate (the given variants, no winner); report (evaluate, pick the winner, sweep "
                        "its sampler settings, write the report); all = train + report")
    p.add_argument("--report_dir", type=Path, default=ROOT / "docs" / "results",
                   help="where ablation.json and ablation.png go (read by make_results.py)")
    p.add_argument("--ship", action="store_true",
                   help="replace the bundled ncpn-mnist5k-vp / -mle pipelines by the winner and the MLE variant")
    p.add_argument("--num_samples", type=int, default=512, help="samples per sampler (Fréchet distance)")
    p.add_argument("--num_likelihood", type=int, default=200, help="validation digits for Δlog p")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a few steps and samples: an end-to-end check")
    args = p.parse_args(argv)
    if args.quick:
        args.steps = 2
        args.num_samples, args.num_likelihood = 64, 16  # the Fréchet distance needs >= 64 samples (features)
    if args.stage in ("train", "all"):
        train_all(args.variants, args.out, args.steps, eval_steps=0 if args.quick else 200, jobs=args.jobs)
    if args.stage == "evaluate":
        evaluate_all(args.variants, args.out, args, sweep=False)
    if args.stage in ("report", "all"):
        results = evaluate_all(args.variants, args.out, args)
        print(f"wrote {write_report(results, args)}; winner: {results['_winner']}, recommended sampler: "
              f"{recommended(results)[0]}")
        if args.ship:
            ship(results, args)


if __name__ == "__main__":
    main()
