"""ARTransformer: the backbone invariants (``BackboneTests``) plus KV-cache and transformer-specific checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from backbone_tests import BackboneTests

from ncml.models.ar_transformer import ARTransformerConfig, ARTransformerModel, KVCache

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs"

TINY = dict(sample_size=4, in_channels=1, num_bits=8, num_layers=2, hidden_size=16, num_heads=2, mlp_ratio=2,
            nr_logistic_mix=3, dropout=0.0, num_classes=None, fourier_scale=1.0, embedding_dim=16)


class TestARTransformer(BackboneTests):
    model_class = ARTransformerModel

    def get_config(self, **overrides):
        return ARTransformerConfig(**{**TINY, **overrides})

    # ---- cached == naive ------------------------------------------------------------------------
    def _cached_and_naive(self, model, batch_size, t, labels=None, *, seed=0, **kwargs):
        return [self.sample(model, batch_size, t, labels, generator=torch.Generator().manual_seed(seed),
                           use_cache=use_cache, **kwargs) for use_cache in (True, False)]

    @pytest.mark.parametrize("in_channels", [1, 3])
    @pytest.mark.parametrize("conditional", [False, True])
    def test_cache_equals_naive(self, in_channels, conditional):
        """float32, same generator → identical grid values at t == 0 and equal within 1e-5 at t > 0 (6×6 images)."""
        model = self.make_model(dtype=torch.float32, sample_size=6, in_channels=in_channels,
                                num_classes=3 if conditional else None)
        labels = [0, 2, 1, 2] if conditional else None
        t = torch.tensor([0.0, 0.0, 0.01, 0.05])
        cached, naive = self._cached_and_naive(model, 4, t, labels)
        assert torch.equal(cached[:2], naive[:2])
        assert torch.allclose(cached[2:], naive[2:], rtol=0, atol=1e-5)
        grid = (cached[:2] + 1) / model.bin_width
        assert torch.allclose(grid, grid.round(), rtol=0, atol=1e-4)

    @pytest.mark.parametrize("in_channels", [1, 3])
    @pytest.mark.parametrize("t", [0.0, 0.02])
    def test_cache_equals_naive_with_known_pixels(self, in_channels, t):
        """Inpainting: a known top half (prefilled in one pass), scattered known pixels and known single channels.

        float64 with perturbed weights (every layer and the context matter); float32 AR sampling is chaotic enough
        under random weights that rounding differences of 1 ulp can grow past 1e-5 over a few pixels.
        """
        model = self.perturb_weights(self.make_model(sample_size=6, in_channels=in_channels, num_classes=2),
                                     scale=0.05)
        b = 3
        known = (self.grid_images(model, b, seed=1) if t == 0
                 else torch.randn(b, *model.image_shape, dtype=model.dtype))
        mask = torch.zeros_like(known)
        mask[:, :, :3] = 1  # top half known for every sample
        g = torch.Generator().manual_seed(2)
        mask[:, :, 3:] = (torch.rand(mask[:, :, 3:].shape, generator=g) < 0.3).to(mask.dtype)  # + scattered channels
        cached, naive = self._cached_and_naive(model, b, t, [1, 0, 1], known=known, known_mask=mask, seed=3)
        assert torch.equal(cached[mask.bool()], known[mask.bool()])
        if t == 0:
            assert torch.equal(cached, naive)
        else:
            assert torch.allclose(cached, naive, rtol=0, atol=1e-9)

    def test_cached_sampling_never_runs_the_full_network(self):
        """use_cache=True: no teacher-forced pass at all (one token per step); use_cache=False: one per pixel."""
        model = self.make_model(sample_size=4, in_channels=1)
        calls = []
        model.register_forward_pre_hook(lambda module, args: calls.append(1))
        self.sample(model, 2, 0.0, use_cache=True)
        assert len(calls) == 0
        self.sample(model, 2, 0.0, use_cache=False)
        assert len(calls) == 16

    def test_cache_with_everything_known_returns_known(self):
        model = self.make_model(sample_size=4, in_channels=3)
        known = self.grid_images(model, 2, seed=4)
        for use_cache in (True, False):
            out = self.sample(model, 2, 0.0, known=known, known_mask=torch.ones_like(known), use_cache=use_cache)
            assert torch.equal(out, known)

    def test_cached_step_matches_full_forward_parameters(self):
        """The incremental pass (prefill + one-token steps) gives the teacher-forced parameters of every position."""
        model = self.perturb_weights(self.make_model(sample_size=5, in_channels=3, num_classes=2), scale=0.1)
        x = torch.randn(2, *model.image_shape, dtype=model.dtype)
        t, labels = torch.tensor([0.03, 0.2]), torch.tensor([1, 0])
        with torch.no_grad():
            full = model(x, t, labels).params.flatten(2).transpose(1, 2)  # (B, L, P)
            mods = model.conditioning(t, labels, model.dtype)
            cfg = model.config
            caches = [KVCache(2, cfg.num_heads, cfg.sample_size**2, cfg.hidden_size // cfg.num_heads,
                              device=model.device, dtype=model.dtype) for _ in model.blocks]
            seq = x.flatten(2).transpose(1, 2)
            prefix = 7
            steps = [model.run_layers(model.tokens(seq[:, :prefix]), mods, caches=caches)]
            for p in range(prefix, seq.shape[1]):
                steps.append(model.run_layers(model.tokens(seq[:, p - 1:p], start=p), mods, caches=caches, start=p))
        assert torch.allclose(torch.cat(steps, dim=1), full, rtol=0, atol=1e-10)

    # ---- conditioning and config ----------------------------------------------------------------
    def test_conditioning_changes_the_likelihood(self):
        """t (including t == 0 vs tiny t) and the class label both reach the head through AdaLN."""
        model = self.perturb_weights(self.make_model(sample_size=4, in_channels=1, num_classes=3), scale=0.1)
        x = self.grid_images(model, 1).repeat(4, 1, 1, 1)
        with torch.no_grad():
            params = model(x, torch.tensor([0.0, 1e-6, 0.1, 0.1]), torch.tensor([0, 0, 0, 2])).params
        for a, b in [(0, 1), (1, 2), (2, 3)]:
            assert not torch.allclose(params[a], params[b])

    def test_config_validation_names_the_field(self):
        for field, value, error in [("sample_size", 0, ValueError), ("sample_size", 4.0, TypeError),
                                    ("in_channels", 2, ValueError), ("num_bits", 0, ValueError),
                                    ("num_layers", 0, ValueError), ("num_heads", 3, ValueError),
                                    ("hidden_size", True, TypeError), ("mlp_ratio", 0, ValueError),
                                    ("nr_logistic_mix", 0, ValueError), ("dropout", 1.0, ValueError),
                                    ("dropout", "0.1", TypeError), ("num_classes", 0, ValueError),
                                    ("num_classes", True, TypeError), ("fourier_scale", 0.0, ValueError),
                                    ("embedding_dim", 15, ValueError)]:
            with pytest.raises(error, match=field):
                ARTransformerConfig(**{**TINY, field: value})
        with pytest.raises(ValueError, match="num_layerz"):
            ARTransformerModel.from_config({**TINY, "num_layerz": 3})
        with pytest.raises(TypeError, match="config"):
            ARTransformerModel(TINY)

    def test_example_config(self):
        """The shipped MNIST config builds an ARTransformerModel by name, as examples/train_ncml.py resolves it."""
        from ncml.configuration_utils import resolve_class
        from ncml.models.autoregressive import ARBackbone

        data = json.loads((CONFIGS / "ar_transformer_mnist_vp.json").read_text())
        cls = resolve_class("ncml", data["_class_name"], ARBackbone, argname="_class_name")
        assert cls is ARTransformerModel
        with torch.device("meta"):
            model = cls.from_config(data)
        assert model.image_shape == (1, 28, 28) and model.num_parameters() < 2e6

