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
    s.set_timesteps(3)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.ones(2, 3, dtype=dtype)
        assert s.add_noise(x, x, 0.05).dtype == dtype
        assert s.step(x, 0.05, x).prev_sample.dtype == dtype


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
    s.set_timesteps(4, t_start=0.2)
    torch.testing.assert_close(s.timesteps, torch.tensor([0.2, 0.15, 0.1, 0.05], dtype=torch.float64))
    assert s.timesteps[0].item() == 0.2  # exactly t_start, so t_start = t_max passes the range check
    assert s.step_size == pytest.approx(0.05)
    s.set_timesteps(10)
    assert s.timesteps[0].item() == pytest.approx(0.25)  # default t_start = t_max / 2
