#!/usr/bin/env python
"""Train a noise conditional maximum likelihood (NCML) autoregressive image model with 🤗 Accelerate.

    accelerate launch examples/train_ncml.py --config examples/configs/ncpn_mnist_vp.json \\
        --dataset mnist5k --output_dir ncpn-mnist-vp --max_train_steps 5000

The objective is the paper's section 4 (``ncml.NCMLLoss``): one teacher-forced pass of the backbone on
``x_t = m(t)·x_0 + s(t)·ε`` with ``t ~ μ`` (``t = 0`` for a ``clean_fraction`` of each batch), in bits/dim.
The script reads top to bottom: :class:`TrainingConfig` (the flags), :func:`main` (components, data, Accelerate,
the loop, the release), then the pieces it relies on (data and its order); checkpoints and the EMA of the weights
come from :mod:`ncml.training`.

Config file (``--config``, JSON)
--------------------------------
Either a flat model config (the backbone's config fields, ``_class_name`` optional, default ``NCPNModel``)::

    {"sample_size": 28, "in_channels": 1, "nr_resnet": 2, "nr_filters": 32, ...}

or sections, every one optional except ``model``::

    {"model":     {"_class_name": "NCPNModel", "sample_size": 28, ...},       # backbone config fields
     "scheduler": {"_class_name": "VPSDEScheduler", "beta_max": 20.0, ...},    # SDE; default VPSDEScheduler()
     "loss":      {"clean_fraction": 0.5, "num_noise_levels": null},           # NCMLLossConfig fields
     "training":  {"dataset": "mnist5k", "train_batch_size": 32, ...}}         # TrainingConfig fields

Unknown keys anywhere raise ``ValueError``, values of the wrong type ``TypeError``. Precedence: command line > the
config's ``training`` section > :class:`TrainingConfig`'s defaults (``--help`` lists them). ``--sde`` / ``--t_max``
and ``--clean_fraction`` / ``--noise_distribution`` / ``--t_min`` / ``--num_noise_levels`` override the
``scheduler`` / ``loss`` sections. Every value is checked before the Accelerator starts.

Output folder (``--output_dir``)
--------------------------------
At the end it is a release pipeline folder (``NCMLPipeline.from_pretrained(output_dir)``: ``model_index.json``,
``backbone/`` with the **EMA** weights, ``scheduler/``, ``sampling_config.json``, ``README.md`` model card with
dataset, steps, held-out bits/dim and, class-conditional, ``bayes_accuracy_t=0``); ``--push_to_hub`` uploads just
those. Alongside: ``checkpoint-<step>/`` training checkpoints, ``samples/step-<step>.png`` sample grids,
``logs/metrics.jsonl`` (one JSON object per logged step).

Checkpoints and exact resume
----------------------------
``checkpoint-<step>/`` holds safetensors and JSON only, so resuming never runs code from the folder: live and EMA
weights, the optimizer's tensors, each process's RNG states, and ``ncml_checkpoint.json`` (configs, step, data
position, a sha256 manifest of the other files). :mod:`ncml.training.checkpointing` writes it atomically (a kill
mid-write leaves the previous checkpoint intact), checks every file against the manifest before a resume loads
anything, and resolves ``--resume_from_checkpoint latest`` to the newest ``checkpoint-<step>`` folder, refusing it
if it is damaged (it never falls back to an older one or to a new run, which would overwrite it). Resuming into a
different model raises. The rows of ``logs/metrics.jsonl`` after the step resumed from (or all rows, for a new run)
are dropped, since those steps run again.

Exact resume needs nothing else: the data order and the loss's draws of ``t`` and ``ε`` are pure functions of
``(seed, global example index)`` (one ``torch.Generator`` per example), the learning rate a pure function of the
step, and dropout uses the global RNGs restored from ``rng_state_<rank>.json``. Checkpoints of earlier versions of
this script (Accelerate's ``save_state`` pickles) still resume, read with ``torch.load(weights_only=True)``.

Data order and the effective batch
----------------------------------
Each optimizer step consumes ``train_batch_size × num_processes × gradient_accumulation_steps`` examples. Epoch
``e`` is the permutation ``numpy.random.default_rng([seed, e])`` of the training set (incomplete last batch
dropped); micro-batch ``k`` of an epoch is its slice ``[k·B·P, (k+1)·B·P)`` and process ``r`` takes the ``r``-th
``B`` of it. So 2 processes × B see exactly the examples (and draws) that 1 process × 2B sees.

Data
----
``--dataset mnist5k|digits``: a bundled dataset (``ncml.data.load_dataset``), evaluated on its test split or, with
``--validation_split``, on its validation images (left out of training); used at its own size, or resized with
``--resolution``. ``examples/configs`` has a config for each (``ncpn_mnist_vp.json``, ``ncpn_digits_vp.json``).

Your own images, with 🤗 diffusers' flags and meanings:

- ``--train_data_dir PATH``: PNG/JPEG files (``ncml.data.ImageFolder``, recursively); class subfolders give the
  labels of a class-conditional model. A fixed 10 % (seeded permutation, seed 0) is held out for evaluation.
- ``--dataset_name NAME_OR_PATH`` (``pip install 'ncml[data]'``): a 🤗 datasets dataset, by Hub name (with
  ``--dataset_config_name``) or a folder written by ``save_to_disk``. ``--image_column`` (default ``image``) holds
  the images, ``--class_column`` (default ``label`` where it exists) the labels of a class-conditional model.
  Evaluated on its ``validation`` split, else ``test``, else a fixed 10 % of ``train``.

Each image is converted to the model's ``in_channels``: transparency (RGBA, LA, transparent palettes) is
**composited on white**, not dropped; palettes become RGB; RGB becomes grey by ITU-R 601-2 luma for 1-channel models
and grey is repeated for 3-channel ones; 16-bit images keep their top 8 bits. It is then resized so that its shorter
side is ``--resolution`` (default: the config's ``sample_size``; giving it sets the model's ``sample_size``), PIL
bilinear, and cropped to a square: the centre with ``--center_crop``, else a random crop for every training example
(diffusers' default). ``--random_flip`` mirrors half the training examples. Crops and flips are drawn from
``(seed, global example number)`` like the loss's noise, so they are the same on any number of processes and after a
resume. Held-out images are always centre-cropped and never flipped. Finally images are quantised to the model's
``num_bits`` (the top bits of each 8-bit value). Everything is held in memory as uint8; an image that cannot be read
or converted stops the run before training with one line naming the file (or the column and row).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.logging import get_logger

from ncml import hub_utils
from ncml.configuration_utils import config_from_dict, config_to_dict, resolve_class
from ncml.data import (DATASETS, ImageFolder, augment_batch, hf_images, hf_labels, load_dataset, load_hf_splits,
                       prepare_images, stack_images, to_model_space, to_uint8, train_and_eval_splits)
from ncml.evaluation import bits_per_dim, class_posterior, make_grid
from ncml.losses import NCMLLoss
from ncml.models.autoregressive import ARBackbone
from ncml.schedulers import SDEScheduler, SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler
from ncml.training import EMA
from ncml.training.checkpointing import (checkpoint_meta, drop_metrics_after, load_checkpoint, resolve_resume,
                                         save_checkpoint)

SDES = {"vp": VPSDEScheduler, "ve": VESDEScheduler, "subvp": SubVPSDEScheduler}
CONFIG_SECTIONS = ("model", "scheduler", "loss", "training")
HOLDOUT_FRACTION = 0.1
DATA_SOURCES = ("dataset", "dataset_name", "train_data_dir")  # exactly one names the training data

logger = get_logger(__name__, log_level="INFO")  # main process only, unless main_process_only=False


# ---------------------------------------------------------------------------------------------------------------
# the flags: one TrainingConfig field each (--<name> on the command line, or the config's "training" section)
# ---------------------------------------------------------------------------------------------------------------
def flag(default, help: str, *, minimum: int | None = None, choices=None):
    """A :class:`TrainingConfig` field: default, ``--help`` text, and the checks (``>= minimum``, ``choices``)."""
    return field(default=default, metadata={"help": help, "minimum": minimum, "choices": choices})


@dataclass(frozen=True)
class TrainingConfig:
    # data and run
    dataset: str | None = flag(None, "a bundled dataset (ncml.data.load_dataset)", choices=DATASETS)
    dataset_name: str | None = flag(None, "a Hugging Face datasets dataset: a Hub name, or a folder written by "
                                          "save_to_disk (pip install 'ncml[data]'); evaluated on its validation, "
                                          "else test split, else 10%% of train")
    dataset_config_name: str | None = flag(None, "--dataset_name: the dataset's config (None: the default one)")
    train_data_dir: str | None = flag(None, "a folder of PNG/JPEG images, any mode and size (10%% held out; class "
                                            "subfolders give labels)")
    image_column: str = flag("image", "--dataset_name: the column holding the images")
    class_column: str | None = flag(None, "--dataset_name, class-conditional models: the column holding the class "
                                          "labels (default: 'label' when there is one)")
    resolution: int | None = flag(None, "images are resized so that their shorter side is this, then cropped to a "
                                        "square of it; sets the model's sample_size (default: the config's)",
                                  minimum=1)
    center_crop: bool = flag(False, "crop the centre of each image; without it, every training example is a random "
                                    "crop (seeded; evaluation images are always centre-cropped)")
    random_flip: bool = flag(False, "mirror half the training examples left-right (seeded)")
    validation_split: bool = flag(False, "--dataset: train without its validation images and evaluate on them, "
                                         "not on the test split")
    output_dir: str = flag("ncml-model", "checkpoints, samples, logs and the release pipeline")
    seed: int = flag(0, "initial weights, data order, noise draws and dropout")
    init_from: str | None = flag(None, "start from these weights: a pipeline folder or repo id (its backbone), "
                                       "same model config, or an unconditional one for a class-conditional run "
                                       "(the class embedding then starts at zero)")
    new_params_lr_scale: float = flag(1.0, "with --init_from: learning-rate multiplier of the parameters its source "
                                           "lacks (a new class embedding, started at zero)", minimum=0)
    # the SDE and the loss: override the config's scheduler / loss sections
    sde: str | None = flag(None, "noising SDE (default: the config's, else vp)", choices=tuple(sorted(SDES)))
    t_max: float | None = flag(None, "T, the largest time trained on (the scheduler's t_max); default: the "
                                     "config's, else the SDE's")
    clean_fraction: float | None = flag(None, "μ({0}), the share of clean (t = 0) examples; default: the config's "
                                              "loss section, else 0.5")
    noise_distribution: str | None = flag(None, "law of the noisy times on (t_min, T] (ncml.NCMLLossConfig); "
                                                "default: the config's, else uniform",
                                          choices=("uniform", "log_uniform"))
    t_min: float | None = flag(None, "lower end of the noisy times (> 0 for log_uniform)")
    num_noise_levels: int | None = flag(None, "a grid of K noise levels instead of U(0, T]", minimum=1)
    label_dropout: float | None = flag(None, "class-conditional models with a null class: the share of labels "
                                             "replaced by 'no label' (classifier-free guidance); default: the "
                                             "config's loss section, else 0")
    classifier_weight: float | None = flag(None, "class-conditional models: α, the weight of the exact Bayes "
                                                 "classifier's cross-entropy added to the loss (hybrid training, "
                                                 "ncml.NCMLLossConfig); default: the config's, else 0")
    classifier_examples: int | None = flag(None, "examples per micro-batch scored by that term (each costs K more "
                                                 "rows); default: the config's, else all", minimum=1)
    # optimization
    max_train_steps: int = flag(1000, "optimizer steps", minimum=1)
    train_batch_size: int = flag(32, "examples per process per micro-batch", minimum=1)
    gradient_accumulation_steps: int = flag(1, "micro-batches per optimizer step", minimum=1)
    learning_rate: float = flag(5e-4, "Adam's learning rate after the warmup (> 0)")
    lr_scheduler: str = flag("constant", "after the warmup", choices=("constant", "cosine"))
    lr_warmup_steps: int = flag(0, "linear warmup from 0 (optimizer steps)", minimum=0)
    adam_beta1: float = flag(0.95, "PixelCNN++'s Adam betas (0.95, 0.9995), each in [0, 1)")
    adam_beta2: float = flag(0.9995, "see --adam_beta1")
    adam_weight_decay: float = flag(0.0, "Adam's (L2) weight decay", minimum=0)
    max_grad_norm: float = flag(1.0, "gradient clipping (0 = off)", minimum=0)
    ema_decay: float = flag(0.9995, "EMA of the weights (warmed up as (1+n)/(10+n)), in [0, 1)")
    mixed_precision: str | None = flag(None, "default: accelerate's config / launch flag",
                                       choices=("no", "fp16", "bf16"))
    # checkpoints
    checkpointing_steps: int = flag(500, "0 = only at the end", minimum=0)
    checkpoints_total_limit: int | None = flag(None, "keep only the newest N checkpoints", minimum=1)
    resume_from_checkpoint: str | None = flag(None, "a checkpoint folder, or 'latest' in --output_dir")
    # evaluation, logging, release
    eval_steps: int = flag(250, "held-out bits/dim (class-conditional: and Bayes accuracy) and a sample grid "
                                "(0 = end only)", minimum=0)
    eval_batch_size: int = flag(100, "images per forward pass in evaluation", minimum=1)
    eval_max_images: int = flag(500, "held-out images used for bits/dim", minimum=1)
    eval_t_fractions: tuple[float, ...] = flag((0.01, 0.1, 0.5), "evaluate bits/dim also at t = f·T for these f "
                                                                 "in (0, 1] (t = 0 is always evaluated)")
    num_sample_images: int = flag(4, "AR samples (t = 0) per evaluation; 0 = none", minimum=0)
    logging_steps: int = flag(10, "write train metrics every N steps", minimum=1)
    report_to: str = flag("none", "an Accelerate tracker (tensorboard, wandb, …) or 'none'")
    push_to_hub: bool = flag(False, "upload the release pipeline folder")
    hub_model_id: str | None = flag(None, "repo id for --push_to_hub (default: the output_dir's name)")


def parse_args(argv: list[str] | None = None) -> tuple[TrainingConfig, dict]:
    """The flags over the config file's ``training`` section over the defaults, checked. Returns (args, config)."""
    # SUPPRESS: the namespace holds only the flags given, so they override the config file and nothing else does
    parser = argparse.ArgumentParser(description="Train an NCML autoregressive image model (paper section 4).",
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", required=True, help="JSON: a model config, or model/scheduler/loss/training "
                                                        "sections (see the module docstring)")
    hints = typing.get_type_hints(TrainingConfig)
    for f in dataclasses.fields(TrainingConfig):
        tp, options = hints[f.name], {"help": f"{f.metadata['help']} (default: {f.default})"}
        if tp is bool:
            options["action"] = "store_true"
        elif typing.get_origin(tp) is tuple:
            options.update(nargs="*", type=float)
        else:  # int, float or str, possibly | None
            options.update(type=[t for t in typing.get_args(tp) or [tp] if t is not type(None)][0],
                           choices=f.metadata["choices"])
        parser.add_argument(f"--{f.name}", **options)
    given = vars(parser.parse_args(argv))
    config_path = given.pop("config")
    config = read_config(config_path)
    training = dict(config.get("training", {}))
    if given.keys() & set(DATA_SOURCES):  # data named on the command line replaces the config's
        for key in (*DATA_SOURCES, "dataset_config_name"):
            training.pop(key, None)
    args = config_from_dict(TrainingConfig, training, argname=f"--config {config_path}: training")
    args = dataclasses.replace(args, **{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})
    check_args(args)
    return args, config


