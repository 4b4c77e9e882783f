"""An exponential moving average of a model's weights, kept in float32 beside the model."""

from __future__ import annotations

import torch

__all__ = ["EMA"]


class EMA:
    """Exponential moving average of the weights (PixelCNN++'s Polyak averaging), used for evaluation and release.

    After ``n`` updates the decay is ``min(decay, (1 + n)/(10 + n))``, so short runs are not dominated by the
    initial weights. ``shadow`` holds one float32 tensor per parameter name (buffers are not averaged);
    :func:`ncml.training.checkpointing.save_checkpoint` stores it as safetensors with ``num_updates``.

    ::

        ema = EMA(model, decay=0.9995)
        for batch in batches:
            ...; optimizer.step()
            ema.update(model)
        ema.copy_to(eval_model)  # a model of the same architecture
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {k: p.detach().clone().float() for k, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step: ``shadow ← d·shadow + (1 − d)·weights``."""
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for k, p in model.named_parameters():
            self.shadow[k].lerp_(p.detach().float(), 1 - d)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Write the averaged weights into ``model``'s parameters (cast to their dtype and device)."""
        for k, p in model.named_parameters():
            p.copy_(self.shadow[k])

    @torch.no_grad()
    def load(self, shadow: dict[str, torch.Tensor], num_updates: int) -> None:
        """Restore a saved ``shadow`` and update count; the names and shapes must be the model's parameters'."""
        missing, unexpected = sorted(set(self.shadow) - set(shadow)), sorted(set(shadow) - set(self.shadow))
        if missing or unexpected:
            raise ValueError(f"the EMA weights do not match the model's parameters (missing: {missing}, "
                             f"unexpected: {unexpected})")
        if isinstance(num_updates, bool) or not isinstance(num_updates, int) or num_updates < 0:
            raise ValueError(f"the EMA update count must be an int >= 0, got {num_updates!r}")
        for k, v in shadow.items():
            if v.shape != self.shadow[k].shape:
                raise ValueError(f"EMA weight {k!r} has shape {tuple(v.shape)}, the model's parameter "
                                 f"{tuple(self.shadow[k].shape)}")
            self.shadow[k].copy_(v)
        self.num_updates = num_updates
