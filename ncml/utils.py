"""Small shared helpers: random draws with per-sample generators, rank-agnostic broadcasting."""

from __future__ import annotations

import torch

Generator = torch.Generator | list[torch.Generator] | None


def check_generator(generator: Generator, batch_size: int) -> None:
    if isinstance(generator, list):
        if len(generator) != batch_size:
            raise ValueError(f"generator: a list of {len(generator)} generators was given for batch size {batch_size}")
        if not all(isinstance(g, torch.Generator) for g in generator):
            raise TypeError("generator: every list entry must be a torch.Generator")
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, a list of them, or None; got {type(generator).__name__}")


def randn(shape, *, generator: Generator = None, device=None, dtype=None) -> torch.Tensor:
    """``torch.randn`` that never touches the global RNG's state when a generator is given.

    A list of generators draws sample ``i`` (the first dimension) from ``generator[i]``, so a sample
    does not depend on the batch it was drawn in.
    """
    return _draw(torch.randn, shape, generator, device, dtype)


def rand(shape, *, generator: Generator = None, device=None, dtype=None) -> torch.Tensor:
    """``torch.rand`` with the same generator conventions as :func:`randn`."""
    return _draw(torch.rand, shape, generator, device, dtype)


def _draw(fn, shape, generator, device, dtype):
    shape = tuple(shape)
    check_generator(generator, shape[0] if shape else 1)
    if isinstance(generator, list):
        return torch.cat([_draw(fn, (1, *shape[1:]), g, device, dtype) for g in generator])
    gen_device = generator.device if generator is not None else device
    out = fn(shape, generator=generator, device=gen_device, dtype=dtype)
    return out.to(device) if device is not None else out


def expand_as(coeff: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a per-sample coefficient ``(B,)`` as ``(B, 1, …, 1)`` to broadcast against ``x``."""
    return coeff.reshape(-1, *([1] * (x.ndim - 1))).to(dtype=x.dtype, device=x.device)
