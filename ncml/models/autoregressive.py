"""``ARBackbone``: the contract every autoregressive density model ``p_θ,t(x)`` in ncml satisfies.

``forward(x, t, class_labels)`` is one teacher-forced pass returning per-dimension log-likelihoods in nats,
``(B, C, H, W)``, in raster order with channels R→G→B inside a pixel. Where ``t == 0`` (per sample) this is
the log of an exact probability mass over the ``2^num_bits`` bins; where ``t > 0`` it is the continuous
density of ``x_t`` reported as ``log pdf + log Δ`` (Δ the bin width), so both read as bits/dim alike.

``score`` is ``∇ₓ Σ log_prob`` by autograd and works inside ``torch.no_grad()`` (pipelines run there).

Validation happens at the public boundary: ``log_prob``, ``score`` and ``sample`` check their inputs' values
(finite, on the data grid where ``t == 0``, labels in range; ``check_inputs``) once per call. ``forward`` checks
types and shapes only: it is the step of training and of the reference sampling loop, so it must not synchronise
with the device or branch on data (which also keeps it compilable with ``torch.compile(fullgraph=True)``).

``sample`` is one template for every backbone: it validates its arguments, lists the positions to draw (raster
order, skipping those known in every image and channel), runs either the reference loop (one full forward pass
per position) or the backbone's incremental loop (``_sample_cached``), draws every pixel from the mixture head and
shows the progress bar. ``num_sampling_evaluations(known_mask)`` is the count of network evaluations it makes.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .. import utils
from .distributions import LogisticMixture
from .modeling_utils import ModelMixin


@dataclass(frozen=True)
class BackboneOutput:
    log_prob: torch.Tensor  # (B, C, H, W) per-dimension log-likelihood, nats
    params: torch.Tensor  # raw likelihood parameters from the network (layout is the backbone's own)


#: Size limits of a backbone config, checked by :func:`check_model_size` when the config is created, i.e. before any
#: weight is allocated, so that a corrupt or malicious ``config.json`` (``nr_resnet=10**9``) fails at once with a
#: ``ValueError`` naming the field instead of exhausting memory. Both count numbers (elements), not bytes.
#: ``MAX_PARAMETERS``: learnable parameters and buffers of the model (the default is about 20× PixelCNN++'s
#: CIFAR-10 model; 4 GB in float32). ``MAX_ACTIVATIONS``: numbers one training forward pass keeps for the backward
#: pass, per image (40 GB in float32: one image would not fit a single accelerator). To allow a larger model,
#: set the environment variable ``NCML_MAX_PARAMETERS`` / ``NCML_MAX_ACTIVATIONS`` (an int; it takes precedence)
#: or assign the module attribute, e.g. ``ncml.models.autoregressive.MAX_PARAMETERS = 10**10``.
MAX_PARAMETERS = 10**9
MAX_ACTIVATIONS = 10**10

#: Largest ``|x|`` a backbone accepts where ``t > 0`` (where ``t == 0``, ``x`` lies in ``[-1, 1]``). Noisy inputs
#: are ``m(t)·x_0 + s(t)·ε`` with ``x_0`` in ``[-1, 1]`` and ``s(t)`` at most the SDE's largest noise std (VE:
#: σ_max, tens to a few thousand), so larger values are not inputs the model was trained on; float32 networks
#: overflow to inf/NaN well before float32's own limit (NCPN near 1e20). Raise it by assigning the module attribute.
MAX_INPUT_MAGNITUDE = 1e6


def size_limit(name: str) -> int:
    """The limit ``name`` (``"MAX_PARAMETERS"`` or ``"MAX_ACTIVATIONS"``): ``$NCML_<name>`` if set, else the module
    attribute. Raises ``ValueError`` naming the environment variable if it is not a positive int."""
    env = f"NCML_{name}"
    raw = os.environ.get(env)
    if raw is None:
        return int(globals()[name])
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {env} must be a positive int, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"environment variable {env} must be a positive int, got {raw!r}")
    return value


def _count(n: int) -> str:
    """``n`` for a message: exact when short, else in scientific notation (also beyond float range)."""
    if n < 10**6:
        return str(n)
    return f"{float(n):.3g}" if n.bit_length() < 1000 else f"~2^{n.bit_length() - 1}"


def check_model_size(config, estimate: Callable[..., tuple[int, int]]) -> None:
    """Raise ``ValueError`` if the model ``config`` describes would exceed :data:`MAX_PARAMETERS` or
    :data:`MAX_ACTIVATIONS` (see there for how to raise them); call it last in a config's ``__post_init__``.

    ``estimate(**fields)`` returns ``(parameters, activations per image)`` of the model as exact Python ints from the
    config fields its signature names (validated ints, or ``None``), without allocating anything. The error names
    the field that inflates the estimate most: the one whose reduction to 1 shrinks it most.
    """
    values = {name: getattr(config, name) for name in inspect.signature(estimate).parameters}
    sizes = estimate(**values)
    for index, (limit_name, what) in enumerate((("MAX_PARAMETERS", "parameters"),
                                                ("MAX_ACTIVATIONS", "activations per image"))):
        limit = size_limit(limit_name)
        if sizes[index] <= limit:
            continue
        candidates = [n for n, v in values.items() if isinstance(v, int) and not isinstance(v, bool) and v > 1]
        field = min(candidates, key=lambda n: estimate(**{**values, n: 1})[index])
        value = values[field]
        shown = str(value) if value.bit_length() <= 64 else _count(value)
        raise ValueError(
            f"{type(config).__name__}.{field}={shown} makes the model too large: about {_count(sizes[index])} "
            f"{what}, over the limit {limit_name}={_count(limit)} (nothing was allocated). If this size is intended, "
            f"raise the limit with the environment variable NCML_{limit_name} or "
            f"ncml.models.autoregressive.{limit_name}."
        )


def check_finite(name: str, x: torch.Tensor, max_magnitude: float | None = None) -> None:
    """Raise ``ValueError`` naming ``name`` if float tensor ``x`` holds NaN or ±inf, or a value with
    ``|value| > max_magnitude`` (default :data:`MAX_INPUT_MAGNITUDE`)."""
    limit = MAX_INPUT_MAGNITUDE if max_magnitude is None else max_magnitude
    magnitude = x.detach().abs()
    if bool((magnitude <= limit).all()):  # one pass; False for NaN as well
        return
    nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
    if nan or inf:
        raise ValueError(f"{name} must be finite, but it contains {nan} NaN and {inf} ±inf value(s)")
    raise ValueError(f"{name} must have |values| <= {limit:g} (MAX_INPUT_MAGNITUDE), got values up to "
                     f"{magnitude.max().item():.3g}; model-space inputs are x_0 in [-1, 1] plus SDE noise")


def check_int_field(config, name: str, lo: int, hi: int | None = None) -> None:
    """Raise unless ``config.<name>`` is an int in ``[lo, hi]``; the error names the config class and field."""
    v, where = getattr(config, name), f"{type(config).__name__}.{name}"
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{where} must be an int, got {v!r}")
    if v < lo or (hi is not None and v > hi):
        raise ValueError(f"{where} must be in [{lo}, {hi if hi is not None else '∞'}], got {v}")


def check_backbone_config(config) -> None:
    """Validate the fields every backbone config shares: sample_size, in_channels, num_bits, nr_logistic_mix,
    embedding_dim (even), dropout in [0, 1), fourier_scale > 0, num_classes (None or >= 1), and null_class if the
    config has it (a bool, True only with num_classes)."""
    name = type(config).__name__
    for field, lo, hi in (("sample_size", 1, None), ("num_bits", 1, 16), ("nr_logistic_mix", 1, None),
                          ("embedding_dim", 2, None)):
        check_int_field(config, field, lo, hi)
    if isinstance(config.in_channels, bool) or config.in_channels not in (1, 3):
        raise ValueError(f"{name}.in_channels must be 1 or 3, got {config.in_channels!r}")
    if config.embedding_dim % 2:
        raise ValueError(f"{name}.embedding_dim must be even, got {config.embedding_dim}")
    for field in ("dropout", "fourier_scale"):
        v = getattr(config, field)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(f"{name}.{field} must be a finite float, got {v!r}")
    if not 0 <= config.dropout < 1:
        raise ValueError(f"{name}.dropout must be in [0, 1), got {config.dropout}")
    if config.fourier_scale <= 0:
        raise ValueError(f"{name}.fourier_scale must be > 0, got {config.fourier_scale}")
    if config.num_classes is not None:
        check_int_field(config, "num_classes", 1)
    null_class = getattr(config, "null_class", False)  # optional for custom backbones
    if not isinstance(null_class, bool):
        raise TypeError(f"{name}.null_class must be a bool, got {null_class!r}")
    if null_class and config.num_classes is None:
        raise ValueError(f"{name}.null_class=True needs num_classes (a null class is the 'no label' of a "
                         "class-conditional model)")


def sampling(sample_fn):
    """Decorator for ``ARBackbone.sample``: runs under ``torch.no_grad()`` with dropout off (eval mode), so samples
    depend on the generator only; the module's train/eval mode is restored afterwards."""

    @functools.wraps(sample_fn)
    def wrapper(self, *args, **kwargs):
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return sample_fn(self, *args, **kwargs)
        finally:
            self.train(was_training)

    return wrapper


