"""``ModelMixin``: a ``torch.nn.Module`` with a typed config and safetensors weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import hub_utils
from ..configuration_utils import ConfigMixin

WEIGHTS_NAME = "model.safetensors"


class ModelMixin(nn.Module, ConfigMixin):
    """Base of every ncml network. Weights are safetensors only and load strictly.

    ``save_pretrained(dir)`` writes ``config.json`` and ``model.safetensors`` (atomically);
    ``from_pretrained`` refuses pickled checkpoints, a missing or damaged weights file, and any missing, unexpected,
    mis-shaped, wrongly typed (e.g. int32 for a float parameter) or non-finite (NaN/inf) tensor.
    """

    weights_name = WEIGHTS_NAME

    def _save_state(self, folder: Path) -> None:
        from safetensors.torch import save

        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.state_dict().items()}
        blob = save(state, metadata={"format": "pt", "class": type(self).__name__})
        hub_utils.atomic_write(Path(folder) / self.weights_name, lambda f: f.write(blob))

    def _load_state(self, folder: Path) -> None:
        hub_utils.refuse_pickles(Path(folder), self.weights_name)
        self.load_state_dict(load_safetensors(Path(folder) / self.weights_name), strict=True)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Strict by default; mismatches raise ``ValueError`` naming the keys.

        Every tensor must have the model's shape and the same kind of dtype (floating point for floating point,
        other dtypes exactly: an int32 tensor is never cast into a float parameter); floating-point tensors must be
        finite. Precision may differ (float16 weights load into a float32 model).
        """
        own = self.state_dict()
        if strict:
            missing = sorted(set(own) - set(state_dict))
            unexpected = sorted(set(state_dict) - set(own))
            if missing or unexpected:
                raise ValueError(f"state_dict does not match {type(self).__name__}: missing {missing[:8]}"
                                 f"{'…' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                                 f"{'…' if len(unexpected) > 8 else ''}")
        for k, v in state_dict.items():
            if k not in own:
                continue
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"state_dict[{k!r}] must be a tensor, got {type(v).__name__}")
            if own[k].shape != v.shape:
                raise ValueError(f"state_dict[{k!r}] has shape {tuple(v.shape)}, model expects {tuple(own[k].shape)}")
            expected = own[k].dtype
            if v.dtype != expected and not (v.dtype.is_floating_point and expected.is_floating_point):
                raise ValueError(f"state_dict[{k!r}] has dtype {v.dtype}, model expects {expected}"
                                 f"{' (a floating-point tensor)' if expected.is_floating_point else ''}")
            if v.dtype.is_floating_point and not bool(torch.isfinite(v).all()):
                nan, inf = int(torch.isnan(v).sum()), int(torch.isinf(v).sum())
                raise ValueError(f"state_dict[{k!r}] holds {nan} NaN and {inf} ±inf value(s); weights must be finite")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path``; ``ValueError`` naming the file if it is truncated or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is truncated or corrupt: not a readable safetensors file ({e})") from e
