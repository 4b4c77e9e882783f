import json

import pytest
import torch

from ncml import SubVPSDEScheduler, VESDEScheduler, VPSDEScheduler
from scheduler_tests import SchedulerTesterMixin


class TestVESDEScheduler(SchedulerTesterMixin):
    scheduler_class = VESDEScheduler


class TestVPSDEScheduler(SchedulerTesterMixin):
    scheduler_class = VPSDEScheduler


class TestSubVPSDEScheduler(SchedulerTesterMixin):
    scheduler_class = SubVPSDEScheduler


def test_paper_defaults():
    assert VESDEScheduler().config.t_max == 0.5 and VESDEScheduler().config.sigma_max == 50
    assert VPSDEScheduler().config.t_max == 0.1 and VPSDEScheduler().config.beta_max == 20
    assert SubVPSDEScheduler().config.t_max == 0.025


def test_ve_uses_exact_marginal_not_sigma_t():
    s = VESDEScheduler()
    t = torch.tensor([0.1], dtype=torch.float64)
    assert torch.allclose(s.marginal_std(t) ** 2, s.sigma(t) ** 2 - 0.01**2)


def test_small_t_std_is_accurate_in_float32():
    """s(t) at t = 1e-6 keeps its leading digits in float32 (no 1 − m² cancellation)."""
    for s in (VPSDEScheduler(), SubVPSDEScheduler()):
        t64 = torch.tensor([1e-6], dtype=torch.float64)
        t32 = t64.float()
        assert torch.allclose(s.marginal_std(t32).double(), s.marginal_std(t64), rtol=1e-4)


def test_rank_agnostic():
    s = VPSDEScheduler()
    for shape in [(4,), (4, 3), (4, 1, 5, 5), (4, 2, 3, 3, 3)]:
        x = torch.ones(shape)
        mean, std = s.marginal(x, torch.full((4,), 0.05))
        assert mean.shape == shape and std.shape == (4,) + (1,) * (len(shape) - 1)


def test_coefficients_cast_to_sample_dtype():
    s = VPSDEScheduler()
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.ones(2, 3, dtype=dtype)
        assert s.add_noise(x, x, 0.05).dtype == dtype
        assert s.step(x, 0.05, 0.025, x).prev_sample.dtype == dtype


def test_config_of_another_class_raises(tmp_path):
    VPSDEScheduler().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="VPSDEScheduler"):
        VESDEScheduler.from_pretrained(tmp_path)


def test_bad_config_values_raise():
    with pytest.raises(ValueError, match="t_max"):
        VPSDEScheduler(t_max=-1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        VESDEScheduler(sigma_min=10.0, sigma_max=1.0)
    with pytest.raises(TypeError, match="beta_mni"):
        VPSDEScheduler(beta_mni=0.1)
    with pytest.raises(TypeError, match="beta_max"):
        VPSDEScheduler.from_config({"beta_max": "20"})


def test_saved_config_is_plain_json(tmp_path):
    SubVPSDEScheduler(beta_max=10.0).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert data["_class_name"] == "SubVPSDEScheduler" and data["beta_max"] == 10.0 and "_ncml_version" in data


def test_timesteps_grid():
    s = VESDEScheduler()
    torch.testing.assert_close(s.timesteps(4, 0.2), torch.tensor([0.2, 0.15, 0.1, 0.05, 0.0], dtype=torch.float64))
    assert s.timesteps(4, s.t_max)[0].item() == s.t_max  # exactly t_start, so t_start = t_max passes the range check
    log = s.timesteps(4, 0.2, spacing="log", t_end_ratio=1e-3)
    torch.testing.assert_close(log, torch.tensor([0.2, 0.02, 0.002, 0.0002, 0.0], dtype=torch.float64))
    assert s.timesteps(1, 0.2, spacing="log").tolist() == [0.2, 0.0]


def test_steps_are_stateless():
    """A step depends only on its arguments: no grid is stored on the scheduler, so pipelines cannot disturb it."""
    s = VPSDEScheduler()
    x = torch.randn(2, 3)
    a = s.step(x, 0.05, 0.01, x, generator=torch.Generator().manual_seed(0))
    s.timesteps(100, 0.1)
    b = s.step(x, 0.05, 0.01, x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.prev_sample, b.prev_sample)
    assert vars(s) == {"config": s.config}


def test_float32_times_up_to_t_max_are_accepted():
    s = VPSDEScheduler()  # float32(0.1) is slightly above 0.1
    _, std = s.marginal(torch.zeros(11, 1), torch.linspace(0, 0.1, 11))
    assert std[-1].item() == s.marginal_std(torch.tensor([0.1], dtype=torch.float64)).float().item()
    with pytest.raises(ValueError, match=r"0\.10000001"):  # beyond float32 rounding: refused, at full precision
        s.marginal(torch.zeros(1, 1), torch.tensor([0.10000001], dtype=torch.float64))