def read_config(path: str) -> dict:
    """The config as ``{"model": …, "scheduler": …, "loss": …, "training": …}`` (a flat file: ``model``)."""
    if not Path(path).is_file():
        raise ValueError(f"--config {path!r}: no such file")
    data = hub_utils.read_json(Path(path), argname="--config")
    if not any(k in data for k in CONFIG_SECTIONS):
        return {"model": data}
    unknown = sorted(set(data) - set(CONFIG_SECTIONS))
    if unknown:
        raise ValueError(f"--config {path}: unknown top-level key(s) {unknown}; sections are {list(CONFIG_SECTIONS)}")
    if "model" not in data:
        raise ValueError(f"--config {path}: the 'model' section is required")
    for k in CONFIG_SECTIONS:
        if k in data and not isinstance(data[k], dict):
            raise ValueError(f"--config {path}: section {k!r} must be a JSON object, got {type(data[k]).__name__}")
    return data


def check_args(args: TrainingConfig) -> None:
    """What the types do not say: ranges, choices (from the config file too), finiteness, exclusive flags."""
    for f in dataclasses.fields(args):
        value, minimum, choices = getattr(args, f.name), f.metadata["minimum"], f.metadata["choices"]
        # NaN passes every comparison as False and inf most of them: reject both first
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{f.name} must be a finite number, got {value}")
        if value is not None and minimum is not None and value < minimum:
            raise ValueError(f"--{f.name} must be >= {minimum}, got {value}")
        if value is not None and choices is not None and value not in choices:
            raise ValueError(f"--{f.name} must be one of {list(choices)}, got {value!r}")
    sources = [f"--{k}" for k in DATA_SOURCES if getattr(args, k) is not None]
    if not sources:
        raise ValueError("give the training data: --dataset {" + ",".join(DATASETS) + "}, --dataset_name NAME_OR_PATH "
                         "or --train_data_dir PATH")
    if len(sources) > 1:
        raise ValueError(f"{' and '.join(sources)} are exclusive (given both, on the command line or in the config's "
                         "training section)")
    if args.validation_split and args.dataset is None:
        raise ValueError("--validation_split needs --dataset (--train_data_dir and --dataset_name hold out images "
                         "themselves)")
    for name in ("dataset_config_name", "class_column"):
        if getattr(args, name) is not None and args.dataset_name is None:
            raise ValueError(f"--{name} needs --dataset_name")
    if not 0 <= args.seed < 2**32 - _world_size():  # numpy's seeds are uint32; set_seed adds the process index
        raise ValueError(f"--seed must be an integer in [0, {2**32 - _world_size()}), got {args.seed}")
    if not args.learning_rate > 0:
        raise ValueError(f"--learning_rate must be > 0, got {args.learning_rate}")
    for name in ("ema_decay", "adam_beta1", "adam_beta2"):
        if not 0 <= getattr(args, name) < 1:
            raise ValueError(f"--{name} must lie in [0, 1), got {getattr(args, name)}")
    if not all(math.isfinite(f) and 0 < f <= 1 for f in args.eval_t_fractions):
        raise ValueError(f"--eval_t_fractions must lie in (0, 1], got {list(args.eval_t_fractions)}")
    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise ValueError(f"--output_dir {args.output_dir}: exists and is not a folder")
    if args.push_to_hub and os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ValueError("--push_to_hub needs the network, but HF_HUB_OFFLINE is set")
    trackers(args.report_to)


