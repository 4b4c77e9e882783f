"""The noise conditional maximum likelihood (NCML) objective, paper section 4 (Eq. 7):

    L(θ) = E_{t ~ μ} E_{x_0 ~ p_data} E_{x_t ~ p_t(· | x_0)} [ −log p_θ,t(x_t) ] / (d · ln 2)     (bits/dim)

with ``x_t = m(t)·x_0 + s(t)·ε`` the exact marginal of the noising SDE (``scheduler.add_noise``).

The noise-level distribution μ
------------------------------
The paper takes μ uniform over its noise scales ``T``, ``t = 0`` included (section 4, "NCML as regularized
maximum likelihood": the ``t = 0`` term is the MLE objective, the ``t > 0`` terms a regulariser with weights
``λ_t = μ(t)/μ(0)``). With a continuum of times ``t = 0`` has measure zero, so here μ is a mixture: ``t = 0``
with probability ``clean_fraction``, otherwise a draw from ``noise_distribution`` on ``(0, T]`` (``T`` is the
scheduler's ``t_max``):

==================  =====================================  ==============================================
noise_distribution  continuous (num_noise_levels=None)     on a grid (num_noise_levels=K)
==================  =====================================  ==============================================
``"uniform"``       ``t ~ U(t_min, T]``                    ``t ~ U{T/K, 2T/K, …, T}`` (needs t_min = 0)
``"log_uniform"``   ``log t ~ U[log t_min, log T]``        ``t ~ U{K log-spaced times from t_min to T}``
==================  =====================================  ==============================================

Trade-offs. Uniform spends its examples where ``t`` is large: with ``T = 0.1`` only 10 % of the noisy
examples have ``t ≤ 0.01`` and 1 % have ``t < 10⁻³``, although two-part sampling starts its AR draw at
``t_start ≈ 0.01`` or below and the refinement scores every time down to ``t → 0``. Log-uniform spends the
same share on every decade of ``t`` (with ``t_min = 10⁻⁴, T = 0.1``: a third of the noisy examples per decade),
so the small-``t`` conditionals that sampling uses get ~10–100× more examples, at the cost of fewer at large
``t`` (which only the sanity test and OOD scores at large ``t`` use). A smaller ``T`` (the scheduler's
``t_max``) moves the whole budget to where sampling happens, but the model is then undefined above it.
``t_min`` must be > 0 for log-uniform: once ``s(t)`` is far below the bin width the continuous density of
``x_t`` is nearly singular, and ``t ≥ t_min`` keeps the sampled noise above that scale.

The default (``clean_fraction=0.5``, uniform, ``t_min = 0``) keeps the MLE term (the only one evaluated at
test time, and the one that must match a vanilla PixelCNN++) at half of every batch; the ``t > 0`` terms cost
~5× more bits/dim than the clean ones, so a small clean fraction would let them dominate the gradient. The
paper's literal "uniform over ``{0} ∪ grid``" is ``num_noise_levels=K, clean_fraction=1/(K+1)``.
``clean_fraction=1`` is exactly maximum likelihood (the discretized PixelCNN++ NLL); ``clean_fraction=0``
trains only on noisy data.

Why uniform stays the default: an ablation at equal budget on MNIST-5k (``examples/ablate_noise_levels.py``,
600-step continuations of one 6,000-step model; docs/RESULTS.md section 7) did not separate the recipes.
Log-uniform on ``[10⁻⁴, 0.1]`` gave the lowest two-part Fréchet distance on validation digits, but by less
than the bootstrap std, and a smaller ``T = 0.02`` (uniform or log-uniform) made the AR draws at
``t_start = 0.003`` and ``0.01`` worse, not better. More training moved every recipe alike.

A discriminative term for class-conditional models (``classifier_weight = α > 0``)
----------------------------------------------------------------------------------
Maximum likelihood fits ``p_θ,t(x | y)`` but not the exact Bayes classifier it implies,
``p_θ,t(y | x_t) = softmax_y log p_θ,t(x_t | y)`` (uniform prior): the likelihood of an image is dominated by its
pixel-level detail, the class changes it little relative to its size, and small relative errors flip the
decision. The hybrid objective (as in hybrid generative–discriminative models) adds the classifier's
cross-entropy on the same noisy examples, per image and on the same bits/dim scale:

    L = E[ −log p_θ,t(x_t | ỹ) ] / (d ln 2)  +  α · E[ −log p_θ,t(y | x_t) ] / (d ln 2)

(``ỹ`` the label after label dropout, ``y`` the true one). ``α = 1`` is the joint ``−log p(x_t | y) −
log p(y | x_t)``; larger ``α`` trades likelihood for the classifier. ``p_θ,t(y | x_t)`` needs ``log p_θ,t(x_t | k)``
for every class ``k``: ``K`` more teacher-forced rows per scored example, so ``classifier_examples = M`` scores only
the first ``M`` examples of each batch (the batch order is random) and a step costs ``(B + M·K)/B`` of a plain
one. All rows go through one forward call, so distributed training syncs gradients once. At ``t > 0`` the term
trains the classifier of noisy images at the matched noise level as well (``ncml.evaluation.class_posterior``).

Measured (docs/hybrid-training.md): continuing the bundled MNIST-5k conditional model for 1,000 steps with ``α = 100,
M = 8`` raised its t = 0 Bayes accuracy on 500 validation digits from 73.4 % to 92.2 % for 0.03 bits/dim, but its
unguided samples got much worse (Fréchet distance 21.5 → 87.4, label agreement 89 → 76 %): a model for
classification, not for sampling. The default ``α = 0`` is plain NCML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..configuration_utils import ConfigMixin
from ..evaluation.likelihood import bits_per_dim_from_log_prob
from ..models.autoregressive import ARBackbone
from ..schedulers.scheduling_utils import SDEScheduler
from ..utils import Generator, check_generator, expand_as, rand, randn

__all__ = ["NCMLLossConfig", "NCMLLoss", "NCMLLossOutput"]


NOISE_DISTRIBUTIONS = ("uniform", "log_uniform")


@dataclass(frozen=True)
class NCMLLossConfig:
    clean_fraction: float = 0.5  # μ({0}): probability that an example is scored clean (t = 0, plain MLE)
    noise_distribution: str = "uniform"  # law of the noisy times: "uniform" or "log_uniform" on (t_min, T]
    num_noise_levels: int | None = None  # None: continuous; K: the distribution's K-point grid (module docstring)
    t_min: float = 0.0  # lower end of the noisy times (exclusive for uniform); > 0 for log_uniform
    label_dropout: float = 0.0  # class-conditional: P(an example's label is replaced by the backbone's null label)
    classifier_weight: float = 0.0  # class-conditional: α, weight of the Bayes classifier's cross-entropy (docstring)
    classifier_examples: int | None = None  # examples per batch scored by that term (the first M); None: all

    def __post_init__(self):
        cf = self.clean_fraction
        if isinstance(cf, bool) or not isinstance(cf, (int, float)) or not 0.0 <= cf <= 1.0:
            raise ValueError(f"clean_fraction must be a number in [0, 1], got {cf!r}")
        if self.noise_distribution not in NOISE_DISTRIBUTIONS:
            raise ValueError(f"noise_distribution must be one of {NOISE_DISTRIBUTIONS}, got {self.noise_distribution!r}")
        k = self.num_noise_levels
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"num_noise_levels must be None (continuous) or an int >= 1, got {k!r}")
        tm = self.t_min
        if isinstance(tm, bool) or not isinstance(tm, (int, float)) or not math.isfinite(tm) or tm < 0:
            raise ValueError(f"t_min must be a finite number >= 0, got {tm!r}")
        if self.noise_distribution == "uniform" and k is not None and tm != 0:
            raise ValueError(f"t_min: the uniform grid is {{T/K, …, T}}; got t_min={tm} with num_noise_levels={k}")
        ld = self.label_dropout
        if isinstance(ld, bool) or not isinstance(ld, (int, float)) or not 0.0 <= ld < 1.0:
            raise ValueError(f"label_dropout must be a number in [0, 1), got {ld!r}")
        cw = self.classifier_weight
        if isinstance(cw, bool) or not isinstance(cw, (int, float)) or not math.isfinite(cw) or cw < 0:
            raise ValueError(f"classifier_weight must be a finite number >= 0, got {cw!r}")
        m = self.classifier_examples
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"classifier_examples must be None (all) or an int >= 1, got {m!r}")
        if self.noise_distribution == "log_uniform" and not tm > 0:
            raise ValueError(f"t_min must be > 0 for noise_distribution='log_uniform' (log t_min is its lower end), "
                             f"got {tm!r}")


@dataclass(frozen=True)
class NCMLLossOutput:
    loss: torch.Tensor  # () mean of nll_per_dim over the batch, bits/dim, plus the classifier term if any (backprop)
    nll_per_dim: torch.Tensor  # (B,) per-example negative log-likelihood of x_t, bits/dim (float32)
    t: torch.Tensor  # (B,) the sampled times, float64 (exactly 0.0 for clean examples)
    # classifier_weight > 0: −log p_θ,t(y | x_t) in nats (float64) of the M scored examples (the batch's first M,
    # times t[:M]); None otherwise. ``loss`` already includes α · its mean / (d ln 2)
    classifier_nll: torch.Tensor | None = None


class NCMLLoss(ConfigMixin):
    """``NCMLLoss(config)(model, scheduler, x0, class_labels=None, *, generator=None) -> NCMLLossOutput``.

    ``x0``: clean images ``(B, C, H, W)`` in model space ``[-1, 1]`` on the data grid. One teacher-forced
    forward pass of ``model`` on ``x_t`` gives ``log p_θ,t(x_t)`` per dimension in nats (discretized mass
    where ``t = 0``, ``log pdf + log Δ`` where ``t > 0``; see ``ARBackbone``); the loss is its negative mean
    over dimensions and batch in bits/dim. ``generator`` (one, or a list of ``B`` for per-example draws
    independent of the batch layout) drives the draws of ``t`` and ``ε`` — never the global RNG.

    Label dropout (``label_dropout = p > 0``, class-conditional backbones with ``config.null_class``): each
    example's label is replaced by the null label with probability ``p`` (drawn from ``generator`` after ``t`` and
    ``ε``), so the same network learns ``p_θ,t(x)`` beside ``p_θ,t(x | y)``, as classifier-free guidance does.

    Discriminative term (``classifier_weight = α > 0``, class-conditional backbones, ``class_labels`` required):
    the first ``classifier_examples`` examples are also scored under every class, and ``α`` times the mean
    cross-entropy of the exact Bayes classifier ``p_θ,t(y | x_t)`` (uniform prior, nats per image, divided by
    ``d ln 2``) is added to ``loss``; see the module docstring. It draws nothing, so it leaves every other draw as is.

    A config component like the schedulers: ``NCMLLoss.from_config({"clean_fraction": 0.5})`` (unknown keys and
    wrong types raise), ``loss.config["t_min"]``, and ``save_pretrained`` / ``from_pretrained`` of
    ``loss_config.json``. It holds no weights.
    """

    config_class = NCMLLossConfig
    config_name = "loss_config.json"

    def __init__(self, config: NCMLLossConfig | None = None):
        if config is None:
            config = NCMLLossConfig()
        if not isinstance(config, NCMLLossConfig):
            raise TypeError(f"config must be an NCMLLossConfig, got {type(config).__name__}")
        self.config = config

    def sample_t(self, batch_size: int, t_max: float, *, generator: Generator = None, device=None) -> torch.Tensor:
        """Draw ``t ~ μ``, float64 ``(batch_size,)`` (float64 so that ``t ≤ T`` holds exactly)."""
        cfg = self.config
        if not cfg.t_min < t_max:
            raise ValueError(f"t_min={cfg.t_min} must be smaller than the scheduler's t_max={t_max}")
        u = rand((batch_size, 2), generator=generator, device=device, dtype=torch.float64)  # (B, 2)
        clean = u[:, 0] < cfg.clean_fraction  # clean_fraction=1 → always (u < 1); 0 → never
        noisy = self.noise_quantile(u[:, 1], t_max)
        return torch.where(clean, torch.zeros_like(noisy), noisy.clamp(max=t_max))

    def noise_quantile(self, u: torch.Tensor, t_max: float) -> torch.Tensor:
        """The noisy branch's times at uniform ``u ∈ [0, 1)`` (its inverse CDF; ``u → 1⁻`` gives ``T``)."""
        cfg, k = self.config, self.config.num_noise_levels
        if k is not None:  # grid point ``level``, uniform on {0, …, K − 1}
            level = torch.clamp(torch.floor(u * k), max=k - 1)
            if cfg.noise_distribution == "log_uniform":  # K log-spaced times t_min … T (K = 1: {T})
                return cfg.t_min * (t_max / cfg.t_min) ** (level / (k - 1) if k > 1 else torch.ones_like(u))
            return (level + 1) * (t_max / k)  # {T/K, …, T}
        if cfg.noise_distribution == "log_uniform":  # log t ~ U[log t_min, log T]; 1 − u ∈ (0, 1] reaches T
            return cfg.t_min * (t_max / cfg.t_min) ** (1 - u)
        return t_max - (t_max - cfg.t_min) * u  # U(t_min, T]: u ∈ [0, 1) maps to (t_min, T]

    def __call__(self, model: ARBackbone, scheduler: SDEScheduler, x0: torch.Tensor,
                 class_labels: torch.Tensor | None = None, *, generator: Generator = None) -> NCMLLossOutput:
        if not isinstance(scheduler, SDEScheduler):
            raise TypeError(f"scheduler must be an SDEScheduler, got {type(scheduler).__name__}")
        if not isinstance(x0, torch.Tensor) or not x0.dtype.is_floating_point or x0.ndim != 4:
            raise TypeError("x0 must be a float tensor (B, C, H, W) in model space [-1, 1] "
                            f"(convert uint8 images with ncml.data.to_model_space), got "
                            f"{type(x0).__name__ if not isinstance(x0, torch.Tensor) else (x0.dtype, tuple(x0.shape))}")
        batch_size = x0.shape[0]
        check_generator(generator, batch_size)
        t = self.sample_t(batch_size, scheduler.t_max, generator=generator, device=x0.device)  # (B,)
        noise = randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)  # (B, C, H, W)
        # clean examples are x0 itself, bit for bit: their log-likelihood is a mass on the data grid
        x_t = torch.where(expand_as(t == 0, x0).bool(), x0, scheduler.add_noise(x0, noise, t))
        backbone = model if hasattr(model, "check_inputs") else getattr(model, "module", model)
        if self.config.classifier_weight > 0:  # the true labels, checked, before dropout can hide them
            class_labels = true_labels = self.check_classifier_labels(backbone, class_labels, batch_size,
                                                                      device=x0.device)
        if self.config.label_dropout > 0:
            class_labels = self.drop_labels(backbone, class_labels, batch_size, generator=generator, device=x0.device)
        x_in, t_in, labels_in = x_t, t, class_labels
        if self.config.classifier_weight > 0:
            m = min(batch_size, self.config.classifier_examples or batch_size)
            k = backbone.config.num_classes
            # every scored example under every class, image-major: rows (i, 0), …, (i, K − 1) for i < M
            x_in = torch.cat([x_t, x_t[:m].repeat_interleave(k, dim=0)])
            t_in = torch.cat([t, t[:m].repeat_interleave(k)])
            labels_in = torch.cat([class_labels, torch.arange(k, device=x0.device).repeat(m)])
        # forward reads no values: clean rows on the grid, labels in range. DistributedDataParallel (multi-process
        # training) hides the backbone's methods behind .module; its forward is still the one to call (gradient sync),
        # and only once per step, which is why the classifier rows share this call
        backbone.check_inputs(x_in, t_in, labels_in)
        log_prob = model(x_in, t_in, labels_in).log_prob  # (B [+ M·K], C, H, W) nats
        nll_per_dim = bits_per_dim_from_log_prob(log_prob[:batch_size].float())  # (B,) bits/dim, float32 always
        loss, classifier_nll = nll_per_dim.mean(), None
        if self.config.classifier_weight > 0:
            log_px = log_prob[batch_size:].double().flatten(1).sum(1).view(m, k)  # log p_θ,t(x_t | k), nats
            classifier_nll = -torch.log_softmax(log_px, dim=1).gather(1, true_labels[:m, None]).squeeze(1)
            dims = x0[0].numel()
            loss = loss + (self.config.classifier_weight * classifier_nll.mean() / (dims * math.log(2))).float()
        return NCMLLossOutput(loss=loss, nll_per_dim=nll_per_dim, t=t, classifier_nll=classifier_nll)

    def check_classifier_labels(self, backbone: ARBackbone, class_labels, batch_size: int, *,
                                device=None) -> torch.Tensor:
        """The true labels ``(B,)`` for the discriminative term: a class-conditional backbone, and real classes
        (the null label is not a class of ``p(y | x)``)."""
        k = getattr(backbone.config, "num_classes", None)
        if k is None:
            raise ValueError(f"classifier_weight={self.config.classifier_weight} needs a class-conditional backbone "
                             "(config.num_classes set); this one is unconditional")
        if class_labels is None:
            raise ValueError(f"classifier_weight={self.config.classifier_weight} needs class_labels (the true classes)")
        labels = backbone.check_class_labels(class_labels, batch_size, device=device)
        if (labels >= k).any():
            raise ValueError(f"class_labels: the discriminative term (classifier_weight > 0) needs real classes "
                             f"0 … {k - 1}, got the null label {backbone.null_label}")
        return labels

    def drop_labels(self, backbone: ARBackbone, class_labels, batch_size: int, *, generator: Generator = None,
                    device=None) -> torch.Tensor:
        """``class_labels`` with each entry replaced by ``backbone.null_label`` with probability ``label_dropout``."""
        null = backbone.null_label
        if null is None:
            raise ValueError(f"label_dropout={self.config.label_dropout} needs a class-conditional backbone with a "
                             "null class (config.num_classes set and config.null_class=True)")
        if class_labels is None:
            raise ValueError("label_dropout needs class_labels (the labels to drop)")
        labels = backbone.check_class_labels(class_labels, batch_size, device=device)
        drop = rand((batch_size,), generator=generator, device=device, dtype=torch.float64) < self.config.label_dropout
        return torch.where(drop, torch.full_like(labels, null), labels)
