"""``Pipeline``: a backbone and a scheduler saved and loaded together as one Hub-ready folder.

On disk (= a Hub repo)::

    model_index.json            {"_class_name": "NCMLPipeline", "_ncml_version": "…",
                                 "backbone": ["ncml", "NCPNModel"], "scheduler": ["ncml", "VPSDEScheduler"]}
    backbone/                   the backbone's own save_pretrained (config.json, model.safetensors)
    scheduler/                  the scheduler's own save_pretrained (scheduler_config.json)
    sampling_config.json        the recommended sampler settings, the call defaults (``SamplingConfig``)
    README.md                   model card (library_name: ncml)

Classes named in ``model_index.json`` are looked up with :func:`ncml.configuration_utils.resolve_class` only:
ncml's own classes, or already-imported subclasses of ncml's base classes. Nothing is imported by name.

A save is atomic as a whole. Each save draws a fresh save id and writes it (``"_save_id"``) into
``model_index.json``, ``sampling_config.json`` and every component's config file. Components are written
complete into hidden folders beside their places (``.backbone.tmp-<id>/``) and swapped in whole (an atomic
exchange on Linux, two renames elsewhere), then ``sampling_config.json``, then ``model_index.json`` last; the
replaced folders are removed. Nothing else in the folder is moved, deleted or rewritten, so a pipeline can be
saved into a folder that holds other things (a training run's checkpoints and logs). Writers stage their files in
parallel but commit (swap in, write the two JSON files) one at a time, holding an advisory lock on the folder, so
the last commit wins whole; hidden folders left by an interrupted save are removed by the next one.

A loader reads everything, checks that every save id it met agrees with ``model_index.json``'s and that none
changed while it read, and otherwise retries a few times (holding a shared lock on the folder, so that a save in
progress finishes first and no new one starts) before raising :class:`ConcurrentSaveError`: a reader gets the
old pipeline or the new one, never a mix, and a save that crashed half-way leaves a folder that raises that error
until it is saved again. Folders without save ids (saved by earlier versions, or a component saved on its own)
still load; a piece without an id is not checked.

The backbone loaded from a folder remembers the scheduler it was saved with (class and ``t_max``): a pipeline
built with another one raises ``ValueError`` unless ``allow_scheduler_mismatch=True`` (:func:`check_scheduler`).

This module also holds what the three NCML pipelines share: the output dataclass, the argument checks and
the conversion of the final sample to PIL / numpy / tensor.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import inspect
import math
import os
import re
import tempfile
import time
import types
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm
from tqdm.std import tqdm as std_tqdm  # the signature that lists tqdm's options

from .. import hub_utils
from ..configuration_utils import config_to_dict, register_class, resolve_class
from ..data import to_model_space, to_uint8
from ..models.autoregressive import ARBackbone
from ..schedulers.scheduling_utils import SDEScheduler
from .sampling_config import SAMPLING_CONFIG_NAME, SamplingConfig

MODEL_INDEX_NAME = "model_index.json"
OUTPUT_TYPES = ("pil", "np", "pt")
SAVE_ID_KEY = "_save_id"  # in model_index.json, sampling_config.json and every component's config file
# pauses (seconds) between the tries of a load that met a folder being written: about 1.5 s in all
LOAD_RETRY_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.7)
# how long a retried load waits for a save in progress to finish (the writer holds the folder's lock meanwhile)
LOAD_LOCK_TIMEOUT = 60.0


class ConcurrentSaveError(RuntimeError):
    """A pipeline folder changed while it was being loaded, or holds the files of different saves.

    Another process was saving into the folder (retry when it is done), or a save was interrupted half-way (save
    the pipeline into the folder again).
    """


class _FolderChanged(Exception):
    """One load attempt met pieces of different saves (internal: the loader retries)."""


@dataclass(frozen=True)
class SavedScheduler:
    """The scheduler a backbone was saved with in a pipeline folder: what :func:`check_scheduler` compares."""

    library: str  # top-level package of the scheduler class, as in model_index.json
    class_name: str
    t_max: float
    folder: str  # where it was read

    def describe(self) -> str:
        return f"{self.class_name} (from {self.library!r}, t_max={self.t_max:g})"


# the attribute of a backbone loaded from a pipeline folder that holds its SavedScheduler
SAVED_SCHEDULER_ATTR = "_ncml_saved_scheduler"
_MISMATCH_ALLOWED: contextvars.ContextVar[bool] = contextvars.ContextVar("ncml_scheduler_mismatch_allowed",
                                                                          default=False)


def check_scheduler(backbone: Any, scheduler: Any) -> None:
    """Raise ``ValueError`` if ``backbone`` was loaded from a pipeline folder saved with a scheduler of another class
    or another ``t_max`` than ``scheduler``.

    A backbone trained under one SDE and horizon ``T`` models ``p_θ,t`` for that SDE's marginals only; under
    another its likelihoods and scores mean nothing. A backbone with no record (built in memory, or loaded on its
    own) is not checked.
    """
    saved = getattr(backbone, SAVED_SCHEDULER_ATTR, None)
    if not isinstance(saved, SavedScheduler):
        return
    cls = type(scheduler)
    library, t_max = cls.__module__.split(".")[0], float(scheduler.t_max)
    if (library, cls.__name__) == (saved.library, saved.class_name) and t_max == saved.t_max:
        return
    what = "class" if (library, cls.__name__) != (saved.library, saved.class_name) else "t_max"
    raise ValueError(
        f"scheduler mismatch: the backbone was saved in {saved.folder} with the scheduler {saved.describe()}, but "
        f"the pipeline's scheduler is {cls.__name__} (from {library!r}, t_max={t_max:g}), another {what}. A backbone "
        f"trained under one SDE and horizon t_max models p_t only for that SDE's marginals: its likelihoods, scores "
        f"and samples are meaningless under another. Use a {saved.class_name} with t_max={saved.t_max:g} (leave "
        f"`scheduler` out of from_pretrained to get the saved one), or pass allow_scheduler_mismatch=True (to "
        f"from_pretrained or the pipeline's constructor) to use this scheduler anyway")


@dataclass(frozen=True)
class NCMLPipelineOutput:
    """What a pipeline call returns (``return_dict=False`` gives the same fields as a tuple, in this order).

    images: ``list[PIL.Image]`` (``"pil"``), uint8 ``np.ndarray (B, H, W, C)`` (``"np"``), or a float32 tensor
        ``(B, C, H, W)`` in model space ``[-1, 1]`` on the data grid (``"pt"``, the uint8 images through
        :func:`ncml.data.to_model_space`, ready for ``backbone.log_prob(x, 0)``).
    nfe: network evaluations used: one per pixel position sampled in phase 1 (AR sampling; incremental with a
        cached sampler) plus the score evaluations of phase 2 (each one forward and one backward pass).
    noisy_samples: ``(B, C, H, W)`` float, the phase-1 draws ``x_{t_start}`` (continuous, in model space).
    """

    images: Any
    nfe: int
    noisy_samples: torch.Tensor

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    def keys(self) -> list[str]:
        """The field names, in order: ``["images", "nfe", "noisy_samples"]`` (so ``dict(out)`` works)."""
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, key: int | slice | str) -> Any:
        """``out["images"]`` by field name, ``out[0]`` / ``out[:2]`` by position in :meth:`to_tuple` (as in diffusers'
        outputs, where ``out[0]`` is the images)."""
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{type(self).__name__} has no field {key!r}; fields: {self.keys()}")
            return getattr(self, key)
        if isinstance(key, (int, slice)) and not isinstance(key, bool):
            return self.to_tuple()[key]
        raise TypeError(f"{type(self).__name__} indices must be a field name, an int or a slice, "
                        f"got {type(key).__name__}")

    def __iter__(self):
        """The values, as the tuple ``return_dict=False`` gives: ``images, nfe, noisy = out``."""
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return len(dataclasses.fields(self))


class Pipeline:
    """Base class of the pipelines: registered components, Hub folder I/O, device moves and progress bars.

    Subclasses declare their components in ``component_bases`` (name → required base class) and call
    ``self.register_components(...)`` in ``__init__``.
    """

    component_bases: ClassVar[dict[str, type]] = {"backbone": ARBackbone, "scheduler": SDEScheduler}
    # set by the constructors' / from_pretrained's allow_scheduler_mismatch=True: no check_scheduler
    _allow_scheduler_mismatch: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register_class(cls)  # so resolve_class finds pipeline classes named in model_index.json

    def register_components(self, **components) -> None:
        names = set(self.component_bases)
        if set(components) != names:
            raise TypeError(f"{type(self).__name__} needs exactly the components {sorted(names)}, "
                            f"got {sorted(components)}")
        for name, value in components.items():
            setattr(self, name, value)  # checked by __setattr__
        self._progress_bar_config: dict[str, Any] = {}
        self._model_card_info: dict[str, Any] = {}
        self.sampling_config = SamplingConfig()  # the call defaults; from_pretrained reads the folder's

    def __setattr__(self, name: str, value: Any) -> None:
        """Components are type-checked whenever they are set: in ``__init__`` and by ``pipe.scheduler = ...``; a
        backbone and a scheduler are also checked against each other (:func:`check_scheduler`)."""
        if name in self.component_bases:
            check_component(name, value, self.component_bases[name])
            pair = {"backbone", "scheduler"}
            if name in pair and pair <= set(self.component_bases) and not (
                    self._allow_scheduler_mismatch or _MISMATCH_ALLOWED.get()):
                other = (pair - {name}).pop()
                if other in self.__dict__:
                    components = {name: value, other: self.__dict__[other]}
                    check_scheduler(components["backbone"], components["scheduler"])
        super().__setattr__(name, value)

    @property
    def components(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.component_bases}

    @property
    def config(self) -> types.MappingProxyType:
        """What ``model_index.json`` holds, read-only: ``_class_name``, ``_ncml_version`` and, per component, its
        ``(library, class name)`` (like diffusers' ``pipe.config``); the file also holds the ``_save_id`` of the save
        that wrote it, which is not part of the config. Each component's own settings are in
        ``pipe.<component>.config``, the sampler defaults in ``pipe.sampling_config``."""
        return types.MappingProxyType({k: tuple(v) if isinstance(v, list) else v
                                       for k, v in self._model_index().items()})

    def _model_index(self) -> dict[str, Any]:
        from .. import __version__

        index: dict[str, Any] = {"_class_name": type(self).__name__, "_ncml_version": __version__}
        for name, value in self.components.items():
            index[name] = [type(value).__module__.split(".")[0], type(value).__name__]
        return index

    # ---- devices ----------------------------------------------------------------------------
    def to(self, device: str | torch.device | torch.dtype | None = None,
           dtype: torch.dtype | None = None) -> Pipeline:
        """Move the backbone (the only component with tensors) to ``device`` and/or cast it to ``dtype``; returns
        ``self``.

        As in diffusers, a dtype may be passed alone: ``pipe.to(torch.float16)`` is ``pipe.to(dtype=torch.float16)``;
        ``pipe.to("cuda", torch.float16)`` does both. ``dtype`` must be a floating-point ``torch.dtype``.
        """
        if isinstance(device, torch.dtype):
            if dtype is not None:
                raise TypeError(f"to() got two dtypes: {device} (first argument) and dtype={dtype}")
            device, dtype = None, device
        device = check_device(device, argname="device")
        dtype = check_dtype(dtype, argname="dtype")
        for value in self.components.values():
            if isinstance(value, torch.nn.Module):
                value.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.dtype

    # ---- progress bars -------------------------------------------------------------------------
    def set_progress_bar_config(self, **tqdm_kwargs) -> None:
        """Options for every progress bar of this pipeline (``tqdm`` keyword arguments; ``disable=True`` hides them)."""
        known = set(inspect.signature(std_tqdm.__init__).parameters) - {"self", "iterable", "total", "kwargs"}
        unknown = sorted(set(tqdm_kwargs) - known)
        if unknown:
            raise TypeError(f"set_progress_bar_config: unknown tqdm argument(s) {unknown}")
        self._progress_bar_config = dict(tqdm_kwargs)

    def progress_bar(self, iterable=None, *, total: int | None = None, desc: str | None = None) -> tqdm:
        config = {"desc": desc, "leave": False, **self._progress_bar_config}
        return tqdm(iterable, total=total, **config)

    @property
    def progress_bar_disabled(self) -> bool:
        return bool(self._progress_bar_config.get("disable", False))

    # ---- saving -------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, *, push_to_hub: bool = False,
                        repo_id: str | None = None) -> None:
        """Write ``model_index.json``, one subfolder per component, ``sampling_config.json`` and a model card
        ``README.md``.

        The save is atomic as a whole (see the module docstring): a process loading the folder meanwhile gets the
        old pipeline or this one, never a mix, and a crash half-way never leaves a folder that loads as a mix. Each
        component subfolder is replaced whole; nothing else in the folder is touched. An existing ``README.md``
        (e.g. a card with metrics written after training) is kept. A component whose class is defined in
        ``__main__`` gets a warning: the folder then loads only where that class is defined under the same name.
        """
        if push_to_hub and repo_id is None:
            raise ValueError("repo_id is required when push_to_hub=True")
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        for name in self.component_bases:
            target = folder / name
            if target.exists() and not target.is_dir():
                raise FileExistsError(f"{target} exists and is not a folder; the component {name!r} of "
                                      f"{type(self).__name__} is saved as a folder there")
        _warn_main_module_classes(self.components)
        self._write_folder(folder, uuid.uuid4().hex)
        if not (folder / "README.md").exists():
            hub_utils.atomic_write_text(folder / "README.md", self._model_card())
        if push_to_hub:
            self.push_to_hub(repo_id)

    def _write_folder(self, folder: Path, save_id: str) -> None:
        """Stage every component in a hidden folder beside its place (``.<name>.tmp-<save id>``, locked while this
        save uses it); then, holding the folder's lock (writers take turns; readers that retry wait), swap them in,
        write ``sampling_config.json`` and ``model_index.json`` last. The replaced folders (and, after a failure,
        the staged ones) are removed at the end, after the lock is released."""
        staged = {name: folder / f".{name}.tmp-{save_id}" for name in self.component_bases}
        replaced: list[Path] = []
        with contextlib.ExitStack() as in_use:
            try:
                with hub_utils.folder_lock(folder) as locked:  # briefly: no cleanup sees them before they are locked
                    if locked:
                        _remove_debris(folder, self.component_bases)
                    for path in staged.values():
                        path.mkdir()
                        in_use.enter_context(hub_utils.folder_lock(path, timeout=0))
                for name, value in self.components.items():  # the slow part, without the folder's lock
                    value.save_pretrained(staged[name])
                    _stamp_config(staged[name] / getattr(type(value), "config_name", "config.json"), save_id)
                    hub_utils.fsync_dir(staged[name])
                with hub_utils.folder_lock(folder):  # the commit
                    for name in list(staged):
                        old = hub_utils.swap_folder_into_place(staged[name], folder / name,
                                                               aside=folder / f".{name}.old-{save_id}")
                        del staged[name]
                        if old is not None:
                            replaced.append(old)
                    hub_utils.write_json(folder / SAMPLING_CONFIG_NAME,
                                         {SAVE_ID_KEY: save_id, **config_to_dict(self.sampling_config)})
                    hub_utils.write_json(folder / MODEL_INDEX_NAME, {**self._model_index(), SAVE_ID_KEY: save_id})
                    hub_utils.fsync_dir(folder)
            finally:
                for path in [*staged.values(), *replaced]:
                    hub_utils.remove_path(path)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str | None = None):
        """Save to a temporary folder (with its model card) and upload it with ``HfApi.upload_folder``."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            return hub_utils.upload_folder(tmp, repo_id, private=private, token=token, commit_message=commit_message)

    def set_model_card(self, *, datasets: list[str] | None = None, metrics: dict[str, Any] | None = None,
                       description: str = "") -> None:
        """What the saved/pushed model card states: datasets, metrics (e.g. bits/dim, Δlog p, FID), free text."""
        if datasets is not None and not (isinstance(datasets, list) and all(isinstance(d, str) for d in datasets)):
            raise TypeError(f"datasets must be a list of str, got {datasets!r}")
        if metrics is not None and not isinstance(metrics, dict):
            raise TypeError(f"metrics must be a dict of name -> value, got {type(metrics).__name__}")
        if not isinstance(description, str):
            raise TypeError(f"description must be a str, got {type(description).__name__}")
        self._model_card_info = {"datasets": datasets, "metrics": metrics, "description": description}

    def _model_card(self) -> str:
        name = type(self).__name__
        parts = ", ".join(f"{k}: `{type(v).__name__}`" for k, v in self.components.items())
        info = self._model_card_info
        usage = ("## Usage\n\n```python\nfrom ncml import " + name + "\n\npipe = " + name +
                 ".from_pretrained(\"<this repo id or folder>\")\n```")
        body = "\n\n".join(b for b in (info.get("description", ""), usage) if b)
        return hub_utils.model_card_text(title=name, summary=f"An ncml `{name}` ({parts}).", body=body,
                                         datasets=info.get("datasets"), metrics=info.get("metrics"))

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, subfolder: str | None = None,
                        revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                        token: str | bool | None = None, local_files_only: bool = False,
                        torch_dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                        allow_scheduler_mismatch: bool = False, **components) -> Pipeline:
        """Load from a local folder or a Hub repo id (from the local cache when ``HF_HUB_OFFLINE=1``).

        ``components`` replace saved ones by name, e.g. ``scheduler=VESDEScheduler()``; an unknown name raises
        ``TypeError``. A replacement scheduler must have the class and ``t_max`` of the one the folder was saved
        with (the backbone was trained under that SDE): another raises ``ValueError`` unless
        ``allow_scheduler_mismatch=True``, which also allows later ``pipe.scheduler = ...`` swaps on this pipeline.
        The loaded backbone remembers the folder's scheduler, so a pipeline built from it later is checked too
        (:func:`check_scheduler`). Called on ``Pipeline`` itself, the class is the one named in
        ``model_index.json``; called on a concrete pipeline class, that class is built from the saved components.
        ``model_index.json`` may hold only that class's components and metadata keys starting with ``_``; any other
        key raises ``ValueError``. ``subfolder`` must lie inside the folder.
        ``torch_dtype`` (a floating-point ``torch.dtype``, e.g. ``torch.float16``) and ``device`` (e.g. ``"cuda"``)
        are applied to the loaded pipeline with :meth:`to`, a replacement backbone included; the saved weights are
        read as stored and then cast.

        A folder that another process is saving into is read again, once that save is done, until all its pieces
        come from one save (a few tries); :class:`ConcurrentSaveError` if they never do (a save was interrupted
        half-way, or a writer that takes no lock keeps writing).
        """
        unknown = sorted(set(components) - set(cls.component_bases))
        if unknown:
            raise TypeError(f"{cls.__name__}.from_pretrained got unknown keyword argument(s) {unknown}; components "
                            f"that can be replaced: {sorted(cls.component_bases)}; options: subfolder, revision, "
                            "cache_dir, token, local_files_only, torch_dtype, device, allow_scheduler_mismatch")
        if not isinstance(allow_scheduler_mismatch, bool):
            raise TypeError(f"allow_scheduler_mismatch must be a bool, got {type(allow_scheduler_mismatch).__name__}")
        torch_dtype = check_dtype(torch_dtype, argname="torch_dtype")
        device = check_device(device, argname="device")
        folder = hub_utils.resolve_folder(pretrained_model_name_or_path, subfolder=subfolder, revision=revision,
                                          cache_dir=cache_dir, token=token, local_files_only=local_files_only)
        if not (folder / MODEL_INDEX_NAME).is_file():
            raise FileNotFoundError(f"{pretrained_model_name_or_path!s} has no {MODEL_INDEX_NAME}; "
                                    "is it a pipeline folder?")
        wait_for_writers = True
        for attempt in range(len(LOAD_RETRY_DELAYS) + 1):
            # the first read takes no lock (most folders are not being written; Hub snapshots are read-only); a
            # retry holds the folder's shared lock, so that a writer that saves again and again cannot starve it
            lock = hub_utils.folder_lock(folder, shared=True, timeout=LOAD_LOCK_TIMEOUT) \
                if attempt and wait_for_writers else contextlib.nullcontext(False)
            with lock as locked:
                if attempt and not locked:
                    wait_for_writers = False  # a writer holds on to it, or there are no locks here: just retry
                try:
                    pipeline = cls._load_once(folder, str(pretrained_model_name_or_path), components,
                                              allow_scheduler_mismatch)
                    break
                except _FolderChanged as e:
                    changed = e
            if attempt < len(LOAD_RETRY_DELAYS):
                time.sleep(LOAD_RETRY_DELAYS[attempt])
        else:
            debris = sorted(p.name for p in _save_debris(folder, cls.component_bases))
            leftovers = f"; hidden folders of unfinished saves are there: {debris}" if debris else ""
            raise ConcurrentSaveError(
                f"the pipeline folder {str(folder)!r} was being written while it was read, or holds the files of "
                f"different saves ({changed}){leftovers}. Another process is saving a pipeline into it, or a save was "
                f"interrupted half-way: load again once the save has finished; if none is running, save the pipeline "
                f"into the folder again") from changed
        if torch_dtype is not None or device is not None:
            pipeline.to(device, torch_dtype)
        return pipeline

    @classmethod
    def _load_once(cls, folder: Path, name_or_path: str, components: dict[str, Any],
                   allow_mismatch: bool) -> Pipeline:
        """One read of the folder; raises :class:`_FolderChanged` where its pieces come from different saves."""
        index = hub_utils.read_json(folder / MODEL_INDEX_NAME, argname=MODEL_INDEX_NAME)
        save_id = index.get(SAVE_ID_KEY)
        if save_id is not None and not isinstance(save_id, str):
            raise ValueError(f"{MODEL_INDEX_NAME}[{SAVE_ID_KEY!r}] must be a string, got {save_id!r}")
        saved_name = _str_entry(index, "_class_name")
        if saved_name == cls.__name__:
            pipeline_class = cls
        else:  # another pipeline's folder (same components), or Pipeline.from_pretrained: check the name first
            saved_class = resolve_class("ncml", saved_name, Pipeline, argname=f"{MODEL_INDEX_NAME}['_class_name']")
            pipeline_class = saved_class if cls is Pipeline else cls
        known = sorted(pipeline_class.component_bases)
        extra = sorted(k for k in index if not k.startswith("_") and k not in known)
        if extra:
            raise ValueError(f"{MODEL_INDEX_NAME} in {name_or_path!r} names unknown "
                             f"component(s) {extra}; {pipeline_class.__name__} has the components {known}")

        classes: dict[str, type] = {}
        config_files = {SAMPLING_CONFIG_NAME: folder / SAMPLING_CONFIG_NAME}
        for name, base in pipeline_class.component_bases.items():
            entry = index.get(name)
            if name in components:  # not loaded; its config is still read (what the backbone was saved with)
                config_files[name] = folder / name / getattr(base, "config_name", "config.json")
                continue
            if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
                raise ValueError(f"{MODEL_INDEX_NAME}[{name!r}] must be [library, class_name], got {entry!r}")
            classes[name] = resolve_class(entry[0], entry[1], base, argname=f"{MODEL_INDEX_NAME}[{name!r}]")
            config_files[name] = folder / name / getattr(classes[name], "config_name", "config.json")

        # every piece is read between two readings of its save id: the same id both times means the same file
        # (a component folder is never written in place, and ids are never reused)
        before = {name: _read_save_id(path) for name, path in config_files.items()}
        wrong = {name: i for name, i in before.items() if isinstance(i, str) and i != save_id}
        if wrong:
            raise _FolderChanged(f"{MODEL_INDEX_NAME} has save id {save_id!r}, {_describe_ids(wrong)}")
        try:
            loaded = {name: component_class.from_pretrained(folder / name)
                      for name, component_class in classes.items()}
            sampling_config = SamplingConfig.load(folder)
            saved_scheduler = _saved_scheduler(index, config_files.get("scheduler"), name_or_path)
        except Exception as e:
            after = {name: _read_save_id(path) for name, path in config_files.items()}
            if after != before:
                raise _FolderChanged(f"the folder changed while it was read: {_describe_changes(before, after)}") \
                    from e
            missing = [name for name in classes if isinstance(e, FileNotFoundError) and before[name] is _MISSING]
            if missing and _save_debris(folder, missing):
                raise _FolderChanged(f"{missing} missing, beside the hidden folders of a save") from e
            raise
        after = {name: _read_save_id(path) for name, path in config_files.items()}
        if after != before:
            raise _FolderChanged(f"the folder changed while it was read: {_describe_changes(before, after)}")

        if saved_scheduler is not None and "backbone" in loaded:
            setattr(loaded["backbone"], SAVED_SCHEDULER_ATTR, saved_scheduler)
        token = _MISMATCH_ALLOWED.set(allow_mismatch)
        try:
            pipeline = pipeline_class(**{name: components[name] if name in components else loaded[name]
                                         for name in pipeline_class.component_bases})
        finally:
            _MISMATCH_ALLOWED.reset(token)
        if allow_mismatch:
            pipeline._allow_scheduler_mismatch = True
        pipeline.sampling_config = sampling_config
        return pipeline

    def __repr__(self) -> str:
        parts = ",\n".join(f"  {k}={v!r}" for k, v in self.components.items())
        return f"{type(self).__name__}(\n{parts}\n)"