def trackers(report_to: str) -> list[str] | None:
    """``--report_to`` as Accelerate's ``log_with``: None for "none", else the names (comma-separated), each a known
    tracker whose package is installed. Accelerate itself only logs a missing package at debug level and goes on."""
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    if report_to == "none":
        return None
    names = [name.strip() for name in report_to.split(",")]
    for name in names:
        if name not in LoggerType.list():
            raise ValueError(f"--report_to must be 'none' or Accelerate trackers among {LoggerType.list()} "
                             f"(comma-separated), got {name!r}")
        if name != "all" and LoggerType(name) not in get_available_trackers():
            raise ValueError(f"--report_to {name}: the tracker's package is not installed (pip install {name}), "
                             "or pass --report_to none")
    return names


def check_hub_repo(repo_id: str) -> None:
    """Before training: a Hub token that can write, and the repo ``repo_id`` (created if it does not exist), so that
    a run does not learn at its end that it cannot upload."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    api = HfApi()
    try:
        role = api.whoami().get("auth", {}).get("accessToken", {}).get("role")
        if role == "read":
            raise ValueError(f"--push_to_hub: the Hugging Face token is read-only; repo {repo_id!r} needs one that "
                             "can write (hf auth login)")
        api.create_repo(repo_id, exist_ok=True)
    except hub_utils.network_error_types() as e:  # before LocalTokenNotFoundError: both are OSErrors
        raise hub_utils.HubConnectionError(
            f"--push_to_hub: the Hugging Face Hub could not be reached to check repo {repo_id!r} "
            f"({type(e).__name__}: {e}); nothing was trained. Check the network, or drop --push_to_hub") from e
    except LocalTokenNotFoundError as e:
        raise ValueError(f"--push_to_hub: no Hugging Face token (hf auth login, or set HF_TOKEN) to create and "
                         f"upload to repo {repo_id!r}") from e
    except HfHubHTTPError as e:
        raise ValueError(f"--push_to_hub: the Hub refused repo {repo_id!r} ({e})") from e


TRACKER_IMAGE_SIZE = 256  # sample grids go to the trackers upscaled (nearest neighbour) to at least this many pixels


def log_sample_grid(accelerator, grid, step: int) -> list[str]:
    """Send the sample grid (a ``PIL.Image``) to the trackers that show images (tensorboard, wandb), upscaled by an
    integer factor to at least :data:`TRACKER_IMAGE_SIZE` pixels on its shorter side (28-pixel digits are specks
    otherwise). Returns the names of the trackers it went to; the others get the metrics only."""
    scale = max(1, -(-TRACKER_IMAGE_SIZE // min(grid.size)))
    image = grid.resize((grid.width * scale, grid.height * scale), resample=0)  # 0 = nearest
    sent = []
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            array = np.asarray(image)
            tracker.writer.add_image("samples", array, step, dataformats="HW" if array.ndim == 2 else "HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({"samples": wandb.Image(image)}, step=step)
        else:
            continue
        sent.append(tracker.name)
    return sent


# ---------------------------------------------------------------------------------------------------------------
# model, scheduler, loss: library components built from the config's sections and the flags
# ---------------------------------------------------------------------------------------------------------------
def build_components(config: dict, args: TrainingConfig) -> tuple[ARBackbone, SDEScheduler, NCMLLoss]:
    model_cfg = dict(config["model"])
    model_cls = resolve_class("ncml", model_cfg.pop("_class_name", "NCPNModel"), ARBackbone,
                              argname="--config model._class_name")
    torch.manual_seed(args.seed)  # the same initial weights on every process
    model = from_section(model_cls, model_cfg, "model", sample_size=args.resolution)

    sched_cfg = dict(config.get("scheduler", {}))
    named = sched_cfg.pop("_class_name", None)
    if args.sde is not None:
        sched_cls = SDES[args.sde]
        if named is not None and named != sched_cls.__name__:
            raise ValueError(f"--sde {args.sde} ({sched_cls.__name__}) contradicts the config's scheduler {named}")
    else:
        sched_cls = resolve_class("ncml", named, SDEScheduler, argname="--config scheduler._class_name") \
            if named is not None else VPSDEScheduler
    scheduler = from_section(sched_cls, sched_cfg, "scheduler", t_max=args.t_max)
    loss_fn = from_section(NCMLLoss, config.get("loss", {}), "loss", clean_fraction=args.clean_fraction,
                           noise_distribution=args.noise_distribution, t_min=args.t_min,
                           num_noise_levels=args.num_noise_levels, label_dropout=args.label_dropout,
                           classifier_weight=args.classifier_weight, classifier_examples=args.classifier_examples)
    if args.init_from is not None:
        init_weights(model, args.init_from)
    return model, scheduler, loss_fn


def from_section(cls, section: dict, name: str, **flags):
    """``cls.from_config`` of a config section, with the flags that were given (not None) on top."""
    try:
        return cls.from_config(section, **{k: v for k, v in flags.items() if v is not None})
    except (TypeError, ValueError) as e:  # the library's message, plus where the value came from
        raise (TypeError if isinstance(e, TypeError) else ValueError)(f"--config section {name!r} or its flags: {e}") \
            from e


def source_backbone(model: ARBackbone, path_or_repo_id: str) -> ARBackbone:
    """The backbone (of ``model``'s class) saved at ``path_or_repo_id``: a pipeline folder or repo, or a backbone
    folder."""
    folder = hub_utils.resolve_folder(path_or_repo_id)
    sub = "backbone" if (folder / "backbone").is_dir() else None
    return type(model).from_pretrained(str(folder), subfolder=sub)


def init_weights(model: ARBackbone, path_or_repo_id: str) -> list[str]:
    """Copy the backbone weights of a saved pipeline (or a backbone folder) into ``model``. Configs must match, except
    that an unconditional source may start a class-conditional ``model``: its class embedding (the only new
    parameter) starts at zero, so step 0 is the source model for every label. Returns the new parameters' names."""
    source = source_backbone(model, path_or_repo_id)
    ours, theirs = config_to_dict(model.config), config_to_dict(source.config)
    add_classes = theirs["num_classes"] is None and ours["num_classes"] is not None
    if add_classes:
        theirs.update(num_classes=ours["num_classes"], null_class=ours["null_class"])
    if theirs != ours:
        raise ValueError(f"--init_from {path_or_repo_id}: its backbone config {config_to_dict(source.config)} differs "
                         f"from this run's {ours}")
    state = source.state_dict()
    if add_classes:
        state["embedding.class_embedding.weight"] = torch.zeros_like(model.embedding.class_embedding.weight)
    model.load_state_dict(state)
    return sorted(set(state) - set(source.state_dict()))


def parameter_groups(model: ARBackbone, args: TrainingConfig) -> list[dict]:
    """Adam's parameter groups: every parameter at the learning rate, except (with ``--init_from`` and
    ``--new_params_lr_scale``) those the source lacks, at ``new_params_lr_scale`` times it. A new class embedding
    that starts at zero gets gradients that are small and noisy beside the trained network's, so at the common rate
    it barely moves. Measured on MNIST-5k (the bundled NCML model made conditional, batch 32, lr 3e-4): at scale 1 its
    rows had norms of 0.03 after 1,100 steps and the exact Bayes classifier was at chance; at scale 100 after 1,500
    steps, norms of about 1.1, Bayes accuracy 26 % and 35 % of unguided samples of the requested digit. A warm
    start is therefore no substitute for training a class-conditional model from scratch."""
    new = set(new_parameter_names(model, args.init_from)) if args.init_from and args.new_params_lr_scale != 1 else set()
    groups = [{"params": [p for n, p in model.named_parameters() if n not in new], "lr_scale": 1.0}]
    if new:
        groups.append({"params": [p for n, p in model.named_parameters() if n in new],
                       "lr_scale": args.new_params_lr_scale})
    return groups


def new_parameter_names(model: ARBackbone, path_or_repo_id: str) -> list[str]:
    """Parameters of ``model`` that ``init_weights`` does not take from ``path_or_repo_id``."""
    source = set(source_backbone(model, path_or_repo_id).state_dict())
    return sorted(n for n, _ in model.named_parameters() if n not in source)


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    model: ARBackbone  # the trained (unwrapped) model
    ema_model: ARBackbone  # a copy holding the EMA weights
    step: int
    metrics: dict  # the last evaluation


def main(argv: list[str] | None = None) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    # 1. everything that can be wrong with the inputs is checked before the Accelerator starts
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO)
    args, config = parse_args(argv)
    model, scheduler, loss_fn = build_components(config, args)
    data = load_data(args, model)
    output_dir = Path(args.output_dir)
    meta = checkpoint_meta(model, scheduler, loss_fn)
    resume = resolve_resume(args.resume_from_checkpoint, output_dir, meta)

    # 2. Accelerate: processes, device, mixed precision, trackers
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps, mixed_precision=args.mixed_precision,
        log_with=trackers(args.report_to),
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")))
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    if world != _world_size():
        raise RuntimeError(f"WORLD_SIZE={_world_size()} but Accelerate runs {world} processes")
    if accelerator.is_main_process:
        if args.push_to_hub:
            check_hub_repo(hub_repo_id(args))
        output_dir.mkdir(parents=True, exist_ok=True)
        if accelerator.log_with:
            accelerator.init_trackers("train_ncml", config={k: v for k, v in dataclasses.asdict(args).items()
                                                            if isinstance(v, (int, float, str, bool))})
    set_seed(args.seed, device_specific=True)  # dropout: a different stream per process, restored on resume

    # 3. optimizer and EMA; a checkpoint holds them, the live weights and every process's RNGs
    optimizer = torch.optim.Adam(parameter_groups(model, args), lr=args.learning_rate,
                                 betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay)
    # the EMA copy is made before prepare(): evaluation and the release run in float32, outside autocast
    ema_model = copy.deepcopy(model).eval().requires_grad_(False).to(device)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    ema = EMA(unwrapped, args.ema_decay)
    state = {"model": unwrapped, "optimizer": optimizer, "ema": ema}
    total_batch = args.train_batch_size * world * args.gradient_accumulation_steps
    meta["data"] = {"seed": args.seed, "train_batch_size": args.train_batch_size, "num_processes": world,
                    "gradient_accumulation_steps": args.gradient_accumulation_steps, "examples_per_step": total_batch}
    step = 0
    if resume is not None:
        resume_path, resume_meta = resume
        step = load_checkpoint(resume_path, resume_meta, accelerator, **state)
        logger.info(f"resumed from {resume_path} at step {step}")
        if resume_meta.get("loss") != meta["loss"]:
            logger.warning(f"resuming {resume_path} with a different loss config: {resume_meta.get('loss')} -> "
                           f"{meta['loss']}")
        saved = {k: v for k, v in resume_meta.get("data", meta["data"]).items() if k in meta["data"]}
        if saved != meta["data"]:
            logger.warning(f"the batch layout changed ({saved} -> {meta['data']}): training continues, but not as "
                           "the interrupted run would have")
    elif args.resume_from_checkpoint == "latest":
        logger.info(f"--resume_from_checkpoint latest: no checkpoint in {output_dir}, starting a new run")
    metrics_file = output_dir / "logs" / "metrics.jsonl"
    if accelerator.is_main_process:
        drop_metrics_after(metrics_file, step)  # the steps after the checkpoint run (and are logged) again

    def log(row: dict, step: int) -> None:
        accelerator.log(row, step=step)
        if accelerator.is_main_process:
            metrics_file.parent.mkdir(parents=True, exist_ok=True)
            with open(metrics_file, "a") as f:
                f.write(json.dumps({"step": step, **row}) + "\n")

    conditional = unwrapped.config.num_classes is not None

    def evaluate(step: int) -> dict:
        """EMA weights: held-out bits/dim at t = 0 and t = f·T (the same noise every time), a grid of AR samples;
        for a class-conditional model also the held-out accuracy of its Bayes classifier at t = 0 (K passes)."""
        result = {}
        if accelerator.is_main_process:
            ema.copy_to(ema_model)
            labels = data.eval_labels if conditional else None
            for t in [0.0] + [f * scheduler.t_max for f in args.eval_t_fractions]:
                noised = dict(noised=True, scheduler=scheduler, generator=torch.Generator().manual_seed(args.seed))
                result[f"eval/bpd_t={t:.4g}"] = bits_per_dim(
                    ema_model, data.eval_images, t, class_labels=labels, batch_size=args.eval_batch_size,
                    progress=False, **(noised if t > 0 else {})).mean
            if conditional:  # the exact Bayes classifier argmax_y p(x | y) on the held-out images, uniform prior
                log_post = class_posterior(ema_model, data.eval_images, 0.0, batch_size=args.eval_batch_size,
                                           progress=False)
                hits = log_post.argmax(1).numpy() == data.eval_labels
                result["eval/bayes_accuracy_t=0"] = float(hits.mean())
            if args.num_sample_images:
                n = args.num_sample_images
                sample_labels = torch.arange(n, device=device) % ema_model.config.num_classes if conditional else None
                gen = torch.Generator(device=device).manual_seed(args.seed)
                x = ema_model.sample(n, 0.0, sample_labels, generator=gen)
                # t = 0 samples lie on the model's grid; 8 bits spread its 2^num_bits levels over 0 … 255
                grid = make_grid(to_uint8(x, num_bits=8), padding=0)
                hub_utils.atomic_write(output_dir / "samples" / f"step-{step}.png", lambda f: grid.save(f, "PNG"))
                log_sample_grid(accelerator, grid, step)
            log(result, step)
            logger.info(f"step {step}: " + ", ".join(f"{k[5:]} {v:.4f}" for k, v in result.items()))  # k: eval/…
        accelerator.wait_for_everyone()
        return result

    # 4. the loop: micro-batch k of step s is a pure function of (seed, s, k), so a resumed run continues exactly
    logger.info(f"training {type(unwrapped).__name__} ({unwrapped.num_parameters():,} parameters) on "
                f"{data.name}: {len(data.train_images)} images, {total_batch} per step ({args.train_batch_size} × "
                f"{world} processes × {args.gradient_accumulation_steps} accumulation), {type(scheduler).__name__}, "
                f"{loss_fn.config}")
    progress = tqdm(range(args.max_train_steps), initial=step, desc="train", dynamic_ncols=True,
                    disable=not accelerator.is_local_main_process)
    metrics: dict = {}
    # sums since the last log row, this process: negative log-likelihood (bits/dim) and examples, clean (t = 0) and
    # noisy apart; wall time and images of the training steps (evaluation and checkpoints excluded)
    window = {k: torch.zeros((), device=device) for k in ("nll_clean", "num_clean", "nll_noisy", "num_noisy",
                                                                   "classifier_nll", "num_classified")}
    window_seconds, window_images = 0.0, 0
    model.train()
    while step < args.max_train_steps:
        step_start = time.perf_counter()
        for micro in range(args.gradient_accumulation_steps):
            idx, numbers = batch_positions(step * args.gradient_accumulation_steps + micro, args,
                                           len(data.train_images), world, rank)
            images = augment_batch(data.train_images, idx, numbers, seed=args.seed, size=unwrapped.config.sample_size,
                                   random_flip=args.random_flip)  # = train_images[idx] without crops and flips
            x0 = to_model_space(images, num_bits=unwrapped.config.num_bits).to(device)
            labels = torch.from_numpy(data.train_labels[idx]).to(device) if conditional else None
            with accelerator.accumulate(model):
                out = loss_fn(model, scheduler, x0, labels, generator=example_generators(args.seed, numbers, device))
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    if args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    for group in optimizer.param_groups:
                        group["lr"] = learning_rate_at(step, args) * group["lr_scale"]
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            nll, clean = out.nll_per_dim.detach(), out.t == 0
            window["nll_clean"] += nll[clean].sum()
            window["num_clean"] += clean.sum()
            window["nll_noisy"] += nll[~clean].sum()
            window["num_noisy"] += (~clean).sum()
            if out.classifier_nll is not None:
                window["classifier_nll"] += out.classifier_nll.detach().sum()
                window["num_classified"] += len(out.classifier_nll)
        if not torch.isfinite(window["nll_clean"] + window["nll_noisy"] + window["classifier_nll"]):
            raise FloatingPointError(f"non-finite loss at step {step} (try --mixed_precision no or a lower "
                                     "--learning_rate)")
        ema.update(unwrapped)
        step += 1
        progress.update(1)
        window_images += total_batch
        window_seconds += time.perf_counter() - step_start

        if step % args.logging_steps == 0 or step == args.max_train_steps:
            totals = dict(zip(window, accelerator.reduce(torch.stack(list(window.values())), reduction="sum").tolist()))
            row = {"train/loss": (totals["nll_clean"] + totals["nll_noisy"]) /
                   max(1, totals["num_clean"] + totals["num_noisy"]),
                   "lr": learning_rate_at(step - 1, args), "images_per_s": window_images / window_seconds}
            if totals["num_clean"]:
                row["train/loss_t0"] = totals["nll_clean"] / totals["num_clean"]
            if totals["num_noisy"]:
                row["train/loss_noisy"] = totals["nll_noisy"] / totals["num_noisy"]
            if totals["num_classified"]:  # −log p(y | x_t), nats per scored example
                row["train/classifier_loss"] = totals["classifier_nll"] / totals["num_classified"]
            log(row, step)
            progress.set_postfix(loss=f"{row['train/loss']:.3f}", lr=f"{row['lr']:.2e}")
            for v in window.values():
                v.zero_()
            window_seconds, window_images = 0.0, 0
        if args.eval_steps and step % args.eval_steps == 0 and step != args.max_train_steps:
            metrics = evaluate(step)
        if args.checkpointing_steps and step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, output_dir, step, meta, args.checkpoints_total_limit, **state)
    progress.close()

    # 5. the end: a final evaluation, a checkpoint, and the release pipeline of the EMA weights
    metrics = evaluate(step)
    if not (args.checkpointing_steps and step % args.checkpointing_steps == 0):
        save_checkpoint(accelerator, output_dir, step, meta, args.checkpoints_total_limit, **state)
    if accelerator.is_main_process:
        save_release(ema_model, scheduler, loss_fn, data, metrics, args, step, world)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    ema.copy_to(ema_model)
    return TrainResult(model=unwrapped, ema_model=ema_model, step=step, metrics=metrics)


