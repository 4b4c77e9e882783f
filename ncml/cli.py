"""``ncml``: sample from an NCML pipeline and evaluate it from the command line.

    ncml sample      --num-images 16 --seed 0 --out samples.png   # the pipeline's recommended sampler settings
    ncml evaluate    --dataset mnist5k --num-images 200                  # bits/dim against t (clean, noised)
    ncml sanity-test --dataset mnist5k --num-images 200                  # LSB flips: NLL and Δlog p (Fig. 4)
    ncml ood         --dataset mnist5k --ood-dataset fashion-mnist       # AUROC and histograms
    ncml classify    --pipeline ncpn-mnist5k-vp-cond --noise-std 0 8 32  # exact Bayes classifier accuracy

Every command takes ``--pipeline NAME_OR_PATH`` (a bundled name, a pipeline folder or a Hub repo id; default:
the bundled model), prints a table and writes a PNG. Datasets are the bundled ``mnist5k`` / ``digits``, the
out-of-distribution sets of ``ncml.data.OOD_DATASETS`` (``--ood-dataset``), ``noise``, or a folder of PNG/JPEG
images; nothing is downloaded except a Hub repo named with ``--pipeline``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# numpy, torch and the rest of ncml are imported inside the commands, so that ``ncml --help`` and usage errors
# answer at once instead of after torch's import (seconds, tens of seconds on a busy machine)

DEFAULT_PIPELINE = "ncpn-mnist5k-vp"
PIPELINE_CLASSES = ("NCMLPipeline", "NCMLClassConditionalPipeline")


class CLIError(Exception):
    """A user-facing error: printed as ``ncml: error: …`` with exit status 2."""


# ---- loading ------------------------------------------------------------------------------------------
def load_pipeline(spec: str | None, device: str):
    """The pipeline named by ``--pipeline`` (folder or Hub repo id), or the bundled default, on ``device``."""
    import ncml
    from ncml import bundled, hub_utils

    if spec is None:
        try:
            spec = str(ncml.pretrained(DEFAULT_PIPELINE))
        except (ImportError, AttributeError, FileNotFoundError, ValueError, KeyError) as e:
            raise CLIError(f"the bundled pipeline {DEFAULT_PIPELINE!r} is not available in this installation "
                           f"({type(e).__name__}: {e}); pass --pipeline PATH_OR_REPO_ID") from e
    elif spec in bundled.available() and not Path(spec).exists():  # a bundled name, e.g. ncpn-mnist5k-mle
        spec = str(bundled.pretrained(spec))
    try:
        folder = hub_utils.resolve_folder(spec)
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(f"{folder} is not a pipeline folder (it has no model_index.json)")
        index = hub_utils.read_json(folder / "model_index.json", argname="model_index.json")
        name = index.get("_class_name", "NCMLPipeline")
        if name not in PIPELINE_CLASSES:
            raise ValueError(f"model_index.json names {name!r}; the CLI runs {', '.join(PIPELINE_CLASSES)}")
        cls = getattr(ncml, name)  # one of a fixed list of ncml's own classes
        pipe = cls.from_pretrained(folder)
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise CLIError(f"--pipeline {spec}: {e}") from e
    return pipe.to(device)


def _looks_like_a_path(spec: str) -> bool:
    return os.sep in spec or (os.altsep is not None and os.altsep in spec) or spec.startswith(("~", ".")) or \
        Path(spec).exists()


def load_images(spec: str, *, split: str, num_images: int | None, seed: int, backbone, resize: bool,
                argname: str = "--dataset") -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``(N, H, W, C)`` images and int64 labels from a bundled dataset, an OOD set, a folder, or ``"noise"``.

    A seeded random subset of ``num_images`` (the bundled splits are ordered by class). With ``resize`` images
    of another size are resized (PIL bilinear) and grey images repeated to 3 channels to fit the backbone.
    The out-of-distribution sets (``ncml.data.OOD_DATASETS``) always come at the backbone's size.
    """
    import numpy as np

    from ncml.data import DATASETS, OOD_DATASETS, ImageFolder, load_dataset, load_ood_dataset, resize_images

    c, s = backbone.config.in_channels, backbone.config.sample_size
    rng = np.random.default_rng(seed)
    if spec == "noise":
        n = num_images or 100
        images = rng.integers(0, 2**backbone.config.num_bits, size=(n, s, s, c), dtype=np.uint8)
        return images, np.zeros(n, dtype=np.int64)
    if spec in OOD_DATASETS:
        try:
            images = load_ood_dataset(spec, size=s, channels=c, seed=seed,
                                      num_images=num_images if spec == "photo-crops" else None)
        except (ImportError, FileNotFoundError) as e:
            raise CLIError(f"{argname} {spec}: {e}") from e
        labels = np.zeros(len(images), dtype=np.int64)
    elif spec in DATASETS:
        images, labels = load_dataset(spec, split)
    elif Path(spec).is_dir():
        try:
            folder = ImageFolder(spec)
        except (FileNotFoundError, ValueError, OSError) as e:  # no images, mixed sizes, unreadable or bad files
            message = str(e).replace(f"path={spec!r}: ", "").replace(f"path={spec!r} ", "")
            raise CLIError(f"{argname} {spec}: {message}") from e
        images, labels = folder.images, folder.labels
    elif _looks_like_a_path(spec):
        what = "is a file, not a folder of images" if Path(spec).exists() else "no such folder"
        raise CLIError(f"{argname} {spec}: {what} (give a folder of PNG/JPEG images, or one of "
                       f"{', '.join(DATASETS + OOD_DATASETS)}, 'noise')")
    else:
        raise CLIError(f"{argname} must be one of {', '.join(DATASETS + OOD_DATASETS)}, 'noise' or an image "
                       f"folder; got {spec!r}")
    if num_images is not None and num_images < len(images):
        idx = np.sort(rng.choice(len(images), size=num_images, replace=False))
        images, labels = images[idx], labels[idx]
    if images.shape[1:] != (s, s, c):
        if not resize:
            raise CLIError(f"{argname} {spec}: images are {images.shape[1:]} (H, W, C) but the model expects "
                           f"{(s, s, c)}; pass --resize to resize them")
        if images.shape[3] not in (1, c):
            raise CLIError(f"{argname} {spec}: cannot turn {images.shape[3]}-channel images into {c}-channel ones")
        images = resize_images(images, s, channels=c)
    return images, labels


