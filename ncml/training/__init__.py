"""Pieces of a training loop that are easy to get subtly wrong, shared by ``examples/train_ncml.py`` and your own.

- :mod:`ncml.training.checkpointing`: checkpoints of safetensors and JSON only (resuming never runs code from the
  folder), written atomically with a sha256 manifest, ``latest`` resolution, pruning to the newest N, exact resume
  (the RNGs of every process, the optimizer, the EMA, the grad scaler), and reading Accelerate's ``save_state``
  checkpoints without unpickling code.
- :mod:`ncml.training.ema`: :class:`EMA`, the exponential moving average of the weights.

Nothing here imports Accelerate; process coordination goes through the ``accelerator`` object a caller passes.
"""

from .checkpointing import (CHECKPOINT_FORMAT, CHECKPOINT_META, checkpoint_meta, drop_metrics_after, get_rng_state,
                            list_checkpoints, load_checkpoint, resolve_resume, save_checkpoint, set_rng_state,
                            verify_manifest)
from .ema import EMA

__all__ = ["EMA", "CHECKPOINT_FORMAT", "CHECKPOINT_META", "checkpoint_meta", "list_checkpoints", "resolve_resume",
           "verify_manifest", "save_checkpoint", "load_checkpoint", "drop_metrics_after", "get_rng_state",
           "set_rng_state"]