def learning_rate_at(step: int, args: TrainingConfig) -> float:
    """Linear warmup over ``lr_warmup_steps``, then constant or cosine to 0 at ``max_train_steps``."""
    if step < args.lr_warmup_steps:
        return args.learning_rate * (step + 1) / args.lr_warmup_steps
    if args.lr_scheduler == "cosine":
        progress = (step - args.lr_warmup_steps) / max(1, args.max_train_steps - args.lr_warmup_steps)
        return args.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))
    return args.learning_rate


def save_release(ema_model: ARBackbone, scheduler: SDEScheduler, loss_fn: NCMLLoss, data: Data, metrics: dict,
                 args: TrainingConfig, step: int, num_processes: int) -> None:
    """The EMA weights as a pipeline folder in ``--output_dir`` with a model card; uploaded with ``--push_to_hub``."""
    from ncml.pipelines import NCMLClassConditionalPipeline, NCMLPipeline

    conditional = ema_model.config.num_classes is not None
    pipe = (NCMLClassConditionalPipeline if conditional else NCMLPipeline)(backbone=ema_model, scheduler=scheduler)
    mle = loss_fn.config.clean_fraction == 1  # t = 0 always: the plain maximum-likelihood baseline
    pipe.set_model_card(
        datasets=[data.name] if args.dataset or (args.dataset_name and not Path(args.dataset_name).exists()) else None,
        metrics={k.removeprefix("eval/"): f"{v:.4f}" for k, v in metrics.items()},
        description="\n".join([
            f"A `{type(ema_model).__name__}` trained by "
            f"{'plain maximum likelihood (clean_fraction=1)' if mle else 'noise conditional maximum likelihood'} "
            f"on `{data.name}` with `examples/train_ncml.py`.", "",
            "## Training", "",
            f"- dataset: `{data.name}` ({len(data.train_images)} train / {len(data.eval_images)} held-out images)",
            f"- steps: {step}, batch {args.train_batch_size} × {num_processes} processes × "
            f"{args.gradient_accumulation_steps} accumulation, learning rate {args.learning_rate}, "
            f"EMA decay {args.ema_decay}",
            f"- SDE: `{type(scheduler).__name__}` (T = {scheduler.t_max}); loss: `{loss_fn.config}`",
            "- bits/dim: held-out negative log-likelihood per dimension (t = 0: discretized, exact; t > 0: density of "
            "x_t plus log Δ), EMA weights."]
            + (["- bayes_accuracy_t=0: the fraction of held-out images whose label is argmax_y p(x | y) at t = 0 "
                "(uniform prior)."] if conditional else [])))
    output_dir = Path(args.output_dir)
    (output_dir / "README.md").unlink(missing_ok=True)  # save_pretrained keeps an existing card: this run's replaces it
    pipe.save_pretrained(output_dir)
    if args.push_to_hub:
        try:
            pipe.push_to_hub(hub_repo_id(args), commit_message="Upload NCML model trained with examples/train_ncml.py")
        except hub_utils.HubConnectionError as e:
            raise hub_utils.HubConnectionError(f"{e}. The trained pipeline is saved in {output_dir}: upload it later "
                                               "with its push_to_hub") from e
        logger.info(f"uploaded {output_dir}'s pipeline to the Hub repo {hub_repo_id(args)}")


