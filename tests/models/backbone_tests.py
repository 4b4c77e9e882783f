"""``BackboneTests``: invariants every ``ARBackbone`` must satisfy, as a reusable pytest mixin.

Use it by subclassing in a ``Test*`` class and providing two hooks::

    class TestMyBackbone(BackboneTests):
        model_class = MyModel

        def get_config(self, **overrides):
            # a TINY config (a few thousand parameters); ``overrides`` may set the standard fields
            # sample_size, in_channels, num_bits and num_classes
            return MyConfig(**{**tiny_defaults, **overrides})

Backbones must also accept ``sample(..., progress=False)`` (a keyword that turns the tqdm bar off).
``causality_sample_size``, ``exhaustive_sample_size`` and ``small_sample_size`` can be overridden if need be.
Precision-sensitive checks run in float64. No golden numbers: every check is an invariant
(causality, normalisation, sampling == likelihood, determinism, round trips, input validation).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats


class BackboneTests:
    model_class: type = None
    causality_sample_size: int = 6  # Jacobian checks (NCPN: 6 → 3 → 2, so odd sizes and every resolution)
    exhaustive_sample_size: int = 2  # 2×2 images, enumerated exactly (256 with 1 channel and 2 bits)
    small_sample_size: int = 4  # everything else

    # ---- hooks --------------------------------------------------------------------------------
    def get_config(self, **overrides):
        raise NotImplementedError("BackboneTests subclasses return a tiny config with the overrides applied")

    # ---- helpers ------------------------------------------------------------------------------
    def make_model(self, *, dtype=torch.float64, seed: int = 0, **overrides):
        torch.manual_seed(seed)
        model = self.model_class(self.get_config(**overrides)).to(dtype).eval()
        return model

    @staticmethod
    def perturb_weights(model, scale: float = 0.2, seed: int = 1):
        """Add noise to every parameter so that zero-initialised layers (e.g. attention outputs) take part."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        return model

    @staticmethod
    def grid_images(model, batch_size: int, seed: int = 0) -> torch.Tensor:
        c, h, w = model.image_shape
        levels = 2**model.config.num_bits
        g = torch.Generator().manual_seed(seed)
        k = torch.randint(0, levels, (batch_size, c, h, w), generator=g)
        return (k * model.bin_width - 1).to(model.dtype)

    @staticmethod
    def labels_for(model, batch_size: int, seed: int = 0):
        if model.config.num_classes is None:
            return None
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, model.config.num_classes, (batch_size,), generator=g)

    @staticmethod
    def raster(log_prob: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, H·W·C)`` in the autoregressive order (raster, then R→G→B)."""
        return log_prob.permute(0, 2, 3, 1).flatten(1)

    def sample(self, model, batch_size, t, class_labels=None, **kwargs):
        return model.sample(batch_size, t, class_labels, progress=False, **kwargs)

    # ---- causality ------------------------------------------------------------------------------
    @pytest.mark.parametrize("in_channels", [1, 3])
    @pytest.mark.parametrize("t", [0.0, 0.05])
    @pytest.mark.parametrize("conditional", [False, True])
    def test_causality_exact(self, in_channels, t, conditional):
        """∂ log_prob[a] / ∂ x[b] == 0 exactly for every dimension b after a (raster order, R→G→B)."""
        size = self.causality_sample_size if in_channels == 1 else max(4, self.causality_sample_size // 2)
        model = self.make_model(sample_size=size, in_channels=in_channels, num_bits=8,
                                num_classes=3 if conditional else None)
        self.perturb_weights(model)
        d = in_channels * size * size
        x0 = self.grid_images(model, 1, seed=2) if t == 0 else torch.randn(1, in_channels, size, size,
                                                                            dtype=model.dtype)
        # row a of the Jacobian from copy a of the image (samples in a batch are independent)
        x = x0.repeat(d, 1, 1, 1).requires_grad_(True)
        labels = None if not conditional else torch.full((d,), 2, dtype=torch.long)
        lp = self.raster(model(x, t, labels).log_prob)  # (D, D)
        lp.diagonal().sum().backward()
        jac = self.raster(x.grad)  # jac[a, b] = ∂ lp[a] / ∂ x[b]
        future = torch.triu(torch.ones(d, d, dtype=torch.bool), diagonal=1)
        assert (jac[future] == 0).all(), f"log_prob depends on {int((jac[future] != 0).sum())} future dimensions"
        past = torch.tril(torch.ones(d, d, dtype=torch.bool), diagonal=-1)
        # not vacuous: the model does use the past, including the first pixel for the last dimension
        assert (jac[past] != 0).float().mean() > 0.3
        assert jac[-1, 0] != 0 and jac[-1, -2] != 0

    # ---- normalisation ------------------------------------------------------------------------
    @staticmethod
    def all_images(model) -> torch.Tensor:
        """Every image of the grid, ``(L^(C·H·W), C, H, W)``; image ``n``'s base-``L`` digits are ``n``, in AR order."""
        c, h, w = model.image_shape
        levels = 2**model.config.num_bits
        codes = torch.tensor(list(itertools.product(range(levels), repeat=c * h * w)), dtype=model.dtype)
        return (codes * model.bin_width - 1).reshape(-1, h, w, c).permute(0, 3, 1, 2).contiguous()

    def exhaustive_log_probs(self, model, label=None, chunk=4096):
        images = self.all_images(model)
        with torch.no_grad():
            out = [self.raster(model(xb, 0.0, None if label is None else torch.full((len(xb),), label)).log_prob)
                   .sum(1) for xb in images.split(chunk)]
        return images, torch.cat(out)

    @pytest.mark.parametrize("in_channels,num_bits", [(1, 2), (3, 1)])
    @pytest.mark.parametrize("conditional", [False, True])
    def test_normalisation_exhaustive_t0(self, in_channels, num_bits, conditional):
        """Σ over every image (2×2×1 with 2 bits: 256; 2×2×3 with 1 bit: 4096) of exp(log p) = 1: exact end to end."""
        model = self.make_model(sample_size=self.exhaustive_sample_size, in_channels=in_channels, num_bits=num_bits,
                                num_classes=2 if conditional else None)
        _, log_p = self.exhaustive_log_probs(model, 1 if conditional else None)
        assert torch.isfinite(log_p).all()
        assert abs(torch.logsumexp(log_p, 0).exp().item() - 1) < 1e-4

    @pytest.mark.parametrize("in_channels,num_bits", [(3, 2), (1, 8)])
    def test_pixel_conditionals_normalise_t0(self, in_channels, num_bits):
        """For a fixed context, the masses of every value of one pixel (all channels jointly) sum to 1."""
        s = self.small_sample_size
        model = self.make_model(sample_size=s, in_channels=in_channels, num_bits=num_bits)
        context = self.grid_images(model, 1, seed=3)
        levels = 2**num_bits
        values = torch.tensor(list(itertools.product(range(levels), repeat=in_channels)), dtype=model.dtype)
        values = values * model.bin_width - 1  # (V, C)
        positions = [(0, 0), (s // 2, 1), (s - 1, s - 1)]
        x = context.repeat(len(values) * len(positions), 1, 1, 1)
        for n, (i, j) in enumerate(positions):
            x[n * len(values):(n + 1) * len(values), :, i, j] = values
        with torch.no_grad():
            lp = model(x, 0.0).log_prob
        for n, (i, j) in enumerate(positions):
            lp_ij = lp[n * len(values):(n + 1) * len(values), :, i, j].sum(1)  # log p(pixel | context)
            assert abs(torch.logsumexp(lp_ij, 0).exp().item() - 1) < 1e-6, (i, j)

    def test_continuous_conditionals_integrate_to_one(self):
        """t > 0: ∫ exp(log_prob − log Δ) dx_c = 1 for each channel's conditional (trapezoid quadrature)."""
        s = self.exhaustive_sample_size
        model = self.make_model(sample_size=s, in_channels=3, num_bits=8)
        context = torch.randn(1, 3, s, s, dtype=model.dtype)
        grid = torch.linspace(-25, 25, 2501, dtype=model.dtype)
        i, j = s - 1, s - 1
        x = context.repeat(2 * len(grid), 1, 1, 1)
        x[:len(grid), 0, i, j] = grid  # R (no coupling)
        x[len(grid):, 2, i, j] = grid  # B (coupled to R and G)
        with torch.no_grad():
            lp = model(x, 0.05).log_prob[:, :, i, j] - math.log(model.bin_width)
        for c, lp_c in ((0, lp[:len(grid), 0]), (2, lp[len(grid):, 2])):
            assert abs(torch.trapezoid(lp_c.exp(), grid).item() - 1) < 1e-4, c

    # ---- sampling --------------------------------------------------------------------------------
    def test_samples_match_likelihood_exhaustive(self):
        """Frequencies of many AR samples agree with exp(log_prob) over all images (chi-square, 2×2×1, 2 bits)."""
        s = self.exhaustive_sample_size
        model = self.make_model(sample_size=s, in_channels=1, num_bits=2)
        _, log_p = self.exhaustive_log_probs(model)
        n = 8000
        draws = self.sample(model, n, 0.0, generator=torch.Generator().manual_seed(0))
        digits = self.raster((draws + 1) / model.bin_width).round().long()  # (n, H·W), levels 0..3
        assert digits.min() >= 0 and digits.max() <= 3
        codes = (digits * 4 ** torch.arange(s * s - 1, -1, -1)).sum(1).numpy()  # index into all_images
        probs = log_p.exp().numpy()
        # group the images into 20 cells of about equal probability mass, ordered by probability
        order = np.argsort(probs)
        cell_of = np.empty(len(probs), dtype=int)
        cell_of[order] = np.minimum((np.cumsum(probs[order]) * 20).astype(int), 19)
        expected = np.bincount(cell_of, weights=probs, minlength=20) * n
        observed = np.bincount(cell_of[codes], minlength=20)
        keep = expected > 0
        assert stats.chisquare(observed[keep], expected[keep] * n / expected[keep].sum()).pvalue > 1e-3
        # and the joint of the last row (16 cells), which needs every conditional to be right
        last_row = np.arange(len(probs)) % 16
        row_expected = np.bincount(last_row, weights=probs, minlength=16) * n
        assert stats.chisquare(np.bincount(codes % 16, minlength=16), row_expected).pvalue > 1e-3

    def test_samples_match_likelihood_rgb_given_known(self):
        """Last pixel's (G, B) given known R and known context: sample frequencies == exp(log_prob) (chi-square)."""
        s = self.exhaustive_sample_size
        model = self.perturb_weights(self.make_model(sample_size=s, in_channels=3, num_bits=2), scale=0.5)
        n = 4000
        known = self.grid_images(model, 1, seed=4).repeat(n, 1, 1, 1)
        mask = torch.ones_like(known)
        mask[:, 1:, s - 1, s - 1] = 0  # sample G and B of the last pixel only
        draws = self.sample(model, n, 0.0, known=known, known_mask=mask, generator=torch.Generator().manual_seed(1))
        assert torch.equal(draws[mask.bool()], known[mask.bool()])
        levels = torch.arange(4, dtype=model.dtype) * model.bin_width - 1
        gb = torch.tensor(list(itertools.product(levels.tolist(), repeat=2)), dtype=model.dtype)
        x = known[:16].clone()
        x[:, 1:, s - 1, s - 1] = gb
        with torch.no_grad():
            p = model(x, 0.0).log_prob[:, 1:, s - 1, s - 1].sum(1).exp().numpy()
        assert abs(p.sum() - 1) < 1e-6
        k = ((draws[:, 1:, s - 1, s - 1] + 1) / model.bin_width).round().long()
        observed = np.bincount((k[:, 0] * 4 + k[:, 1]).numpy(), minlength=16)
        keep = p * n > 1
        assert stats.chisquare(observed[keep], p[keep] / p[keep].sum() * observed[keep].sum()).pvalue > 1e-3

    def test_continuous_samples_match_density(self):
        """t > 0: draws of the first pixel follow the model density (chi-square on 20 equal-mass bins)."""
        s = self.exhaustive_sample_size
        model = self.make_model(sample_size=s, in_channels=1, num_bits=8)
        n = 3000
        known = torch.randn(1, 1, s, s, dtype=model.dtype).repeat(n, 1, 1, 1)
        mask = torch.ones_like(known)
        mask[:, :, 0, 0] = 0
        draws = self.sample(model, n, 0.05, known=known, known_mask=mask, generator=torch.Generator().manual_seed(2))
        grid = torch.linspace(-25, 25, 2501, dtype=model.dtype)
        x = known[:1].repeat(len(grid), 1, 1, 1)
        x[:, 0, 0, 0] = grid
        with torch.no_grad():
            pdf = (model(x, 0.05).log_prob[:, 0, 0, 0] - math.log(model.bin_width)).exp()
        cdf = torch.cat([pdf.new_zeros(1), torch.cumulative_trapezoid(pdf, grid)]).numpy()
        u = np.interp(draws[:, 0, 0, 0].numpy(), grid.numpy(), cdf)  # probability integral transform
        observed = np.bincount(np.minimum((u * 20).astype(int), 19), minlength=20)
        assert stats.chisquare(observed).pvalue > 1e-3
        assert not torch.isin(draws[:, 0, 0, 0], torch.arange(256, dtype=model.dtype) * model.bin_width - 1).all()

    @pytest.mark.parametrize("t", [0.0, 0.03])
    def test_known_pixels_returned_unchanged(self, t):
        model = self.make_model(sample_size=self.small_sample_size, in_channels=3, num_bits=8, num_classes=2)
        b = 3
        known = self.grid_images(model, b, seed=5) if t == 0 else torch.randn(b, *model.image_shape,
                                                                              dtype=model.dtype)
        g = torch.Generator().manual_seed(6)
        mask = (torch.rand(known.shape, generator=g) < 0.5).to(model.dtype)
        out = self.sample(model, b, t, [0, 1, 1], known=known, known_mask=mask, generator=torch.Generator())
        assert out.shape == known.shape and out.dtype == model.dtype
        assert torch.equal(out[mask.bool()], known[mask.bool()])
        on_grid = torch.isclose(((out + 1) / model.bin_width), ((out + 1) / model.bin_width).round(), atol=1e-6)
        if t == 0:
            assert on_grid.all() and out.abs().max() <= 1
        else:
            assert not on_grid[~mask.bool()].all()

    def test_dropout_active_only_in_training(self):
        model = self.make_model(sample_size=4, in_channels=1, dropout=0.5)
        x = self.grid_images(model, 2)
        with torch.no_grad():
            assert torch.equal(model.log_prob(x, 0.0), model.log_prob(x, 0.0))
            model.train()
            assert not torch.equal(model.log_prob(x, 0.0), model.log_prob(x, 0.0))
        # sampling turns dropout off (samples depend on the generator only) and restores the mode
        for use_cache in (False, True):
            a = self.sample(model, 2, 0.0, generator=torch.Generator().manual_seed(0), use_cache=use_cache)
            assert model.training
            model.eval()
            b = self.sample(model, 2, 0.0, generator=torch.Generator().manual_seed(0), use_cache=use_cache)
            model.train()
            assert torch.allclose(a, b, atol=1e-9)

    def test_sample_deterministic_and_batch_independent(self):
        model = self.make_model(sample_size=self.small_sample_size, in_channels=3, num_bits=8)
        t = torch.tensor([0.0, 0.02])
        rng_state = torch.get_rng_state()
        a = self.sample(model, 2, t, generator=torch.Generator().manual_seed(7))
        b = self.sample(model, 2, t, generator=torch.Generator().manual_seed(7))
        assert torch.equal(a, b)
        assert torch.equal(rng_state, torch.get_rng_state()), "sample touched the global RNG"
        c = self.sample(model, 2, t, generator=torch.Generator().manual_seed(8))
        assert not torch.equal(a, c)
        # one generator per sample: sample i does not depend on the rest of the batch
        pair = self.sample(model, 2, t, generator=[torch.Generator().manual_seed(s) for s in (3, 4)])
        alone = self.sample(model, 1, t[1:], generator=[torch.Generator().manual_seed(4)])
        assert torch.allclose(pair[1:], alone, atol=1e-12)

    def test_use_cache_gives_same_samples(self):
        model = self.make_model(sample_size=self.small_sample_size, in_channels=3, num_bits=8, num_classes=2)
        args = (2, torch.tensor([0.0, 0.01]), [1, 0])
        a = self.sample(model, *args, generator=torch.Generator().manual_seed(9), use_cache=True)
        b = self.sample(model, *args, generator=torch.Generator().manual_seed(9), use_cache=False)
        assert torch.allclose(a, b, atol=1e-9)

    def test_reference_loop_makes_the_counted_evaluations(self):
        """use_cache=False runs one forward pass per drawn position, and num_sampling_evaluations says how many:
        positions known in every image and channel are skipped, partly known ones are drawn."""
        s = self.small_sample_size
        model = self.make_model(sample_size=s, in_channels=3, num_bits=8)
        known = self.grid_images(model, 2, seed=12)
        mask = torch.zeros_like(known)
        mask[:, :, 0] = 1  # the first row: known everywhere
        mask[0, :, 1, 0] = 1  # known in one image only
        mask[:, 1:, 1, 1] = 1  # known in some channels only
        calls = []
        hook = model.register_forward_pre_hook(lambda module, args: calls.append(1))
        try:
            out = self.sample(model, 2, 0.0, known=known, known_mask=mask, use_cache=False)
        finally:
            hook.remove()
        assert len(calls) == model.num_sampling_evaluations(mask.bool()) == s * s - s
        assert model.num_sampling_evaluations() == s * s
        assert model.num_sampling_evaluations(torch.ones_like(known)) == 0
        assert torch.equal(out[mask.bool()], known[mask.bool()])

    def test_sample_runs_without_grad_and_in_float32(self):
        model = self.make_model(dtype=torch.float32, sample_size=self.small_sample_size, in_channels=1)
        with torch.enable_grad():
            out = self.sample(model, 2, 0.0, generator=torch.Generator().manual_seed(0))
        assert not out.requires_grad and out.dtype == torch.float32

    # ---- likelihood invariants ------------------------------------------------------------------
    def test_score_matches_finite_differences(self):
        model = self.make_model(sample_size=self.small_sample_size, in_channels=3, num_bits=8, num_classes=2)
        x = torch.randn(2, *model.image_shape, dtype=model.dtype)
        t, labels = torch.tensor([0.05, 0.01]), torch.tensor([0, 1])
        with torch.no_grad():  # pipelines call score inside no_grad
            score = model.score(x, t, labels)
        assert score.shape == x.shape and torch.isfinite(score).all()
        g = torch.Generator().manual_seed(0)
        eps = 1e-6
        for _ in range(6):
            idx = tuple(int(torch.randint(0, n, (1,), generator=g)) for n in x.shape)
            xp, xm = x.clone(), x.clone()
            xp[idx] += eps
            xm[idx] -= eps
            with torch.no_grad():
                fd = (model.log_prob(xp, t, labels).sum() - model.log_prob(xm, t, labels).sum()) / (2 * eps)
            assert abs(fd.item() - score[idx].item()) < 1e-5 * (1 + abs(fd.item())), idx

    def test_batch_independence(self):
        """Changing one image (or its t) leaves the others' log_prob unchanged; batched == one at a time."""
        model = self.make_model(sample_size=self.small_sample_size, in_channels=3, num_bits=8, num_classes=3)
        x = self.grid_images(model, 3, seed=8)
        t = torch.tensor([0.0, 0.05, 0.0])
        labels = torch.tensor([0, 1, 2])
        with torch.no_grad():
            base = model.log_prob(x, t, labels)
            x2 = x.clone()
            x2[1] = torch.randn_like(x2[1])
            changed = model.log_prob(x2, torch.tensor([0.0, 0.3, 0.0]), torch.tensor([0, 2, 2]))
            singles = torch.cat([model.log_prob(x[i:i + 1], t[i:i + 1], labels[i:i + 1]) for i in range(3)])
        assert torch.allclose(base[[0, 2]], changed[[0, 2]], rtol=0, atol=1e-10)
        assert not torch.allclose(base[1], changed[1])
        assert torch.allclose(base, singles, rtol=0, atol=1e-10)

    def test_likelihood_units_and_gradients(self):
        """t == 0 gives log masses ≤ 0; a mixed batch backpropagates finite gradients to every parameter."""
        model = self.make_model(dtype=torch.float32, sample_size=self.small_sample_size, in_channels=3,
                                num_classes=2)
        x = self.grid_images(model, 4, seed=9)
        x[2:] = x[2:] + 0.3 * torch.randn_like(x[2:]) + 3.0  # noisy samples may leave [-1, 1]
        out = model(x, torch.tensor([0.0, 0.0, 0.05, 0.1]), torch.tensor([0, 1, 0, 1]))
        assert out.log_prob.shape == x.shape
        assert (out.log_prob[:2] <= 1e-6).all()
        out.log_prob.sum().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)

    def test_save_load_round_trip(self, tmp_path):
        model = self.make_model(dtype=torch.float32, sample_size=self.small_sample_size, in_channels=3,
                                num_classes=2)
        model.save_pretrained(tmp_path / "m")
        loaded = self.model_class.from_pretrained(tmp_path / "m").eval()
        assert loaded.config == model.config
        x = self.grid_images(model, 2, seed=10)
        t, labels = torch.tensor([0.0, 0.04]), torch.tensor([1, 0])
        with torch.no_grad():
            assert torch.equal(model.log_prob(x, t, labels), loaded.log_prob(x, t, labels))

    @pytest.mark.slow
    def test_forward_compiles_to_one_graph(self):
        """``torch.compile(model, fullgraph=True)`` (inductor, CPU) compiles ``forward`` with no graph break (no
        value check or data-dependent branch in it) and matches the eager ``log_prob`` on a mixed batch."""
        torch._dynamo.reset()
        model = self.make_model(dtype=torch.float32, sample_size=self.small_sample_size, in_channels=3,
                                num_classes=2)
        self.perturb_weights(model, scale=0.1)
        x = self.grid_images(model, 4, seed=13)
        x[1::2] = x[1::2] + 0.2 * torch.randn_like(x[1::2])  # the noisy rows leave the grid
        t, labels = torch.tensor([0.0, 0.05, 0.0, 0.3]), torch.tensor([1, 0, 0, 1])
        compiled = torch.compile(model, fullgraph=True)
        with torch.no_grad():
            out = compiled(x, t, labels).log_prob
            expected = model.log_prob(x, t, labels)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)

    # ---- input validation -------------------------------------------------------------------------
    def test_bad_inputs_raise(self):
        model = self.make_model(sample_size=self.small_sample_size, in_channels=3, num_bits=8)
        cond = self.make_model(sample_size=self.small_sample_size, in_channels=3, num_bits=8, num_classes=3)
        s = self.small_sample_size
        x = self.grid_images(model, 2, seed=11)
        cases = [
            (ValueError, "x", lambda: model(x[:, :1], 0.0)),  # wrong channels
            (ValueError, "x", lambda: model(torch.zeros(2, 3, s + 4, s + 4, dtype=x.dtype) - 1, 0.0)),  # wrong size
            (ValueError, "x", lambda: model(x[0], 0.0)),  # missing batch dimension
            # values are checked at the public boundary (log_prob, score, sample), not by forward
            (ValueError, "grid", lambda: model.log_prob(x + 0.1 * model.bin_width, 0.0)),  # off the grid at t == 0
            (ValueError, r"\[-1, 1\]", lambda: model.score(x * 0 + 1 + 2 * model.bin_width, 0.0)),  # out of range
            (ValueError, "NaN", lambda: model.log_prob(torch.where(x > 0, x, torch.nan), 0.05)),
            (TypeError, "x", lambda: model(((x + 1) * 127.5).to(torch.uint8), 0.0)),
            (ValueError, "t", lambda: model.log_prob(x, -0.1)),
            (ValueError, "t", lambda: model(x, torch.zeros(3))),
            (ValueError, "t", lambda: model.score(x, float("nan"))),
            (ValueError, "class_labels", lambda: cond(x, 0.0)),  # missing
            (ValueError, "class_labels", lambda: cond.log_prob(x, 0.0, torch.tensor([0, 3]))),  # out of range
            (ValueError, "class_labels", lambda: cond.score(x, 0.0, torch.tensor([0, -1]))),
            (ValueError, "class_labels", lambda: cond(x, 0.0, torch.tensor([0]))),  # wrong shape
            (TypeError, "class_labels", lambda: cond(x, 0.0, torch.tensor([0.0, 1.0]))),
            (ValueError, "class_labels", lambda: model(x, 0.0, torch.tensor([0, 1]))),  # unconditional model
            (ValueError, "known_mask", lambda: self.sample(model, 2, 0.0, known=x, known_mask=torch.ones(2, 1, s, s))),
            (ValueError, "known", lambda: self.sample(model, 2, 0.0, known=x)),
            (ValueError, "known", lambda: self.sample(model, 2, 0.0, known=x + 0.1 * model.bin_width,
                                                      known_mask=torch.ones_like(x))),  # off grid at t == 0
            (ValueError, "class_labels", lambda: self.sample(cond, 2, 0.0)),
            (ValueError, "batch_size", lambda: self.sample(model, 0, 0.0)),
            (ValueError, "generator", lambda: self.sample(model, 2, 0.0, generator=[torch.Generator()])),
        ]
        for error, match, call in cases:
            with pytest.raises(error, match=match):
                call()
        # the same off-grid values are fine as noisy inputs
        assert torch.isfinite(model(x + 0.1 * model.bin_width, 0.05).log_prob).all()
