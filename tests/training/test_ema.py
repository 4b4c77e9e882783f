"""ncml.training.EMA: the warmed-up exponential moving average of the weights."""

import pytest
import torch

from ncml.training import EMA


def test_update_follows_the_warmed_up_decay_and_copies_back():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    start = {k: v.clone() for k, v in ema.shadow.items()}
    assert all(v.dtype == torch.float32 for v in ema.shadow.values()) and set(ema.shadow) == {"weight", "bias"}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)  # n = 1: d = min(0.9, 2/11)
    d = 2 / 11
    for k, p in model.named_parameters():
        torch.testing.assert_close(ema.shadow[k], d * start[k] + (1 - d) * p.detach())
    for _ in range(200):
        ema.update(model)
    assert ema.num_updates == 201  # long after the warmup, d = 0.9: the average has reached the constant weights
    for k, p in model.named_parameters():
        torch.testing.assert_close(ema.shadow[k], p.detach(), rtol=0, atol=1e-6)
    other = torch.nn.Linear(2, 1)
    ema.copy_to(other)
    assert all(torch.equal(p, ema.shadow[k]) for k, p in other.named_parameters())


def test_the_shadow_is_float32_for_a_half_precision_model():
    model = torch.nn.Linear(3, 3).to(torch.bfloat16)
    ema = EMA(model, decay=0.99)
    ema.update(model)
    assert all(v.dtype == torch.float32 for v in ema.shadow.values())
    ema.copy_to(model)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_load_restores_and_checks_names_shapes_and_count():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    saved = {k: torch.full_like(v, 3.0) for k, v in ema.shadow.items()}
    ema.load(saved, 7)
    assert ema.num_updates == 7 and all(torch.equal(ema.shadow[k], saved[k]) for k in saved)
    with pytest.raises(ValueError, match=r"missing: \['bias'\]"):
        ema.load({"weight": saved["weight"]}, 1)
    with pytest.raises(ValueError, match=r"unexpected: \['extra'\]"):
        ema.load({**saved, "extra": torch.zeros(1)}, 1)
    with pytest.raises(ValueError, match="'weight' has shape"):
        ema.load({**saved, "weight": torch.zeros(2, 2)}, 1)
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="update count"):
            ema.load(saved, bad)