class _Marker:
    """What :func:`_read_save_id` returns for a file that is missing or unreadable (never equal to an id)."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


_MISSING, _UNREADABLE = _Marker("missing"), _Marker("unreadable")


def _read_save_id(path: Path) -> str | _Marker | None:
    """The save id in the JSON file ``path``: a string, ``None`` where the file has none (an older save, or a
    component saved on its own), or the markers for a missing or unreadable file."""
    try:
        data = hub_utils.read_json(path)
    except FileNotFoundError:
        return _MISSING
    except (OSError, ValueError):
        return _UNREADABLE
    value = data.get(SAVE_ID_KEY)
    return value if isinstance(value, str) else None


def _describe_ids(ids: dict[str, Any]) -> str:
    return ", ".join(f"{name} has save id {i!r}" for name, i in ids.items())


def _describe_changes(before: dict[str, Any], after: dict[str, Any]) -> str:
    return ", ".join(f"{name}: {before[name]!r} -> {after[name]!r}" for name in before if before[name] != after[name])


def _saved_scheduler(index: dict, config_path: Path | None, name_or_path: str) -> SavedScheduler | None:
    """What the folder's scheduler was (class from ``model_index.json``, ``t_max`` from its config), or ``None``
    where the folder does not say."""
    entry = index.get("scheduler")
    if config_path is None or not (isinstance(entry, list) and len(entry) == 2
                                   and all(isinstance(e, str) for e in entry)):
        return None
    try:
        config = hub_utils.read_json(config_path)
    except (OSError, ValueError):
        return None
    t_max = config.get("t_max")
    if isinstance(t_max, bool) or not isinstance(t_max, (int, float)):
        return None
    return SavedScheduler(library=entry[0], class_name=entry[1], t_max=float(t_max), folder=name_or_path)


def _stamp_config(path: Path, save_id: str) -> None:
    """Add the save id to a component's config file (after its ``_`` metadata keys)."""
    if not path.is_file():
        return
    data = hub_utils.read_json(path)
    meta = {k: v for k, v in data.items() if k.startswith("_") and k != SAVE_ID_KEY}
    rest = {k: v for k, v in data.items() if not k.startswith("_")}
    hub_utils.write_json(path, {**meta, SAVE_ID_KEY: save_id, **rest})