def hub_repo_id(args: TrainingConfig) -> str:
    return args.hub_model_id or Path(args.output_dir).resolve().name


# ---------------------------------------------------------------------------------------------------------------
# data: uint8 (N, H, W, C) arrays, checked against the model before anything runs, and their order
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Data:
    train_images: np.ndarray | list[np.ndarray]  # uint8 (N, S, S, C); a list of larger (H, W, C) for random crops
    train_labels: np.ndarray  # int64 (N,)
    eval_images: np.ndarray  # uint8 (N, S, S, C)
    eval_labels: np.ndarray
    name: str  # for the model card


def load_data(args: TrainingConfig, model: ARBackbone) -> Data:
    """The training and held-out images at the model's size, channels and bits, checked before anything runs.

    Bundled datasets keep their size unless ``--resolution`` is given; a folder or a 🤗 dataset is always
    converted to the model's channels, resized (shorter side) and cropped to its ``sample_size``.
    """
    cfg = model.config
    size, channels = cfg.sample_size, cfg.in_channels
    crop = dict(channels=channels, resolution=size, center_crop=args.center_crop)
    if args.dataset is not None:
        source, name = f"--dataset {args.dataset}", args.dataset
        tr_x, tr_y = load_dataset(args.dataset, "train", exclude_validation=args.validation_split)
        ev_x, ev_y = load_dataset(args.dataset, "validation" if args.validation_split else "test")
        _, h, w, c = tr_x.shape
        if c != channels:
            raise ValueError(f"{source}: images have {c} channel(s) but the model config has in_channels={channels}")
        if (h, w) != (size, size):
            if args.resolution is None:
                raise ValueError(f"{source}: images are {h}×{w} but the model config has sample_size={size} (pass "
                                 f"--resolution {size} to resize them, or use a config for {h}×{w} images; "
                                 "examples/configs has one for every bundled dataset)")
            tr_x, ev_x = prepare_images(tr_x, **crop), prepare_images(ev_x, **{**crop, "center_crop": True})
    elif args.train_data_dir is not None:
        source, name = f"--train_data_dir {args.train_data_dir}", Path(args.train_data_dir).name
        try:
            folder = ImageFolder(args.train_data_dir, labels="folders" if cfg.num_classes else None, convert=True,
                                 **crop)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from e
        (tr_x, tr_y), (ev_x, ev_y) = held_out_split(folder.images, folder.labels, source)
    else:
        source = f"--dataset_name {args.dataset_name}"
        name = args.dataset_name if not Path(args.dataset_name).exists() else Path(args.dataset_name).name
        try:
            (tr_x, tr_y), (ev_x, ev_y) = load_hf_data(args, cfg)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e
        except ImportError as e:
            raise ImportError(f"{source}: {e}") from e
    ev_x = stack_images(ev_x, size)
    if cfg.num_classes is not None and max(tr_y.max(), ev_y.max()) >= cfg.num_classes:
        raise ValueError(f"{source}: labels go up to {max(tr_y.max(), ev_y.max())} but num_classes={cfg.num_classes}")
    global_batch = args.train_batch_size * _world_size()
    if len(tr_x) < global_batch:
        raise ValueError(f"{source}: {len(tr_x)} training images, fewer than one batch of {global_batch} "
                         f"(--train_batch_size × processes)")
    if cfg.num_bits < 8:  # keep the top num_bits bits: levels 0 … 2^bits − 1
        shift = 8 - cfg.num_bits
        tr_x = tr_x >> shift if isinstance(tr_x, np.ndarray) else [a >> shift for a in tr_x]
        ev_x = ev_x >> shift
    return Data(tr_x, tr_y, ev_x[: args.eval_max_images], ev_y[: args.eval_max_images], name)


