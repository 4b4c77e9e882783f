"""NCPN: the backbone invariants (``BackboneTests``) plus NCPN-specific checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from backbone_tests import BackboneTests

from ncml.models.embeddings import ConditioningEmbedding
from ncml.models.ncpn import NCPNConfig, NCPNModel

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs"

TINY = dict(sample_size=4, in_channels=1, num_bits=8, nr_resnet=1, nr_filters=8, nr_logistic_mix=3,
            attention_heads=2, dropout=0.0, num_classes=None, fourier_scale=1.0, embedding_dim=16)


class TestNCPN(BackboneTests):
    model_class = NCPNModel

    def get_config(self, **overrides):
        return NCPNConfig(**{**TINY, **overrides})

    def test_params_strictly_causal(self):
        """Mixture parameters of pixel p depend on no channel of pixel p or later (down/up-sampling + attention)."""
        model = self.make_model(sample_size=6, in_channels=3, num_classes=2)  # 6 → 3 → 2: odd sizes are cropped
        self.perturb_weights(model)
        hw = 36
        x = torch.randn(hw, 3, 6, 6, dtype=model.dtype).requires_grad_(True)  # copy p probes pixel p
        params = model(x, 0.05, torch.ones(hw, dtype=torch.long)).params.flatten(2)  # (HW, P, HW)
        params[torch.arange(hw), :, torch.arange(hw)].sum().backward()
        # grad[p, c, q]: dependence of pixel p's parameters on channel c of pixel q
        grad = x.grad.flatten(2)
        not_before = torch.triu(torch.ones(hw, hw, dtype=torch.bool))  # q >= p
        assert (grad.permute(0, 2, 1)[not_before] == 0).all()
        assert (grad.permute(0, 2, 1)[~not_before] != 0).any(dim=-1).float().mean() > 0.5

    def test_noise_embedding_separates_levels_of_every_sde(self):
        """Embeddings of t spread over a decade of each SDE's [0, T] (sub-VP T=0.025 … VE T=0.5) are far apart.

        Fourier features of raw t (even with score-SDE's scale 16) give relative distances of 0.0002–0.06 here.
        """
        emb = ConditioningEmbedding(64, num_fourier_features=64, fourier_scale=1.0).double()
        for t_max in (0.025, 0.1, 0.5):
            t = t_max * torch.logspace(-3, 0, 8, dtype=torch.float64)
            with torch.no_grad():
                e = emb(t)
            dist = torch.cdist(e, e)[~torch.eye(8, dtype=torch.bool)]
            assert dist.min() > 0.3 * e.norm(dim=1).mean(), t_max
        with torch.no_grad():
            e = emb(torch.tensor([0.0, 1e-8, 0.025]))
        assert torch.isfinite(e).all() and not torch.allclose(e[0], e[1])

    def test_config_validation_names_the_field(self):
        for field, value, error in [("sample_size", 0, ValueError), ("sample_size", 4.0, TypeError),
                                    ("in_channels", 2, ValueError), ("num_bits", 0, ValueError),
                                    ("nr_resnet", 0, ValueError), ("attention_heads", 3, ValueError),
                                    ("dropout", 1.0, ValueError), ("dropout", "0.1", TypeError),
                                    ("num_classes", 0, ValueError), ("num_classes", True, TypeError),
                                    ("fourier_scale", 0.0, ValueError), ("embedding_dim", 15, ValueError)]:
            with pytest.raises(error, match=field):
                NCPNConfig(**{**TINY, field: value})
        with pytest.raises(ValueError, match="nr_filterz"):
            NCPNModel.from_config({**TINY, "nr_filterz": 3})

    def test_example_configs(self):
        """The shipped configs load; CIFAR-10 is the paper's ≈ 73 M parameters, MNIST is small."""
        counts = {}
        for name in ("ncpn_cifar10_vp.json", "ncpn_mnist_vp.json"):
            data = json.loads((CONFIGS / name).read_text())
            with torch.device("meta"):
                counts[name] = NCPNModel.from_config(data).num_parameters()
        assert 70e6 < counts["ncpn_cifar10_vp.json"] < 76e6
        assert counts["ncpn_mnist_vp.json"] < 2e6
        cifar = NCPNConfig(**{k: v for k, v in json.loads((CONFIGS / "ncpn_cifar10_vp.json").read_text()).items()
                              if not k.startswith("_")})
        assert (cifar.nr_resnet, cifar.nr_filters, cifar.nr_logistic_mix, cifar.attention_heads) == (5, 160, 10, 8)
        assert math.isclose(cifar.dropout, 0.25)

    def test_no_attention_variant(self):
        model = self.make_model(sample_size=4, in_channels=3, attention_heads=0)
        assert not any("attn" in n for n, _ in model.named_parameters())
        x = self.grid_images(model, 2)
        assert torch.isfinite(model.log_prob(x, 0.0)).all()