def _labels_for(backbone, labels: np.ndarray):
    import torch

    return None if backbone.config.num_classes is None else torch.from_numpy(labels)


def _times(args, scheduler) -> tuple[float, ...]:
    """``--ts``, or 0 and ``--num-times − 1`` log-spaced times up to the scheduler's ``t_max``."""
    from ncml.evaluation import default_times

    if args.ts:
        return _check_times(tuple(args.ts), scheduler)
    return default_times(scheduler.t_max, args.num_times)


def _check_times(ts: tuple[float, ...], scheduler) -> tuple[float, ...]:
    for t in ts:
        if not 0 <= t <= scheduler.t_max:
            raise CLIError(f"--ts: {t} is outside [0, t_max={scheduler.t_max}] of the pipeline's scheduler")
    return ts


def _wrote(path: Path) -> None:
    print(f"wrote {path}")


# ---- checks made before any work ----------------------------------------------------------------------
DEVICES = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
# Pillow formats registered with a save handler that only stubs it (saving fails without a plugin)
_PIL_STUB_FORMATS = {"BUFR", "GRIB", "HDF5", "WMF"}


def resolve_device(spec: str) -> str:
    """``--device`` as a torch device string: ``auto`` is CUDA where available, else the CPU.

    Refuses an unknown device and one this machine lacks (``cuda`` without CUDA, ``cuda:3`` with 2 GPUs).
    """
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise CLIError(f"--device must be {DEVICES}, got {spec!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {spec}: CUDA is not available here (torch {torch.__version__}); "
                           "use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise CLIError(f"--device {spec}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise CLIError(f"--device {spec}: the MPS backend is not available here; use --device cpu or auto")
    elif device.type != "cpu":
        raise CLIError(f"--device must be {DEVICES}, got {spec!r}")
    return spec


def _image_suffixes() -> list[str]:
    """File extensions PIL can write (``.png``, ``.jpg``, …), lower case."""
    from PIL import Image

    Image.init()
    return sorted(ext for ext, fmt in Image.registered_extensions().items()
                  if fmt in Image.SAVE and fmt not in _PIL_STUB_FORMATS)


def check_output(path: str, option: str, *, suffixes: list[str], why: str) -> Path:
    """Refuse, before any work, an output ``path`` that cannot be written: a wrong extension, a folder, a
    parent that is a file, an unwritable folder or file. Missing parent folders are fine (they are created)."""
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        shown = ", ".join(suffixes) if len(suffixes) <= 6 else \
            ", ".join(s for s in (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".webp") if s in suffixes) + ", …"
        raise CLIError(f"{option} must end in {shown} ({why}), got {path!r}")
    if p.is_dir():
        raise CLIError(f"{option} {path}: is a folder; give a file name inside it")
    existing = next(a for a in (p.parent, *p.parent.parents) if a.exists() or a == Path(a.anchor or "."))
    if not existing.is_dir():
        raise CLIError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CLIError(f"{option} {path}: the folder {existing} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise CLIError(f"{option} {path}: the file exists and is not writable")
    return p


def _check_plot_output(args) -> None:
    """``--out`` of the plotting commands (always written as PNG) and ``--device``."""
    check_output(args.out, "--out", suffixes=[".png"], why="the plot is written as PNG")
    args.device = resolve_device(args.device)


# ---- commands -----------------------------------------------------------------------------------------
def cmd_sample(args) -> None:
    import numpy as np
    import torch

    args.denoise = {"mean": True, "tweedie": "tweedie", "none": False, None: None}[args.denoise]
    out_path = check_output(args.out, "--out", suffixes=_image_suffixes(), why="an image format PIL can write")
    npz_path = None if args.save_npz is None else \
        check_output(args.save_npz, "--save-npz", suffixes=[".npz"], why="a numpy archive")
    args.device = resolve_device(args.device)
    from ncml.evaluation import classifier_features, frechet_distance, load_digit_classifier, make_grid
    from ncml.evaluation.reporting import format_table

    pipe = load_pipeline(args.pipeline, args.device)
    pipe.set_progress_bar_config(disable=args.no_progress)
    backbone, t_max = pipe.backbone, pipe.scheduler.t_max
    num_classes = backbone.config.num_classes
    if args.t_start is not None and args.t_start > t_max:
        raise CLIError(f"--t-start must be in [0, t_max={t_max:g}] of the pipeline's scheduler, got {args.t_start:g}")
    if args.class_label is not None and num_classes is None:
        raise CLIError(f"--class-label {args.class_label}: the pipeline is unconditional (its model has no "
                       "classes); drop --class-label")
    if args.guidance_scale and num_classes is None:
        raise CLIError(f"--guidance-scale {args.guidance_scale:g}: the pipeline is unconditional; guidance needs a "
                       "class-conditional model trained with label dropout")
    if args.guidance_scale and backbone.null_label is None:
        raise CLIError(f"--guidance-scale {args.guidance_scale:g}: this class-conditional model has no null class "
                       "(it was not trained with label dropout), so it cannot be guided")
    if args.class_label is not None and not 0 <= args.class_label < num_classes:
        raise CLIError(f"--class-label must be in [0, {num_classes - 1}] (the pipeline's {num_classes} classes), "
                       f"got {args.class_label}")
    classifier = ref = None
    if args.reference is not None:  # everything the Fréchet distance needs, before sampling
        if (backbone.config.sample_size, backbone.config.in_channels) != (28, 1):
            raise CLIError(f"--reference scores 28×28 grey digits (the shipped classifier's input); this pipeline "
                           f"makes {backbone.config.sample_size}×{backbone.config.sample_size}×"
                           f"{backbone.config.in_channels}")
        classifier = load_digit_classifier()
        needed = max(classifier.config.feature_dim, 2)
        if args.num_images < needed:
            raise CLIError(f"--reference needs --num-images >= {needed} (the classifier's {needed} feature "
                           f"dimensions), got {args.num_images}")
        ref, _ = load_images(args.reference, split="test", num_images=None, seed=args.seed, backbone=backbone,
                             resize=False, argname="--reference")
        if len(ref) < needed:
            raise CLIError(f"--reference {args.reference}: {len(ref)} test images; the Fréchet distance needs "
                           f"at least {needed}")
    generator = torch.Generator(device=backbone.device).manual_seed(args.seed)
    images, nfe, start = [], 0, time.perf_counter()
    for first in range(0, args.num_images, args.batch_size):
        b = min(args.batch_size, args.num_images - first)
        extra = {}
        if num_classes is not None:
            labels = [args.class_label] * b if args.class_label is not None else \
                [(first + i) % num_classes for i in range(b)]
            extra["class_labels"] = torch.tensor(labels, device=backbone.device)
            extra["guidance_scale"] = args.guidance_scale
        out = pipe(b, t_start=args.t_start, num_inference_steps=args.steps, correct_steps=args.correct_steps,
                   snr=args.snr, spacing=args.spacing, denoise=args.denoise, generator=generator, output_type="np",
                   **extra)
        images.append(np.asarray(out.images))
        nfe += int(out.nfe)
    seconds = time.perf_counter() - start
    images = np.concatenate(images)
    used = pipe.sampling_config.replace(  # what the call used: the arguments given, else the pipeline's defaults
        t_start=args.t_start, num_inference_steps=args.steps, correct_steps=args.correct_steps, snr=args.snr,
        spacing=args.spacing, denoise=args.denoise)
    t_start = used.t_start if used.t_start is not None else t_max / 2
    rows = [["images", str(len(images))], ["t_start", f"{t_start:g}"],
            *([["guidance scale", f"{args.guidance_scale:g}"]] if num_classes is not None else []),
            *([["refinement", "none (t_start = 0: plain AR sampling)"]] if t_start == 0 else
              [["refinement steps", f"{used.num_inference_steps} ({used.spacing} grid)"],
               ["corrector steps", str(used.correct_steps)], ["snr", f"{used.snr:g}"],
               ["last step", "Tweedie" if used.denoise == "tweedie" else "predictor mean" if used.denoise else
                "noisy sample"]]),
            ["network evaluations", str(nfe)], ["seconds", f"{seconds:.1f}"],
            ["seconds / image", f"{seconds / len(images):.2f}"]]
    if args.reference is not None:
        fd = frechet_distance(classifier_features(images, classifier=classifier),
                              classifier_features(ref, classifier=classifier))
        rows.append([f"Fréchet distance to {args.reference} test (digit-classifier features)", f"{fd:.3f}"])
    print(format_table(["sampling", "value"], rows))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(images, nrow=args.nrow, scale=args.scale).save(out_path)
    _wrote(Path(args.out))
    if npz_path is not None:
        npz_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(npz_path, images=images)
        _wrote(Path(args.save_npz))


def cmd_evaluate(args) -> None:
    import numpy as np
    import torch

    _check_plot_output(args)
    from ncml.evaluation import bits_per_dim, plot_bits_per_dim
    from ncml.evaluation.reporting import format_table

    pipe = load_pipeline(args.pipeline, args.device)
    backbone, scheduler = pipe.backbone, pipe.scheduler
    ts = _times(args, scheduler)
    images, labels = load_images(args.dataset, split=args.split, num_images=args.num_images, seed=args.seed,
                                 backbone=backbone, resize=args.resize)
    labels = _labels_for(backbone, labels)
    generator = torch.Generator(device=backbone.device).manual_seed(args.seed)
    clean, noised = [], []
    for t in ts:
        common = dict(class_labels=labels, batch_size=args.batch_size, progress=not args.no_progress)
        clean.append(bits_per_dim(backbone, images, t, **common).mean)
        noised.append(clean[-1] if t == 0 else
                      bits_per_dim(backbone, images, t, noised=True, scheduler=scheduler, generator=generator,
                                   **common).mean)
    print(f"{args.dataset} ({args.split}), {len(images)} images; NLL in bits/dim")
    print(format_table(["t", "clean x_0 under p_θ,t", "x_t ~ p_t(·|x_0) under p_θ,t (NCML)"],
                       [[f"{t:.4g}", f"{c:.4f}", f"{n:.4f}"] for t, c, n in zip(ts, clean, noised)]))
    _wrote(plot_bits_per_dim(ts, {"clean x_0": np.array(clean), "noised x_t": np.array(noised)}, args.out,
                             title=f"{args.dataset}: NLL against t"))


def cmd_sanity_test(args) -> None:
    import torch

    if not any(p > 0 for p in args.pis):
        raise CLIError(f"--pis needs a flip probability > 0 (0, p_data itself, is always included), got "
                       f"{' '.join(f'{p:g}' for p in args.pis)}")
    _check_plot_output(args)
    from ncml.evaluation import noise_robustness, plot_robustness

    pipe = load_pipeline(args.pipeline, args.device)
    backbone = pipe.backbone
    ts = _times(args, pipe.scheduler)
    images, labels = load_images(args.dataset, split=args.split, num_images=args.num_images, seed=args.seed,
                                 backbone=backbone, resize=args.resize)
    result = noise_robustness(backbone, images, pis=tuple(args.pis), ts=ts,
                              class_labels=_labels_for(backbone, labels), batch_size=args.batch_size,
                              generator=torch.Generator().manual_seed(args.seed), progress=not args.no_progress)
    print(f"LSB sanity test on {args.dataset} ({args.split}), {len(images)} images; bits/dim (section 3.1, Eq. 9)")
    print(result.table())
    _wrote(plot_robustness(result, args.out, title=f"{args.dataset}: Δlog p against t"))


def cmd_ood(args) -> None:
    _check_plot_output(args)
    from ncml.evaluation import ood_auroc, plot_ood_histograms

    pipe = load_pipeline(args.pipeline, args.device)
    backbone = pipe.backbone
    ts = _check_times(tuple(args.ts) if args.ts else (0.0,), pipe.scheduler)
    in_images, in_labels = load_images(args.dataset, split=args.split, num_images=args.num_images, seed=args.seed,
                                       backbone=backbone, resize=args.resize)
    out_images, out_labels = load_images(args.ood_dataset, split=args.split, num_images=args.num_images,
                                         seed=args.seed + 1, backbone=backbone, resize=args.resize,
                                         argname="--ood-dataset")
    result = ood_auroc(backbone, in_images, out_images, args.statistic, ts=ts,
                       in_labels=_labels_for(backbone, in_labels), out_labels=_labels_for(backbone, out_labels),
                       batch_size=args.batch_size, progress=not args.no_progress)
    print(f"OOD detection: in = {args.dataset} ({len(in_images)}), out = {args.ood_dataset} ({len(out_images)}); "
          "NLL in bits/dim, OOD = positive class")
    print(result.table())
    _wrote(plot_ood_histograms(result, args.out, in_name=args.dataset, out_name=args.ood_dataset))


def cmd_classify(args) -> None:
    import numpy as np
    import torch

    _check_plot_output(args)
    from ncml.evaluation import class_posterior, matched_time, noisy_marginal_draw, smoothed_class_posterior
    from ncml.evaluation.reporting import format_table, plot_confusion

    pipe = load_pipeline(args.pipeline, args.device)
    backbone, scheduler = pipe.backbone, pipe.scheduler
    num_classes = backbone.config.num_classes
    if num_classes is None:
        raise CLIError(f"--pipeline {args.pipeline or DEFAULT_PIPELINE}: the model is unconditional; classify "
                       "needs a class-conditional one")
    levels = 2**backbone.config.num_bits - 1
    smoothing = args.smoothing_std or 0.0
    times = []
    for std in args.noise_std:  # the time each row is classified at: that of its total noise std
        flag, total = ("--noise-std", std) if std >= smoothing else ("--smoothing-std", smoothing)
        try:
            times.append(matched_time(scheduler, 2 * total / levels))
        except ValueError as e:
            raise CLIError(f"{flag} {total:g}: {e}") from None
    images, labels = load_images(args.dataset, split=args.split, num_images=args.num_images, seed=args.seed,
                                 backbone=backbone, resize=args.resize)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise CLIError(f"--dataset {args.dataset}: labels go up to {labels.max()} but the model has {num_classes} "
                       "classes")
    generator = torch.Generator().manual_seed(args.seed)
    rows, first = [], None
    for std, t in zip(args.noise_std, times):
        x = images  # clean; else x_0 + σ·ε scaled by m(t_σ): a draw of the SDE marginal at t_σ (see matched_time)
        if std > 0:
            x, t_std = noisy_marginal_draw(scheduler, images, 2 * std / levels, num_bits=backbone.config.num_bits,
                                           generator=generator)
        if smoothing > std:  # noise topped up to the smoothing std, averaged over --num-draws copies
            if std > 0:
                x = x / scheduler.marginal_mean_coeff(torch.tensor(t_std, dtype=torch.float64))  # x_0 + σ·ε
            log_post = smoothed_class_posterior(backbone, scheduler, x, 2 * smoothing / levels,
                                                num_draws=args.num_draws, input_noise_std=2 * std / levels,
                                                generator=generator, batch_size=args.batch_size,
                                                progress=not args.no_progress)
        else:
            log_post = class_posterior(backbone, x if std == 0 else x.float(), t, batch_size=args.batch_size,
                                       progress=not args.no_progress)
        pred = log_post.argmax(1).numpy()
        correct = pred == labels
        rows.append([f"{std:g}", f"{t:.4g}", f"{correct.mean():.4f}",
                     f"{np.sqrt(correct.mean() * (1 - correct.mean()) / len(labels)):.4f}",
                     f"{-log_post[torch.arange(len(labels)), torch.from_numpy(labels)].mean().item():.4f}"])
        if first is None:
            first = (std, pred)
    how = (f"; smoothed: noise topped up to std {smoothing:g}, {args.num_draws} noisy copies per image"
           if smoothing else "")
    print(f"Bayes classifier argmax_y p_θ,t(x | y) on {args.dataset} ({args.split}), {len(images)} images, "
          f"uniform prior{how}")
    print(format_table(["noise std (grey levels)", "t", "accuracy", "std error", "NLL of the label (nats)"], rows))
    _wrote(plot_confusion(labels, first[1], num_classes, args.out,
                          title=f"{args.dataset}: Bayes classifier, noise std {first[0]:g}"))


# ---- argument parsing ---------------------------------------------------------------------------------
MAX_SEED = 2**32 - 1


def _int_type(lo: int, hi: int | None = None):
    """An argparse ``type``: an int in ``[lo, hi]``; the error names the range and the value given."""
    expected = f"an int >= {lo}" if hi is None else f"an int in [{lo}, {hi}]"

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {s!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {v}")
        return v

    return parse


def _float_type(expected: str, ok):
    """An argparse ``type``: a finite float for which ``ok(v)`` holds (``expected`` says which)."""

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {s!r}") from None
        if not (math.isfinite(v) and ok(v)):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {s}")
        return v

    return parse


_positive_int = _int_type(1)
_time = _float_type("a finite number >= 0 (an SDE time)", lambda v: v >= 0)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line ``ncml: error: …`` with exit status 2, like the commands' own errors."""

    def error(self, message: str):
        self.exit(2, f"ncml: error: {message} (see '{self.prog} --help')\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and appends ``(default: …)`` to every option whose help lacks one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or "(default" in text:
            return text
        default = "off" if action.nargs == 0 and action.default is False else "%(default)s"  # a flag
        return f"{text} (default: {default})".strip()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ncml", description=__doc__, formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{sample,evaluate,sanity-test,ood,classify}")

    def common(p, *, out: str, what: str):
        p.add_argument("--pipeline", default=None, metavar="PATH_OR_REPO_ID",
                       help=f"pipeline folder, Hub repo id or bundled name (default: the bundled "
                            f"{DEFAULT_PIPELINE!r})")
        p.add_argument("--device", default="auto",
                       help=f"torch device: {DEVICES}; auto = CUDA where available, else the CPU")
        p.add_argument("--batch-size", type=_positive_int, default=64, help="images per network call")
        p.add_argument("--seed", type=_int_type(0, MAX_SEED), default=0, help="seed of every random draw")
        p.add_argument("--out", default=out, help=what)
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    def data(p, *, num_images: int):
        p.add_argument("--dataset", default="mnist5k", help="mnist5k | digits | an image folder")
        p.add_argument("--split", default="test", choices=("train", "validation", "test"),
                       help="split of a bundled dataset (validation: the fixed carve from train for choosing settings)")
        p.add_argument("--num-images", type=_positive_int, default=num_images,
                       help="a seeded random subset of this many images")
        p.add_argument("--resize", action="store_true", help="resize images of another size to the model's")

    def times(p, help_default: str):
        p.add_argument("--ts", type=_time, nargs="+", default=None, metavar="T",
                       help=f"times t in [0, t_max] ({help_default})")
        p.add_argument("--num-times", type=_int_type(2), default=6,
                       help="number of default times: 0 and log-spaced ones up to t_max")

    def add(name: str, help: str):
        return sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)

    p = add("sample", "draw samples (AR at t_start, then score-based refinement) and save a grid")
    common(p, out="samples.png", what="image of the sample grid; its extension (.png, .jpg, …) picks the format")
    p.add_argument("--num-images", type=_positive_int, default=16, help="number of samples")
    # sampler settings: None = the pipeline's sampling_config.json (the best setting measured for that model)
    p.add_argument("--t-start", type=_time, default=None,
                   help="AR sampling time in [0, t_max]; 0 = plain AR (default: the pipeline's sampling config, "
                        "else t_max / 2)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="refinement steps from t_start to 0 (default: the pipeline's sampling config)")
    p.add_argument("--correct-steps", type=_int_type(0), default=None,
                   help="Langevin corrector steps per step (default: the pipeline's sampling config)")
    p.add_argument("--snr", type=_float_type("a finite number > 0", lambda v: v > 0), default=None,
                   help="corrector signal-to-noise ratio (default: the pipeline's sampling config)")
    p.add_argument("--spacing", choices=("uniform", "log"), default=None,
                   help="refinement time grid (default: the pipeline's sampling config)")
    p.add_argument("--denoise", choices=("mean", "tweedie", "none"), default=None,
                   help="last step: predictor mean, a Tweedie step, or the noisy sample (default: sampling config)")
    p.add_argument("--class-label", type=_int_type(0), default=None,
                   help="class of every sample, for class-conditional models (default: cycle through the classes)")
    p.add_argument("--guidance-scale", type=_float_type("a finite number >= 0", lambda v: v >= 0), default=0.0,
                   help="classifier-free guidance w for class-conditional models with a null class; 0 = off")
    p.add_argument("--nrow", type=_positive_int, default=None,
                   help="images per grid row (default: about the square root of --num-images)")
    p.add_argument("--scale", type=_positive_int, default=2, help="upscaling of the grid image")
    p.add_argument("--reference", default=None, metavar="DATASET",
                   help="also print the Fréchet distance in digit-classifier features to this dataset's test split, "
                        "e.g. mnist5k (28×28 grey digits; needs --num-images >= 64) (default: none)")
    p.add_argument("--save-npz", default=None, metavar="PATH",
                   help="also save the uint8 samples to this .npz (default: none)")
    p.set_defaults(func=cmd_sample)

    p = add("evaluate", "NLL in bits/dim against t, of clean and of noised images")
    common(p, out="bits_per_dim.png", what="PNG plot to write")
    data(p, num_images=200)
    times(p, "default: 0 and log-spaced times up to the scheduler's t_max")
    p.set_defaults(func=cmd_evaluate)

    p = add("sanity-test", "the LSB sanity test: NLL of p_π and Δlog p against t (Fig. 4)")
    common(p, out="robustness.png", what="PNG plot to write")
    data(p, num_images=200)
    times(p, "default: 0 and log-spaced times up to the scheduler's t_max")
    p.add_argument("--pis", type=_float_type("a probability in [0, 1]", lambda v: 0 <= v <= 1), nargs="+",
                   default=[0.0, 0.5, 1.0], metavar="PI", help="LSB flip probabilities (default: 0 0.5 1)")
    p.set_defaults(func=cmd_sanity_test)

    p = add("ood", "out-of-distribution detection: AUROC of NLL statistics, histograms")
    common(p, out="ood.png", what="PNG of the histograms to write")
    data(p, num_images=200)
    p.add_argument("--ood-dataset", required=True,
                   help="mnist5k | digits | fashion-mnist | cifar10 | lfw-faces | photo-crops | noise | an image "
                        "folder (required)")
    p.add_argument("--ts", type=_time, nargs="+", default=None, metavar="T", help="times t in [0, t_max] (default: 0)")
    p.add_argument("--statistic", default="nll_mean", choices=("nll", "nll_mean"),
                   help="nll: NLL at the first t; nll_mean: NLL averaged over --ts")
    p.set_defaults(func=cmd_ood)

    p = add("classify", "the exact Bayes classifier p(y | x) of a class-conditional model: accuracy, also on "
                        "images with added Gaussian noise (evaluated at the matching t)")
    common(p, out="confusion.png", what="PNG of the confusion matrix (first --noise-std) to write")
    data(p, num_images=500)
    p.add_argument("--noise-std", type=_float_type("a finite number >= 0", lambda v: v >= 0), nargs="+",
                   default=[0.0], metavar="STD",
                   help="std of Gaussian noise added to the images, in grey levels of 255 (default: 0)")
    p.add_argument("--smoothing-std", type=_float_type("a finite number > 0", lambda v: v > 0), default=None,
                   metavar="STD", help="the smoothed Bayes classifier: images with less noise get more, up to this "
                   "std in grey levels, in --num-draws independent copies, and are classified by the mean "
                   "log-likelihood of the copies at the matching t (default: off)")
    p.add_argument("--num-draws", type=_int_type(1), default=4,
                   help="noisy copies per image of the smoothed classifier (default: 4)")
    p.set_defaults(func=cmd_classify)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``ncml`` command line; returns the exit status (0 on success, 2 on a usage error).

    Usage errors (argparse's and the commands' :class:`CLIError`) print one line ``ncml: error: …``; anything
    else is a bug and keeps its traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CLIError as e:
        print(f"ncml: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