def load_hf_data(args: TrainingConfig, cfg) -> tuple[tuple, tuple]:
    """``--dataset_name``: (train images, labels) and (held-out images, labels): its validation or test split, else
    a fixed 10 % of its training split."""
    splits = load_hf_splits(args.dataset_name, args.dataset_config_name)
    train, held_out = train_and_eval_splits(splits)
    columns = splits[train].column_names
    if cfg.num_classes is None:
        if args.class_column is not None:
            raise ValueError(f"--class_column {args.class_column}: the model is unconditional (num_classes=null)")
        class_column = None
    else:
        class_column = args.class_column or ("label" if "label" in columns else None)
        if class_column is None:
            raise ValueError(f"the model is class-conditional (num_classes={cfg.num_classes}): name the class column "
                             f"with --class_column (the columns are {columns})")

    def read(split: str, center_crop: bool, classes=None):
        dataset = splits[split]
        try:
            images = hf_images(dataset, args.image_column, channels=cfg.in_channels, resolution=cfg.sample_size,
                               center_crop=center_crop)
            if class_column is None:
                return images, np.zeros(len(dataset), dtype=np.int64), None
            return images, *hf_labels(dataset, class_column, classes)
        except ValueError as e:
            raise ValueError(f"split {split!r}: {e}") from e

    tr_x, tr_y, classes = read(train, args.center_crop)
    if held_out is None:
        return held_out_split(tr_x, tr_y, f"--dataset_name {args.dataset_name}")
    ev_x, ev_y, _ = read(held_out, True, classes)
    return (tr_x, tr_y), (ev_x, ev_y)