class ARBackbone(ModelMixin):
    """Base class of autoregressive backbones.

    Subclasses implement ``conditioning`` and ``network`` (which the shared ``forward`` composes with the
    likelihood head, and the shared ``sample`` calls once per position), and may override ``_sample_cached`` with an
    incremental loop. Their config has at least ``sample_size``, ``in_channels``, ``num_bits`` and ``num_classes``
    (``None`` = unconditional). A backbone that overrides ``forward`` or ``sample`` itself keeps their signatures
    (``sample`` takes ``progress``); pipelines count its network evaluations with ``num_sampling_evaluations``.
    """

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"config must be an {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    def forward(self, x: torch.Tensor, t, class_labels: torch.Tensor | None = None) -> BackboneOutput:
        """Teacher-forced log-likelihood per dimension.

        Args:
            x: ``(B, C, H, W)`` float; on the ``2^num_bits`` grid of ``[-1, 1]`` where ``t == 0``, any real value
                (``x_t``) where ``t > 0``.
            t: SDE time, float or ``(B,)``.
            class_labels: ``(B,)`` int64 in ``[0, num_classes)``, required iff the model is class-conditional.

        Returns:
            ``BackboneOutput(log_prob (B, C, H, W) nats, params (B, P, H, W))``: per-channel conditional log masses
            (``t == 0``) or ``log pdf + log Δ`` (``t > 0``).

        Types and shapes are checked, values are not (no host synchronisation): invalid values (NaN, off the grid
        at ``t == 0``, ``t < 0``, labels out of range) give meaningless numbers here. Use ``log_prob``/``score``, or
        call ``check_inputs`` first, where the inputs are not known to be valid.
        """
        t, class_labels = self.prepare_inputs(x, t, class_labels)
        return self.likelihood(self.network(x, self.conditioning(t, class_labels, x.dtype)), x, t)

    def conditioning(self, t: torch.Tensor, class_labels: torch.Tensor | None, dtype: torch.dtype):
        """What ``network`` is conditioned on, computed once per call from checked ``(t, class_labels)``."""
        raise NotImplementedError

    def network(self, x: torch.Tensor, conditioning) -> torch.Tensor:
        """Mixture parameters ``(B, P, H, W)``: those of pixel ``(i, j)`` depend only on pixels before it."""
        raise NotImplementedError

    # ---- sampling: one template, the incremental loop is the backbone's --------------------------------
    @sampling
    def sample(self, batch_size: int, t, class_labels=None, *, known: torch.Tensor | None = None,
               known_mask: torch.Tensor | None = None, generator: utils.Generator = None, use_cache: bool = True,
               progress: bool = True, guidance_scale: float = 0.0) -> torch.Tensor:
        """Draw ``x_t ~ p_θ,t`` ``(B, C, H, W)`` autoregressively in raster order (channels R→G→B).

        Args:
            batch_size: ``B``.
            t: SDE time, float or ``(B,)``; samples with ``t == 0`` lie on the data grid, the others are continuous.
            class_labels: ``(B,)`` ints, required iff the model is class-conditional.
            known, known_mask: ``(B, C, H, W)`` context for inpainting; where ``known_mask`` is 1 the value of
                ``known`` is kept (per channel) and later positions are conditioned on it. At ``t == 0`` kept values
                must be on the data grid. Positions known in every image and channel are not drawn.
            generator: ``torch.Generator`` or one per sample (then sample ``i`` does not depend on the batch).
            use_cache: ``True``: the backbone's incremental loop (``_sample_cached``); ``False``: the reference
                loop, one full forward pass per drawn position. Same generator → same samples (up to float rounding).
            progress: show a tqdm progress bar over the drawn positions.
            guidance_scale: ``w >= 0``; ``0`` = off. Otherwise every channel is drawn from
                ``p(x_c | x_<c, y)^(1+w) / p(x_c | x_<c)^w``, normalised (classifier-free guidance on the exact
                conditionals; needs a model with a null class, see :attr:`null_label`, and real labels). Exact on the
                data grid where ``t == 0``; at ``t > 0`` normalised numerically (:meth:`LogisticMixture.guided_sample`).
                Each step then evaluates the network on the conditional and the unconditional batch together.

        Costs :meth:`num_sampling_evaluations` network evaluations. Runs under ``torch.no_grad()`` with dropout off
        (the module's train/eval mode is restored afterwards).
        """
        x, t, class_labels, known_mask = self.start_sampling(batch_size, t, class_labels, known, known_mask, generator)
        w = self.check_guidance(guidance_scale, class_labels)
        positions = self.sampling_positions(known_mask)
        if not positions:
            return x
        clean = t == 0
        # one t for the whole batch (the usual case): a plain bool, so the mixture draw skips its per-sample masks
        draw_clean = bool(clean[0]) if bool((clean == clean[0]).all()) else clean
        loop = self._sample_cached if use_cache else self._sample_naive
        if w:  # one canvas for both halves: conditional rows, then the same images with the null label
            canvas, loop_t = torch.cat([x, x]), torch.cat([t, t])
            loop_labels = torch.cat([class_labels, torch.full_like(class_labels, self.null_label)])
        else:
            canvas, loop_t, loop_labels = x, t, class_labels
        drawn = 0
        with tqdm(total=len(positions), desc="AR sampling" + (" (cached)" if use_cache else ""),
                  disable=not progress, leave=False) as bar:
            for (i, j), params in zip(positions, loop(canvas, loop_t, loop_labels, positions)):
                if w:
                    cond, uncond = params.chunk(2)
                    mask_ij = None if known_mask is None else known_mask[:, :, i, j]
                    value = self.mixture(cond).guided_sample(
                        self.mixture(uncond), w, clean, known=x[:, :, i, j] if mask_ij is not None else None,
                        known_mask=mask_ij, generator=generator)
                    x[:, :, i, j] = value
                    canvas[:, :, i, j] = torch.cat([value, value])
                else:
                    x[:, :, i, j] = self._sample_position(params, draw_clean, x[:, :, i, j], known_mask, (i, j),
                                                          generator)
                drawn += 1
                bar.update(1)
        if drawn != len(positions):
            raise RuntimeError(f"{type(self).__name__}: the {'cached' if use_cache else 'naive'} sampling loop "
                               f"gave parameters for {drawn} of {len(positions)} positions")
        return x

    def sampling_positions(self, known_mask: torch.Tensor | None = None) -> list[tuple[int, int]]:
        """The pixels ``sample`` draws, ``(i, j)`` in raster order: every pixel but those that ``known_mask``
        ``(B, C, H, W)`` (nonzero = known) marks as known in every image and channel."""
        _, height, width = self.image_shape
        if known_mask is None:
            return [(i, j) for i in range(height) for j in range(width)]
        if not isinstance(known_mask, torch.Tensor) or known_mask.ndim != 4 \
                or tuple(known_mask.shape[1:]) != self.image_shape:
            raise ValueError(f"known_mask must have shape (B, {', '.join(map(str, self.image_shape))}), got "
                             f"{tuple(known_mask.shape) if isinstance(known_mask, torch.Tensor) else known_mask!r}")
        fully_known = known_mask.bool().all(dim=1).all(dim=0).tolist()  # (H, W)
        return [(i, j) for i in range(height) for j in range(width) if not fully_known[i][j]]

    def num_sampling_evaluations(self, known_mask: torch.Tensor | None = None, *, guided: bool = False) -> int:
        """Network evaluations ``sample`` makes with this ``known_mask``: one per drawn position (a full forward pass
        in the reference loop, an incremental step with ``use_cache=True``), two with guidance (the conditional and
        the unconditional batch); what pipelines report in ``nfe``."""
        return len(self.sampling_positions(known_mask)) * (2 if guided else 1)

    def check_guidance(self, guidance_scale, class_labels: torch.Tensor | None) -> float:
        """``guidance_scale`` as a float ``>= 0``; raises unless it is 0 or the model can be guided (a null class) and
        ``class_labels`` ``(B,)`` (checked) are real labels, not the null one."""
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) \
                or not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0 (0 = no guidance), got {guidance_scale!r}")
        if guidance_scale == 0:
            return 0.0
        if self.config.num_classes is None:
            raise ValueError(f"guidance_scale={guidance_scale}: guidance needs a class-conditional model; this one is "
                             "unconditional (config.num_classes=None)")
        if self.null_label is None:
            raise ValueError(f"guidance_scale={guidance_scale}: guidance needs the model's unconditional mode, a null "
                             "class learnt with label dropout (config.null_class=True); this model has none")
        if class_labels is None or (class_labels == self.null_label).any():
            raise ValueError(f"guidance_scale={guidance_scale}: guidance needs a real label for every image in "
                             f"class_labels (not the null label {self.null_label})")
        return float(guidance_scale)

    def guided_score(self, x: torch.Tensor, t, class_labels, guidance_scale: float) -> torch.Tensor:
        """``(1 + w)·∇ₓ log p_θ,t(x | y) − w·∇ₓ log p_θ,t(x)``, the score of the guided density
        ``∝ p(x | y)^(1+w) / p(x)^w`` (classifier-free guidance), from one batched pass over both halves; equals
        :meth:`score` for ``w = 0``. Checks as :meth:`score` and :meth:`check_guidance`."""
        t, class_labels = self.check_inputs(x, t, class_labels)
        w = self.check_guidance(guidance_scale, class_labels)
        if not w:
            return self.score(x, t, class_labels)
        null = torch.full_like(class_labels, self.null_label)
        cond, uncond = self.score(torch.cat([x, x]), torch.cat([t, t]), torch.cat([class_labels, null])).chunk(2)
        return (1 + w) * cond - w * uncond

    def _sample_naive(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None,
                      positions: list[tuple[int, int]]) -> Iterator[torch.Tensor]:
        """The reference loop: a full teacher-forced pass per position, reading the pixels drawn so far from ``x``."""
        for i, j in positions:
            yield self(x, t, class_labels).params[:, :, i, j]

    def _sample_cached(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None,
                       positions: list[tuple[int, int]]) -> Iterator[torch.Tensor]:
        """The incremental loop of ``sample(use_cache=True)``; this default is the reference loop.

        Backbones override it with a generator that yields the mixture parameters ``(B, P)`` of ``positions[0]``,
        ``positions[1]``, … in turn (``positions`` is non-empty), each computed from the pixels of the canvas ``x``
        ``(B, C, H, W)`` before it: known values are in ``x`` from the start, and when the generator resumes after
        yielding ``(i, j)`` the drawn pixel is in ``x[:, :, i, j]``. ``t`` ``(B,)`` and ``class_labels`` are
        validated. It must not draw random numbers (``sample`` draws every pixel, in both loops alike).
        """
        yield from self._sample_naive(x, t, class_labels, positions)

    # ---- derived quantities ------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, t, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` log-likelihood per dimension in nats (= ``self(x, t, class_labels).log_prob``), after
        ``check_inputs``."""
        t, class_labels = self.check_inputs(x, t, class_labels)
        return self(x, t, class_labels).log_prob

    def score(self, x: torch.Tensor, t, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """``∇ₓ log p_θ,t(x)``, shape of ``x``, after ``check_inputs``; autograd is enabled even inside
        ``torch.no_grad()``."""
        t, class_labels = self.check_inputs(x, t, class_labels)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            total = self(x, t, class_labels).log_prob.sum()
            (grad,) = torch.autograd.grad(total, x)
        return grad

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c = self.config
        return (c.in_channels, c.sample_size, c.sample_size)

    @property
    def bin_width(self) -> float:
        """Δ = 2 / (2^bits − 1): the spacing of the data grid in ``[-1, 1]``."""
        return 2.0 / (2**self.config.num_bits - 1)

    # ---- the likelihood head shared by every backbone: a logistic mixture per pixel ----------------
    def mixture(self, params: torch.Tensor) -> LogisticMixture:
        """The likelihood head over ``params`` ``(B, P, *S)`` (layout: :class:`LogisticMixture`)."""
        return LogisticMixture(params, self.config.in_channels, self.config.num_bits)

    def likelihood(self, params: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> BackboneOutput:
        """``BackboneOutput`` for network outputs ``params`` ``(B, P, H, W)`` at inputs ``x`` and times ``t`` ``(B,)``.

        ``t == 0``: log masses of the data bins; ``t > 0``: ``log pdf + log Δ``. Computed in at least float32,
        also under autocast (bf16 log-masses would lose the bits/dim's digits).
        """
        clean = t == 0
        dtype = torch.promote_types(params.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            log_prob = self.mixture(params.to(dtype)).log_prob(x.to(dtype), clean)
        log_prob = log_prob + (~clean).to(log_prob.dtype)[:, None, None, None] * math.log(self.bin_width)
        return BackboneOutput(log_prob=log_prob, params=params)

    def start_sampling(self, batch_size: int, t, class_labels, known, known_mask, generator):
        """Validate ``sample``'s arguments; return ``(x, t, class_labels, known_mask)``.

        ``x`` ``(B, C, H, W)`` holds the kept values of ``known`` and −1 (a value on every grid) elsewhere.
        """
        batch_size = self.check_batch_size(batch_size)
        utils.check_generator(generator, batch_size)
        device, dtype = self.device, self.dtype
        t = self.check_time(t, batch_size, device=device)
        class_labels = self.check_class_labels(class_labels, batch_size, device=device)
        known, known_mask = self.check_known(known, known_mask, batch_size, device=device)
        x = torch.full((batch_size, *self.image_shape), -1.0, dtype=dtype, device=device)
        if known is not None:
            x = torch.where(known_mask, known.to(dtype), x)
            try:
                self.check_inputs(x, t, class_labels)
            except ValueError as e:
                raise ValueError(f"known: the kept values are not valid model inputs: {e}") from None
        return x, t, class_labels, known_mask

    def _sample_position(self, params_ij: torch.Tensor, clean: torch.Tensor | bool, x_ij: torch.Tensor,
                         known_mask: torch.Tensor | None, position: tuple[int, int], generator) -> torch.Tensor:
        """One pixel's channels ``(B, C)`` from its parameters ``(B, P)`` (R→G→B), keeping known channels.

        Every sampler (naive or cached) draws through here, so they consume the generator identically.
        """
        mask_ij = None if known_mask is None else known_mask[:, :, position[0], position[1]]
        return self.mixture(params_ij).sample(clean, known=x_ij if mask_ij is not None else None,
                                              known_mask=mask_ij, generator=generator)

    # ---- input checks shared by every backbone ---------------------------------------------------
    # ``prepare_inputs`` and the ``*_tensor`` helpers check types and shapes only (``forward``); the ``check_*``
    # methods add the checks of values, which read the data on the host (the public boundary).
    def time_tensor(self, t, batch_size: int, *, device=None) -> torch.Tensor:
        """``t`` as a float32 tensor ``(B,)``; a Python float is broadcast. Its values are not checked."""
        if isinstance(t, bool) or not isinstance(t, (int, float, torch.Tensor)):
            raise TypeError(f"t must be a float or a tensor of shape ({batch_size},), got {type(t).__name__}")
        t = torch.as_tensor(t, dtype=torch.float32, device=device)
        if t.ndim == 0:
            t = t.expand(batch_size)
        if t.shape != (batch_size,):
            raise ValueError(f"t must be a scalar or have shape ({batch_size},), got {tuple(t.shape)}")
        return t

    def check_time(self, t, batch_size: int, *, device=None) -> torch.Tensor:
        """``t`` as a float32 tensor ``(B,)``; a Python float is broadcast. Raises on NaN, ±inf or ``t < 0``."""
        t = self.time_tensor(t, batch_size, device=device)
        if not torch.isfinite(t).all() or (t < 0).any():
            raise ValueError(f"t must be finite and >= 0, got {t.tolist()}")
        return t

    @property
    def null_label(self) -> int | None:
        """The label meaning "no label" (``num_classes``) of a model with ``config.null_class``, else ``None``.

        Such a model was trained with label dropout (``NCMLLossConfig.label_dropout``): labels replaced by the null
        label in a fraction of the examples, so one network models both ``p_θ,t(x | y)`` and ``p_θ,t(x)`` (the
        latter with the null label, or ``class_labels=None``). Guidance combines the two.
        """
        return self.config.num_classes if getattr(self.config, "null_class", False) else None

    def label_tensor(self, class_labels, batch_size: int, *, device=None) -> torch.Tensor | None:
        """Labels as an int64 tensor ``(B,)`` (int or list accepted), or ``None`` for unconditional models; given iff
        the model is class-conditional, except that a model with a null class takes ``None`` as "no label" for every
        image. Their values are not checked."""
        num_classes = self.config.num_classes
        if num_classes is None:
            if class_labels is not None:
                raise ValueError("class_labels were given but the model is unconditional (config.num_classes=None)")
            return None
        if class_labels is None:
            if self.null_label is not None:
                return torch.full((batch_size,), self.null_label, dtype=torch.long, device=device)
            raise ValueError(f"class_labels are required: the model is class-conditional with {num_classes} classes "
                             "(and no null class, so it has no unconditional mode)")
        if isinstance(class_labels, bool):
            raise TypeError("class_labels must be an int, a list of ints or an integer tensor, got bool")
        if isinstance(class_labels, int):
            class_labels = [class_labels] * batch_size
        labels = torch.as_tensor(class_labels, device=device)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(f"class_labels must be integers, got dtype {labels.dtype}")
        if labels.shape != (batch_size,):
            raise ValueError(f"class_labels must have shape ({batch_size},), got {tuple(labels.shape)}")
        return labels.long()

    def check_class_labels(self, class_labels, batch_size: int, *, device=None) -> torch.Tensor | None:
        """Labels as an int64 tensor ``(B,)`` (int or list accepted), or ``None`` for unconditional models.
        Raises unless they lie in ``[0, num_classes)``, or ``[0, num_classes]`` with a null class (the last one being
        :attr:`null_label`)."""
        labels = self.label_tensor(class_labels, batch_size, device=device)
        if labels is not None:
            top = self.config.num_classes - (self.null_label is None)
            if (labels < 0).any() or (labels > top).any():
                null = f" ({top} = no label)" if self.null_label is not None else ""
                raise ValueError(f"class_labels must lie in [0, {top}]{null}, got {labels.tolist()}")
        return labels

    def prepare_inputs(self, x: torch.Tensor, t, class_labels=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(t (B,), class_labels (B,) | None)`` for a forward pass, checking the types and shapes of the inputs only
        (no value is read: nothing synchronises with the device)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a float tensor (B, C, H, W), got {type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"x must be a floating-point tensor in model space [-1, 1], got dtype {x.dtype} "
                            "(convert uint8 images with ncml.data.to_model_space)")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.image_shape))}), got {tuple(x.shape)}")
        batch_size = x.shape[0]
        return (self.time_tensor(t, batch_size, device=x.device),
                self.label_tensor(class_labels, batch_size, device=x.device))

    def check_inputs(self, x: torch.Tensor, t, class_labels=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validate a forward pass's inputs, values included; returns ``(t (B,), class_labels (B,) | None)``.

        Beyond ``prepare_inputs``: ``x`` finite with ``|x| <=`` :data:`MAX_INPUT_MAGNITUDE`, on the
        ``2^num_bits``-level grid of ``[-1, 1]`` where ``t == 0``; ``t`` finite and ``>= 0``; labels in range.
        """
        t, class_labels = self.prepare_inputs(x, t, class_labels)
        check_finite("x", x)
        t = self.check_time(t, x.shape[0])
        clean = t == 0
        if clean.any():
            xc = x.detach()[clean]
            if (xc.abs() > 1 + 1e-6).any():
                raise ValueError("x must lie in [-1, 1] where t == 0")
            k = (xc + 1) / self.bin_width
            if ((k - k.round()).abs() > 1e-3).any():
                raise ValueError(f"x must lie on the {2 ** self.config.num_bits}-level data grid where t == 0 "
                                 "(x = 2k/(2^bits − 1) − 1); off-grid values have no probability mass")
        return t, self.check_class_labels(class_labels, x.shape[0])

    def check_known(self, known, known_mask, batch_size: int, *, device=None):
        """Validate inpainting context: both or neither; float ``known`` and 0/1 ``known_mask`` of ``(B, C, H, W)``."""
        if (known is None) != (known_mask is None):
            raise ValueError("known and known_mask must be given together")
        if known is None:
            return None, None
        shape = (batch_size, *self.image_shape)
        for name, v in (("known", known), ("known_mask", known_mask)):
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"{name} must be a tensor of shape {shape}, got {type(v).__name__}")
            if tuple(v.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(v.shape)}")
        if not known.dtype.is_floating_point:
            raise TypeError(f"known must be a float tensor in model space, got dtype {known.dtype}")
        check_finite("known", known)
        mask = known_mask.to(device=device)
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError("known_mask must hold only 0 and 1 (1 = keep)")
        return known.to(device=device), mask.bool()

    @staticmethod
    def check_batch_size(batch_size) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return batch_size


def __getattr__(name: str):
    # moved to where the other bits/dim helpers are; the old import path keeps working
    if name == "bits_per_dim_from_log_prob":
        from ..evaluation.likelihood import bits_per_dim_from_log_prob

        return bits_per_dim_from_log_prob
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
