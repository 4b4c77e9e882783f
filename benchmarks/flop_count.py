"""FLOP counting for the benchmarks: ``torch.utils.flop_counter.FlopCounterMode`` plus PyTorch's CPU attention kernel.

``FlopCounterMode`` counts the matrix products of a run — convolutions, ``mm``/``addmm``/``bmm`` and scaled
dot-product attention, forward and backward — at 2 FLOPs per multiply-add; elementwise work (activations, norms,
the likelihood head) is not counted. Its attention formulas cover the CUDA kernels (flash, memory-efficient, cuDNN)
but not the CPU one (``_scaled_dot_product_flash_attention_for_cpu``), which :func:`counter` adds with the same
formulas. Causal attention is counted dense (``Q·Kᵀ`` and ``P·V`` over all ``L × L`` pairs), as the formulas do,
although a causal kernel may skip the masked half.
"""

from __future__ import annotations

import torch
from torch.utils import flop_counter


def counter() -> flop_counter.FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts the CPU attention kernel (forward and backward)."""
    aten = torch.ops.aten
    custom = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):  # same arguments as the CUDA flash kernels
        custom[aten._scaled_dot_product_flash_attention_for_cpu] = _as_registered(
            aten._scaled_dot_product_flash_attention)
        custom[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _as_registered(
            aten._scaled_dot_product_flash_attention_backward)
    return flop_counter.FlopCounterMode(display=False, custom_mapping=custom)


def _as_registered(op):
    """The formula registered for ``op``, marked as taking the raw arguments (it converts them itself)."""
    formula = flop_counter.flop_registry[op]

    def count(*args, **kwargs):
        return formula(*args, **kwargs)

    count._get_raw = True
    return count


def module_flops(mode: flop_counter.FlopCounterMode, model: torch.nn.Module, module_class: type) -> int:
    """FLOPs counted inside the modules of ``model`` that are instances of ``module_class`` (not nested in one
    another), from a run under ``mode``."""
    counts = mode.get_flop_counts()
    root = type(model).__name__
    names = [name for name, module in model.named_modules() if isinstance(module, module_class)]
    outer = [n for n in names if not any(n != m and n.startswith(m + ".") for m in names)]
    return sum(sum(counts.get(f"{root}.{name}", {}).values()) for name in outer)