def held_out_split(images, labels: np.ndarray, source: str) -> tuple[tuple, tuple]:
    """A fixed 10 % of the images (a permutation seeded 0) held out for evaluation: (train, held out) pairs."""
    if len(images) < 2:
        raise ValueError(f"{source}: needs at least 2 images (one is held out), found {len(images)}")
    order = np.random.default_rng(0).permutation(len(images))
    n_eval = max(1, int(round(HOLDOUT_FRACTION * len(images))))
    ev, tr = np.sort(order[:n_eval]), np.sort(order[n_eval:])

    def take(idx):
        return images[idx] if isinstance(images, np.ndarray) else [images[i] for i in idx]

    return (take(tr), labels[tr]), (take(ev), labels[ev])


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))  # known before the Accelerator exists


def batch_positions(micro_step: int, args, num_train: int, num_processes: int,
                    rank: int) -> tuple[np.ndarray, np.ndarray]:
    """This process's micro-batch: (indices into the training set (B,), global example numbers (B,))."""
    per_micro = args.train_batch_size * num_processes
    per_epoch = num_train // per_micro
    epoch, k = divmod(micro_step, per_epoch)
    perm = np.random.default_rng([args.seed, epoch]).permutation(num_train)
    start = k * per_micro + rank * args.train_batch_size
    positions = np.arange(start, start + args.train_batch_size)
    return perm[positions], micro_step * per_micro + rank * args.train_batch_size + np.arange(args.train_batch_size)


def example_generators(seed: int, example_numbers: np.ndarray, device) -> list[torch.Generator]:
    """One generator per example, seeded by (seed, global example number): the draws of t and ε per example."""
    states = [np.random.SeedSequence([seed, int(n)]).generate_state(1, np.uint64)[0] >> np.uint64(1)
              for n in example_numbers]
    return [torch.Generator(device=device).manual_seed(int(s)) for s in states]


if __name__ == "__main__":
    main()
