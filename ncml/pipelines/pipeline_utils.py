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

This module also holds what the three NCML pipelines share: the output dataclass, the argument checks and
the conversion of the final sample to PIL / numpy / tensor.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm
from tqdm.std import tqdm as std_tqdm  # the signature that lists tqdm's options

from .. import hub_utils
from ..configuration_utils import register_class, resolve_class
from ..data import to_model_space, to_uint8
from ..models.autoregressive import ARBackbone
from ..schedulers.scheduling_utils import SDEScheduler
from .sampling_config import SamplingConfig

MODEL_INDEX_NAME = "model_index.json"
OUTPUT_TYPES = ("pil", "np", "pt")


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
        """Components are type-checked whenever they are set: in ``__init__`` and by ``pipe.scheduler = ...``."""
        if name in self.component_bases:
            check_component(name, value, self.component_bases[name])
        super().__setattr__(name, value)

    @property
    def components(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.component_bases}

    @property
    def config(self) -> types.MappingProxyType:
        """What ``model_index.json`` holds, read-only: ``_class_name``, ``_ncml_version`` and, per component, its
        ``(library, class name)`` (like diffusers' ``pipe.config``). Each component's own settings are in
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
        """Write ``model_index.json``, one subfolder per component and a model card ``README.md``.

        An existing ``README.md`` (e.g. a card with metrics written after training) is kept.
        """
        if push_to_hub and repo_id is None:
            raise ValueError("repo_id is required when push_to_hub=True")
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in self.components.items():
            value.save_pretrained(folder / name)
        hub_utils.write_json(folder / MODEL_INDEX_NAME, self._model_index())
        self.sampling_config.save(folder)
        if not (folder / "README.md").exists():
            hub_utils.atomic_write_text(folder / "README.md", self._model_card())
        if push_to_hub:
            self.push_to_hub(repo_id)

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
                        **components) -> Pipeline:
        """Load from a local folder or a Hub repo id (from the local cache when ``HF_HUB_OFFLINE=1``).

        ``components`` replace saved ones by name, e.g. ``scheduler=VESDEScheduler()``; an unknown name raises
        ``TypeError``. Called on ``Pipeline`` itself, the class is the one named in ``model_index.json``;
        called on a concrete pipeline class, that class is built from the saved components.
        ``model_index.json`` may hold only that class's components and metadata keys starting with ``_``; any other
        key raises ``ValueError``. ``subfolder`` must lie inside the folder.
        ``torch_dtype`` (a floating-point ``torch.dtype``, e.g. ``torch.float16``) and ``device`` (e.g. ``"cuda"``)
        are applied to the loaded pipeline with :meth:`to`, a replacement backbone included; the saved weights are
        read as stored and then cast.
        """
        unknown = sorted(set(components) - set(cls.component_bases))
        if unknown:
            raise TypeError(f"{cls.__name__}.from_pretrained got unknown keyword argument(s) {unknown}; components "
                            f"that can be replaced: {sorted(cls.component_bases)}; options: subfolder, revision, "
                            "cache_dir, token, local_files_only, torch_dtype, device")
        torch_dtype = check_dtype(torch_dtype, argname="torch_dtype")
        device = check_device(device, argname="device")
        folder = hub_utils.resolve_folder(pretrained_model_name_or_path, subfolder=subfolder, revision=revision,
                                          cache_dir=cache_dir, token=token, local_files_only=local_files_only)
        index_path = folder / MODEL_INDEX_NAME
        if not index_path.is_file():
            raise FileNotFoundError(f"{pretrained_model_name_or_path!s} has no {MODEL_INDEX_NAME}; "
                                    "is it a pipeline folder?")
        index = hub_utils.read_json(index_path, argname=MODEL_INDEX_NAME)
        saved_name = _str_entry(index, "_class_name")
        if saved_name == cls.__name__:
            pipeline_class = cls
        else:  # another pipeline's folder (same components), or Pipeline.from_pretrained: check the name first
            saved_class = resolve_class("ncml", saved_name, Pipeline, argname=f"{MODEL_INDEX_NAME}['_class_name']")
            pipeline_class = saved_class if cls is Pipeline else cls
        known = sorted(pipeline_class.component_bases)
        extra = sorted(k for k in index if not k.startswith("_") and k not in known)
        if extra:
            raise ValueError(f"{MODEL_INDEX_NAME} in {str(pretrained_model_name_or_path)!r} names unknown "
                             f"component(s) {extra}; {pipeline_class.__name__} has the components {known}")

        loaded = {}
        for name, base in pipeline_class.component_bases.items():
            if name in components:
                loaded[name] = components[name]  # type-checked by register_components
                continue
            entry = index.get(name)
            if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
                raise ValueError(f"{MODEL_INDEX_NAME}[{name!r}] must be [library, class_name], got {entry!r}")
            component_class = resolve_class(entry[0], entry[1], base, argname=f"{MODEL_INDEX_NAME}[{name!r}]")
            loaded[name] = component_class.from_pretrained(folder / name)
        pipeline = pipeline_class(**loaded)
        pipeline.sampling_config = SamplingConfig.load(folder)
        if torch_dtype is not None or device is not None:
            pipeline.to(device, torch_dtype)
        return pipeline

    def __repr__(self) -> str:
        parts = ",\n".join(f"  {k}={v!r}" for k, v in self.components.items())
        return f"{type(self).__name__}(\n{parts}\n)"


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
