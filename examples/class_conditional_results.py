"""Class-conditional NCML on MNIST-5k: label agreement of conditional samples (plain AR, two-part, guided), and the
exact Bayes classifier against the shipped discriminative one, on clean and on noisy test digits.

    python examples/class_conditional_results.py                 # validate (choose w), then test (25 min alone on 2 cores)
    python examples/class_conditional_results.py --quick --out /tmp/cc   # a smoke run

Stages (``--stage``):

* ``validate``: the guidance scale ``w`` is chosen on the 500 validation digits (carved from the training split;
  the bundled conditional model was trained without them) from plain-AR samples at each candidate ``w``: the
  smallest ``w`` whose samples the shipped classifier labels as requested at least ``--target-agreement`` of the
  time (guidance trades diversity for fidelity, so the smallest sufficient one), else the most faithful. Also the
  noise std of the noise-smoothed Bayes classifier (``ncml.evaluation.smoothed_class_posterior``): the smallest of
  the most accurate on ``--num-val-digits`` validation digits.
* ``test`` (once, with the chosen ``w``): ``--num-samples`` samples (equal numbers per class) for plain AR and the
  pipeline's two-part sampler, unguided and guided: the share the classifier labels as requested and the Fréchet
  distance to the test digits (± bootstrap std); the Bayes classifier ``argmax_y p_θ,t(x | y)`` and the
  discriminative classifier on the test digits with Gaussian noise of std σ grey levels added (the same draws for
  both; the Bayes classifier evaluates at the ``t`` where ``s(t)/m(t)`` matches σ, ``ncml.evaluation.matched_time``),
  and the smoothed Bayes classifier on the same digits (a noisy digit's noise topped up to the chosen std).

* ``ship --release DIR``: copies a finished training run's release pipeline (``DIR``, the ``--output_dir`` of
  ``examples/train_ncml.py`` with ``examples/configs/ncpn_mnist_vp_cond.json``) into the package as
  ``ncpn-mnist5k-vp-cond`` with its training log and the trainer's record of the run, the sampler
  settings of the unconditional bundled model (chosen there on validation digits; not re-tuned) and a model card
  (with the validation figures once the validate stage has run). The card records every run of the chain behind
  the weights: ``--pretrain DIR`` is a run that ``--release`` continued, and ``--continues-bundled`` keeps the runs
  the bundled card already records when the chain started from the bundled weights.

Writes ``class_conditional.json`` and two PNGs (a sample grid with one row per class; accuracy against σ) into
``--out`` (default: docs/results), which ``examples/make_results.py`` turns into a section of docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

import ncml
from ncml import NCMLClassConditionalPipeline
from ncml.data import load_dataset, to_model_space
from ncml.evaluation import (class_posterior, classifier_features, classifier_metrics, frechet_distance_bootstrap,
                             load_digit_classifier, make_grid, noisy_marginal_draw, smoothed_class_posterior)
from ncml.evaluation.reporting import _figure, _save

ROOT = Path(__file__).resolve().parents[1]
NOISE_STDS = (0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 40.0)  # grey levels of 255 (the VP model of T = 0.1 sees up to ~43)
GUIDANCE_SCALES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
SMOOTHING_STDS = (0.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 40.0)  # grey levels; the smoothed classifier's candidates


def bootstrap_mean(values: np.ndarray, num_resamples: int = 200, seed: int = 0) -> tuple[float, float]:
    """The mean of 0/1 ``values`` and its bootstrap std."""
    rng = np.random.default_rng(seed)
    boots = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(num_resamples)]
    return float(values.mean()), float(np.std(boots))


class Experiment:
    def __init__(self, args):
        self.args = args
        self.pipe = NCMLClassConditionalPipeline.from_pretrained(args.pipeline)
        self.pipe.set_progress_bar_config(disable=True)
        self.backbone = self.pipe.backbone
        self.classifier = load_digit_classifier()
        self.num_classes = self.backbone.config.num_classes
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def labels(self, n: int) -> np.ndarray:
        """``n`` labels, equal numbers per class (class-major)."""
        return np.repeat(np.arange(self.num_classes), n // self.num_classes)

    def sample(self, labels: np.ndarray, *, t_start: float | None, guidance_scale: float, seed: int) -> dict:
        """Samples for ``labels`` (uint8 ``(N, 28, 28, 1)``), seconds and network evaluations."""
        images, nfe, start = [], 0, time.perf_counter()  # nfe: per batched call
        bs = self.args.batch_size
        for first in range(0, len(labels), bs):
            y = torch.from_numpy(labels[first:first + bs])
            gen = [torch.Generator().manual_seed(seed * 100_000 + first + i) for i in range(len(y))]
            out = self.pipe(class_labels=y, guidance_scale=guidance_scale, t_start=t_start, generator=gen,
                            output_type="np")
            images.append(out.images)
            nfe = out.nfe  # network evaluations of one batched call: what each image costs
        return {"images": np.concatenate(images), "seconds": time.perf_counter() - start, "nfe": nfe}

    def predict(self, images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.classifier(to_model_space(images)).argmax(1).numpy()

    def score(self, run: dict, labels: np.ndarray, reference: np.ndarray) -> dict:
        agree, agree_std = bootstrap_mean((self.predict(run["images"]) == labels).astype(float))
        fd, fd_std = frechet_distance_bootstrap(classifier_features(run["images"], classifier=self.classifier),
                                                classifier_features(reference, classifier=self.classifier))
        return {"agreement": agree, "agreement_std": agree_std, "fd": fd, "fd_std": fd_std,
                "seconds_per_image": run["seconds"] / len(labels), "nfe_per_image": run["nfe"]}

    # ---- stages ----------------------------------------------------------------------------------
    def validate(self) -> dict:
        a = self.args
        val, val_y = load_dataset("mnist5k", "validation")
        labels = self.labels(a.num_val_samples)
        sweep = {}
        for w in GUIDANCE_SCALES:
            run = self.sample(labels, t_start=0.0, guidance_scale=w, seed=1)
            sweep[f"{w:g}"] = self.score(run, labels, val)
            print(f"validation, plain AR, w = {w:g}: {sweep[f'{w:g}']}")
        guided = [w for w in GUIDANCE_SCALES if w > 0]
        enough = [w for w in guided if sweep[f"{w:g}"]["agreement"] >= a.target_agreement]
        chosen = min(enough) if enough else max(guided, key=lambda w: sweep[f"{w:g}"]["agreement"])
        # the noise-smoothed Bayes classifier of clean digits: σ chosen on validation digits
        idx = np.sort(np.random.default_rng(0).choice(len(val), size=min(a.num_val_digits, len(val)), replace=False))
        smoothing = {}
        for std in SMOOTHING_STDS:
            acc = self.smoothed_accuracy(val[idx], val_y[idx], std, seed=4)
            smoothing[f"{std:g}"] = {"accuracy": acc[0], "accuracy_std": acc[1]}
            print(f"validation, Bayes classifier smoothed with σ = {std:g}: {acc[0]:.4f} ± {acc[1]:.4f}")
        best = max(SMOOTHING_STDS, key=lambda std: smoothing[f"{std:g}"]["accuracy"])
        return {"num_samples": len(labels), "target_agreement": a.target_agreement, "sweep": sweep,
                "chosen_guidance_scale": chosen, "num_digits": len(idx), "num_draws": a.num_draws,
                "smoothing_sweep": smoothing, "chosen_smoothing_std": best}

    def smoothed_accuracy(self, images, labels: np.ndarray, std: float, seed: int,
                          input_std: float = 0.0) -> tuple[float, float]:
        """Accuracy (± bootstrap std) of ``smoothed_class_posterior`` with noise topped up to ``std`` grey levels;
        ``images``: clean uint8 digits, or model-space ``x_0 + σ·ε`` with ``σ = input_std`` grey levels."""
        log_post = smoothed_class_posterior(self.backbone, self.pipe.scheduler, images, 2 * std / 255,
                                            num_draws=self.args.num_draws, input_noise_std=2 * input_std / 255,
                                            generator=torch.Generator().manual_seed(seed),
                                            batch_size=self.args.batch_size * 2, progress=False)
        return bootstrap_mean((log_post.argmax(1).numpy() == labels).astype(float))

    def test(self, w: float, smoothing_std: float) -> dict:
        a = self.args
        test_x, test_y = load_dataset("mnist5k", "test")
        labels = self.labels(a.num_samples)
        settings = {"plain AR": (0.0, 0.0), "two-part": (None, 0.0), f"plain AR, guided (w = {w:g})": (0.0, w),
                    f"two-part, guided (w = {w:g})": (None, w)}
        samplers, grids = {}, {}
        for name, (t_start, scale) in settings.items():
            run = self.sample(labels, t_start=t_start, guidance_scale=scale, seed=2)
            samplers[name] = self.score(run, labels, test_x)
            print(f"test, {name}: {samplers[name]}")
            per_class = a.num_samples // self.num_classes
            grids[name] = run["images"].reshape(self.num_classes, per_class, 28, 28, 1)[:, :a.grid_columns]
        for name in ("plain AR", f"plain AR, guided (w = {w:g})"):
            grid = grids[name].reshape(-1, 28, 28, 1)
            path = self.out / f"class_conditional_{'guided' if 'guided' in name else 'plain'}.png"
            make_grid(grid, nrow=a.grid_columns, scale=2).save(path)
        # classifiers on clean and noisy test digits (the same noisy draws for both)
        n = min(a.num_test, len(test_x))
        idx = np.sort(np.random.default_rng(0).choice(len(test_x), size=n, replace=False))
        y = test_y[idx]
        gen = torch.Generator().manual_seed(3)
        scheduler = self.pipe.scheduler
        curve = []
        for i, std in enumerate(NOISE_STDS):
            x_t, t = noisy_marginal_draw(scheduler, test_x[idx], 2 * std / 255, generator=gen)
            noisy = x_t / scheduler.marginal_mean_coeff(torch.tensor(t, dtype=torch.float64))  # x_0 + σ·ε
            start = time.perf_counter()
            bayes_input = test_x[idx] if std == 0 else x_t.float()
            log_post = class_posterior(self.backbone, bayes_input, t, batch_size=a.batch_size * 2, progress=False)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                disc = self.classifier(noisy.float()).argmax(1).numpy()
            bayes_acc, bayes_std = bootstrap_mean((log_post.argmax(1).numpy() == y).astype(float))
            disc_acc, disc_std = bootstrap_mean((disc == y).astype(float))
            # the smoothed Bayes classifier: the noisy digit's noise topped up to the chosen std (nothing to add
            # where σ already reaches it: then it is the Bayes classifier above)
            smooth_acc, smooth_std, smooth_seconds = bayes_acc, bayes_std, seconds
            if smoothing_std > std:
                start = time.perf_counter()
                smooth_acc, smooth_std = self.smoothed_accuracy(test_x[idx] if std == 0 else noisy, y, smoothing_std,
                                                                seed=5 + i, input_std=std)
                smooth_seconds = time.perf_counter() - start
            curve.append({"noise_std": std, "t": t, "bayes": bayes_acc, "bayes_std": bayes_std,
                          "smoothed_bayes": smooth_acc, "smoothed_bayes_std": smooth_std,
                          "discriminative": disc_acc, "discriminative_std": disc_std,
                          "bayes_seconds_per_image": seconds / n, "smoothed_seconds_per_image": smooth_seconds / n})
            print(f"noise std {std:g} (t = {t:.4g}): Bayes {bayes_acc:.4f} ± {bayes_std:.4f}, smoothed "
                  f"{smooth_acc:.4f} ± {smooth_std:.4f}, discriminative {disc_acc:.4f} ± {disc_std:.4f}")
        fig, (ax,) = _figure(1, width=5.0)
        stds = np.array([c["noise_std"] for c in curve])
        xs = np.where(stds > 0, stds, 1.0)  # σ = 0 drawn at 1 on the log axis, labelled
        for key, label in (("bayes", "Bayes classifier, p_θ,t(x | y) (NCML)"),
                           ("smoothed_bayes", f"Bayes classifier, noise topped up to σ = {smoothing_std:g}"),
                           ("discriminative", "discriminative classifier (shipped)")):
            ax.errorbar(xs, [c[key] for c in curve], yerr=[c[key + "_std"] for c in curve], marker="o",
                        label=label, capsize=3)
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{s:g}" for s in stds])
        ax.set_xlabel("std of added Gaussian noise (grey levels of 255)")
        ax.set_ylabel(f"test accuracy ({n} digits)")
        ax.legend(fontsize="small")
        _save(fig, self.out / "class_conditional_noise.png")
        clean = curve[0]  # σ = 0: the smoothed classifier of the clean test digits
        smoothed = {"noise_std": smoothing_std, "num_draws": a.num_draws, "accuracy": clean["smoothed_bayes"],
                    "accuracy_std": clean["smoothed_bayes_std"],
                    "seconds_per_image": clean["smoothed_seconds_per_image"]}
        return {"num_samples": len(labels), "num_test": n, "samplers": samplers, "noise_curve": curve,
                "smoothed_bayes": smoothed,
                "sampling_config": dataclasses.asdict(self.pipe.sampling_config)}


BUNDLED = ROOT / "ncml" / "bundled-pipelines"
NAME = "ncpn-mnist5k-vp-cond"


def training_section(release: Path) -> list[str]:
    """The "## Training" section of the model card that ``examples/train_ncml.py`` wrote, without its heading."""
    text = (release / "README.md").read_text().split("## Training", 1)
    if len(text) < 2:
        raise SystemExit(f"--release {release}: its README.md has no '## Training' section")
    return text[1].split("\n## ", 1)[0].strip().splitlines()


def log_path(run: int) -> Path:
    """Where the training log of the card's run ``run`` (1-based) is kept."""
    suffix = {1: "", 2: ".finetune"}.get(run, f".run{run}")
    return ROOT / "docs" / "training" / f"{NAME}{suffix}.metrics.jsonl"