def _save_debris(folder: Path, names) -> list[Path]:
    """The hidden folders a save stages components in (``.<name>.tmp-<id>``) or moves replaced ones to
    (``.<name>.old-<id>``): in use by a running save, or left over by an interrupted one."""
    patterns = [re.compile(rf"\.{re.escape(name)}\.(tmp|old)-[0-9a-f]{{32}}") for name in names]
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if any(pattern.fullmatch(p.name) for pattern in patterns)]


def _remove_debris(folder: Path, names) -> None:
    """Remove what interrupted saves left (called holding the folder's lock). A staged folder still locked by its
    save is in use; ``.old-`` folders exist only inside a save's commit, which holds the folder's lock."""
    for path in _save_debris(folder, names):
        if ".old-" in path.name:
            hub_utils.remove_path(path)
            continue
        with hub_utils.folder_lock(path, timeout=0) as unused:
            if unused:
                hub_utils.remove_path(path)


def _warn_main_module_classes(components: dict[str, Any]) -> None:
    for name, value in components.items():
        cls = type(value)
        if cls.__module__ == "__main__":
            warnings.warn(
                f"{name} is a {cls.__name__} defined in __main__ (the script or notebook being run): "
                f"{MODEL_INDEX_NAME} records it as ['__main__', '{cls.__name__}'], so the saved folder loads only in "
                f"a process whose __main__ defines a class {cls.__name__} (a subclass of ncml's base class) before "
                f"from_pretrained, e.g. this script, not elsewhere. To make it load anywhere, move the class into a "
                f"module of an importable package, import it from there and save again", UserWarning, stacklevel=3)