def recorded_runs(card: Path) -> list[list[str]]:
    """The trainer's records of the runs that the bundled model's card lists (one list of lines per run, in order),
    for a release that continued the bundled model."""
    text = card.read_text() if card.is_file() else ""
    how = text.split("## How it was trained", 1)[1].split("\n## ", 1)[0] if "## How it was trained" in text else ""
    blocks = re.split(r"^### Run \d+(?:: .*)?$", how, flags=re.M)[1:]
    runs = [[line for line in block.strip().splitlines() if line.startswith("- ")] for block in blocks]
    if not runs or not all(runs):
        raise SystemExit(f"--continues-bundled: {card} records no training runs to continue")
    return runs


def ship(release: Path, report: dict, pretrain: Path | None = None, continues_bundled: bool = False) -> None:
    """Copy the release pipeline in ``release`` into the package and write its card (see the module docstring).

    The card records every run of the chain that led to the weights, in order: with ``continues_bundled``, the runs
    the bundled model's card already records (the chain continued the bundled weights; their logs stay); then
    ``pretrain``, the run that ``release`` continued (``--init_from``), whose log and record the card also gets;
    then ``release``."""
    import shutil

    dest = BUNDLED / NAME
    if not (release / "model_index.json").is_file():
        raise SystemExit(f"--release {release}: not a pipeline folder (no model_index.json)")
    records = recorded_runs(dest / "README.md") if continues_bundled else []  # read before the card is rewritten
    dest.mkdir(parents=True, exist_ok=True)
    for part in ("backbone", "scheduler"):
        shutil.rmtree(dest / part, ignore_errors=True)
        shutil.copytree(release / part, dest / part)
    shutil.copy2(release / "model_index.json", dest / "model_index.json")
    save_id = json.loads((dest / "model_index.json").read_text()).get("_save_id")  # the folder's pieces share it
    sampling = json.loads((BUNDLED / "ncpn-mnist5k-vp" / "sampling_config.json").read_text())
    sampling = {**({"_save_id": save_id} if save_id else {}), **{k: v for k, v in sampling.items() if k[0] != "_"}}
    (dest / "sampling_config.json").write_text(json.dumps(sampling, indent=2) + "\n")
    for run in ([pretrain] if pretrain is not None else []) + [release]:
        shutil.copy2(run / "logs" / "metrics.jsonl", log_path(len(records) + 1))
        records.append(training_section(run))
    legs = [log_path(i) for i in range(1, len(records) + 1)]
    steps = []
    for log in legs:
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        steps.append(max(r["step"] for r in rows))
    final = [r for r in rows if r["step"] == steps[-1] and "eval/bpd_t=0" in r][-1]
    hybrid = [i for i, record in enumerate(records, 1) if re.search(r"classifier_weight=(?!0\.0\b)", "".join(record))]
    pipe = NCMLClassConditionalPipeline.from_pretrained(dest)
    params = pipe.backbone.num_parameters()
    lines = ["---", "datasets:", "- mnist5k", "library_name: ncml", "license: apache-2.0", "tags:", "- ncml",
             "- autoregressive", "- noise-conditional", "- class-conditional", "- NCPNModel", "---", "",
             "# Class-conditional NCPNModel trained with NCML on mnist5k", "",
             f"The NCPN architecture of the bundled `ncpn-mnist5k-vp` with a class embedding ({params:,} parameters; "
             "10 digits and a null class meaning \"no label\"), trained by NCML with label dropout, so one network "
             "gives p_θ,t(x | y) and p_θ,t(x), which classifier-free guidance combines and which give the exact "
             "Bayes classifier p(y | x).", "",
             "```python", "import ncml", "from ncml import NCMLClassConditionalPipeline", "",
             f"pipe = NCMLClassConditionalPipeline.from_pretrained(ncml.pretrained(\"{NAME}\"))",
             (f"images = pipe(class_labels=[0, 1, 2, 3], guidance_scale={w:g}).images  # w chosen on validation "
              "digits" if (w := report.get("validation", {}).get("chosen_guidance_scale")) is not None else
              "images = pipe(class_labels=[0, 1, 2, 3]).images  # unguided; guidance_scale=w > 0 for guidance"),
             "log_post = ncml.evaluation.class_posterior(pipe.backbone, uint8_digits)  # (N, 10) log p(y | x)",
             "```", "",
             "## How it was trained", "",
             f"{' + '.join(f'{n:,}' for n in steps)} steps with `examples/train_ncml.py --config "
             f"examples/configs/ncpn_mnist_vp_cond.json` (label dropout 0.1 for the null class), on the training "
             f"digits without the 500 validation digits"
             + (", from scratch, then each run continued from the previous run's EMA weights (`--init_from`)"
                if len(legs) > 1 else "")
             + (f"; run{'s' * (len(hybrid) > 1)} {', '.join(map(str, hybrid))} added the exact Bayes classifier's "
                "cross-entropy to the loss (`classifier_weight`, hybrid training)" if hybrid else "")
             + f" (`{'`, `'.join(f'docs/training/{log.name}' for log in legs)}`). The training script's own "
             "record of each run:", ""]
    for i, record in enumerate(records, 1):
        title = ("from scratch" if i == 1 else f"continued from run {i - 1}'s EMA weights") if len(records) > 1 else ""
        lines += [f"### Run {i}" + (f": {title}" if title else ""), "", *record, ""]
    lines += [f"Validation bits/dim at t = 0 given the true label (200 validation digits, EMA): "
              f"{final['eval/bpd_t=0']:.4f}"
              + (f"; its Bayes classifier at t = 0 labels {final['eval/bayes_accuracy_t=0']:.1%} of them correctly"
                 if "eval/bayes_accuracy_t=0" in final else "") + ".", "",
              "The sampler settings (`sampling_config.json`) are those chosen for the unconditional model on the "
              "validation digits, not re-tuned for this one.", ""]
    val = report.get("validation")
    if val:
        lines += ["## Validation figures (500 validation digits)", "",
                  f"Plain-AR samples ({val['num_samples']} per guidance scale) labelled as requested by the shipped "
                  "digit classifier, and their Fréchet distance to the validation digits:", "",
                  "| guidance scale w | label agreement | Fréchet distance |", "| --- | --- | --- |"]
        lines += [f"| {k} | {v['agreement']:.1%} ± {v['agreement_std']:.1%} | {v['fd']:.1f} ± {v['fd_std']:.1f} |"
                  for k, v in val["sweep"].items()]
        lines += ["", f"Chosen guidance scale: w = {val['chosen_guidance_scale']:g} (the smallest with agreement "
                  f"≥ {val['target_agreement']:.0%}, else the most faithful).", ""]
        if "smoothing_sweep" in val:
            lines += [f"Bayes classifier of clean digits smoothed with noise of std σ grey levels "
                      f"(`ncml.evaluation.smoothed_class_posterior`, {val['num_draws']} noisy copies per digit; "
                      f"{val['num_digits']} validation digits; σ = 0 is the t = 0 Bayes classifier):", "",
                      "| σ | accuracy |", "| --- | --- |"]
            lines += [f"| {k} | {v['accuracy']:.1%} ± {v['accuracy_std']:.1%} |"
                      for k, v in val["smoothing_sweep"].items()]
            lines += ["", f"Chosen: σ = {val['chosen_smoothing_std']:g} (the smallest of the most accurate).", ""]
    lines += ["Test-set figures (reported once) are in docs/RESULTS.md of the ncml repository, section 8.", ""]
    (dest / "README.md").write_text("\n".join(lines))
    print(f"shipped {release} as {dest}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", default=None, help="a class-conditional pipeline (default: the bundled "
                                                    "ncpn-mnist5k-vp-cond)")
    p.add_argument("--out", default=str(ROOT / "docs" / "results"), help="folder for the JSON and PNGs")
    p.add_argument("--stage", choices=("validate", "test", "all", "ship"), default="all")
    p.add_argument("--release", type=Path, default=None, help="--stage ship: the training run's output_dir")
    p.add_argument("--pretrain", type=Path, default=None,
                   help="--stage ship: the run that --release continued with --init_from (its output_dir)")
    p.add_argument("--continues-bundled", action="store_true",
                   help="--stage ship: --release (or --pretrain) continued the bundled model (--init_from its "
                        "folder); the card keeps the runs it records and adds the new ones")
    p.add_argument("--num-val-samples", type=int, default=250, help="plain-AR samples per w in validation")
    p.add_argument("--num-samples", type=int, default=500, help="samples per sampler in the test stage")
    p.add_argument("--num-test", type=int, default=500, help="test digits for the classifiers")
    p.add_argument("--num-val-digits", type=int, default=250,
                   help="validation digits for choosing the smoothed Bayes classifier's noise std")
    p.add_argument("--num-draws", type=int, default=4, help="noisy copies per digit of the smoothed Bayes classifier")
    p.add_argument("--target-agreement", type=float, default=0.97)
    p.add_argument("--grid-columns", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="smoke-test sizes")
    args = p.parse_args(argv)
    path = Path(args.out) / "class_conditional.json"
    if args.stage == "ship":
        if args.release is None:
            raise SystemExit("--stage ship needs --release DIR")
        ship(args.release, json.loads(path.read_text()) if path.is_file() else {}, args.pretrain,
             args.continues_bundled)
        return
    if args.pipeline is None:
        args.pipeline = str(ncml.pretrained(NAME))
    if args.quick:
        args.num_val_samples, args.num_samples, args.num_test, args.batch_size, args.grid_columns = 70, 70, 20, 35, 3
        args.num_val_digits, args.num_draws = 20, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    exp = Experiment(args)
    report = json.loads(path.read_text()) if path.is_file() and args.stage == "test" else {}
    start = time.perf_counter()
    if args.stage in ("validate", "all"):
        report = {"validation": exp.validate()}
    if args.stage in ("test", "all"):
        if "validation" not in report:
            raise SystemExit(f"{path}: no validation stage; run --stage validate first")
        if "chosen_smoothing_std" not in report["validation"]:
            raise SystemExit(f"{path}: its validation stage predates the smoothing sweep; run --stage validate")
        report["test"] = exp.test(report["validation"]["chosen_guidance_scale"],
                                  report["validation"]["chosen_smoothing_std"])
    report.update(pipeline=str(Path(args.pipeline).name),
                  classifier_test_accuracy=classifier_metrics()["test_accuracy"],
                  machine=f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s), torch "
                          f"{torch.__version__}", seconds=time.perf_counter() - start, quick=args.quick)
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