def _str_entry(index: dict, key: str) -> str:
    value = index.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{MODEL_INDEX_NAME}[{key!r}] must be a class name string, got {value!r}")
    return value


def check_component(name: str, value: Any, base: type) -> None:
    """Raise ``TypeError`` unless ``value`` is a ``base``; a ``torch.compile`` wrapper gets instructions."""
    if isinstance(value, base):
        return
    if isinstance(value, torch.nn.Module) and isinstance(value._modules.get("_orig_mod"), base):
        inner = type(value._modules["_orig_mod"]).__name__
        raise TypeError(
            f"{name} must be a {base.__name__}, got a torch.compile wrapper ({type(value).__name__}) around a "
            f"{inner}. A pipeline calls {name}.sample and {name}.score, which the wrapper runs uncompiled, and saves "
            f"the module itself. Compile the module in place instead, `{name}.compile(...)` (it takes torch.compile's "
            f"options), and pass the module; or pass the unwrapped `{name}._orig_mod`")
    raise TypeError(f"{name} must be a {base.__name__}, got {type(value).__name__}")


def check_dtype(dtype, *, argname: str) -> torch.dtype | None:
    """``dtype`` if it is ``None`` or a floating-point ``torch.dtype``; else ``TypeError`` naming ``argname``."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        return dtype
    raise TypeError(f"{argname} must be a floating-point torch.dtype such as torch.float16 or torch.float32, "
                    f"got {dtype!r}")


def check_device(device, *, argname: str) -> torch.device | None:
    """``device`` (a ``str`` such as ``"cuda:0"``, an index or a ``torch.device``) as a ``torch.device``; ``None``
    stays ``None``."""
    if device is None:
        return None
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise TypeError(f"{argname} must be a str such as 'cpu' or 'cuda', a device index or a torch.device, "
                        f"got {type(device).__name__}")
    try:
        return torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{argname}={device!r} is not a device ({e})") from e


# ---- shared by the NCML pipelines ------------------------------------------------------------------
def check_t_start(t_start, scheduler: SDEScheduler) -> float:
    """``t_start`` as a float in ``[0, t_max]``; ``None`` means ``t_max / 2`` (where no sampling config says more)."""
    if t_start is None:
        return scheduler.t_max / 2
    if isinstance(t_start, torch.Tensor) and t_start.ndim == 0:
        t_start = t_start.item()
    if isinstance(t_start, bool) or not isinstance(t_start, (int, float)):
        raise TypeError(f"t_start must be a float in [0, t_max={scheduler.t_max}], got {type(t_start).__name__}")
    if not math.isfinite(t_start) or not 0 <= t_start <= scheduler.t_max:
        raise ValueError(f"t_start must lie in [0, t_max={scheduler.t_max}], got {t_start}")
    return float(t_start)


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_output_type(output_type) -> str:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    return output_type


def postprocess(sample: torch.Tensor, output_type: str, *, num_bits: int) -> Any:
    """Quantise a model-space sample ``(B, C, H, W)`` once (:func:`ncml.data.to_uint8`) and convert it."""
    images = to_uint8(sample, num_bits=num_bits)  # (B, H, W, C) uint8: the only place that clips
    if output_type == "np":
        return images
    if output_type == "pt":
        return to_model_space(images, num_bits=num_bits)
    from PIL import Image

    return [Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im) for im in images]


def as_uint8_images(images, *, argname: str, num_bits: int) -> np.ndarray:
    """Validate user images: an integer array/tensor ``(B, H, W, C)`` with values in ``[0, 2^bits − 1]``."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{argname} must be a uint8 numpy array or tensor (B, H, W, C), got {type(images).__name__}")
    if images.dtype == np.bool_ or not np.issubdtype(images.dtype, np.integer):
        raise TypeError(f"{argname} must hold integer pixel values (uint8), got dtype {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"{argname} must have shape (B, H, W, C), got {images.shape}")
    levels = 2**num_bits - 1
    if images.size and (images.min() < 0 or images.max() > levels):
        raise ValueError(f"{argname} values must lie in [0, {levels}] (uint8 with num_bits={num_bits}), "
                         f"got values in [{images.min()}, {images.max()}]")
    return images.astype(np.uint8)
