"""A reusable test mixin: every ``SDEScheduler`` subclass — built-in or user-defined — must pass it.

Subclass it in a test module with ``scheduler_class = MySDEScheduler`` (and optionally ``get_scheduler``).
"""

from __future__ import annotations

import math

import pytest
import torch

from ncml import SDEScheduler


class SchedulerTesterMixin:
    scheduler_class: type[SDEScheduler]

    def get_scheduler(self) -> SDEScheduler:
        return self.scheduler_class()

    def time_grid(self, n: int = 41, lo: float = 1e-4) -> torch.Tensor:
        return torch.linspace(lo, self.get_scheduler().t_max, n, dtype=torch.float64)

    # ---- the SDE is consistent with its marginals ------------------------------------------------
    def test_std_is_zero_at_time_zero(self):
        s = self.get_scheduler()
        t0 = torch.zeros(3, dtype=torch.float64)
        assert torch.equal(s.marginal_std(t0), torch.zeros(3, dtype=torch.float64))
        assert torch.allclose(s.marginal_mean_coeff(t0), torch.ones(3, dtype=torch.float64))
        mean, std = s.marginal(torch.full((3, 2, 2), 0.5), 0.0)
        assert torch.equal(std, torch.zeros(3, 1, 1)) and torch.allclose(mean, torch.full((3, 2, 2), 0.5))

    def test_mean_coeff_solves_drift_ode(self):
        """m'(t) = f(t)·m(t), with m' from autograd."""
        s = self.get_scheduler()
        t = self.time_grid().requires_grad_(True)
        m = s.marginal_mean_coeff(t)
        # a constant m(t) (VE) does not depend on t at all: its derivative is 0
        dm = torch.autograd.grad(m.sum(), t)[0] if m.requires_grad else torch.zeros_like(m)
        f = s.drift_coeff(t.detach())
        torch.testing.assert_close(dm, f * m.detach(), rtol=1e-7, atol=1e-10)

    def test_variance_solves_lyapunov_ode(self):
        """(s²)'(t) = 2f(t)·s(t)² + g(t)², with (s²)' from autograd."""
        s = self.get_scheduler()
        t = self.time_grid().requires_grad_(True)
        var = s.marginal_std(t) ** 2
        (dvar,) = torch.autograd.grad(var.sum(), t)
        t = t.detach()
        expected = 2 * s.drift_coeff(t) * var.detach() + s.diffusion(t) ** 2
        torch.testing.assert_close(dvar, expected, rtol=1e-6, atol=1e-9)

    def test_marginal_matches_forward_simulation(self):
        """Fine Euler–Maruyama paths of dx = f·x dt + g dw agree with the exact marginal at t_max/2 and t_max."""
        s = self.get_scheduler()
        gen = torch.Generator().manual_seed(0)
        n_paths, n_steps = 20000, 2000
        x0 = torch.tensor([-0.8, 0.0, 0.6], dtype=torch.float64)
        x = x0.repeat(n_paths, 1)  # (paths, 3)
        dt = s.t_max / n_steps
        checkpoints = {n_steps // 2: s.t_max / 2, n_steps: s.t_max}
        for i in range(n_steps):
            t = torch.tensor([i * dt], dtype=torch.float64)
            z = torch.randn(x.shape, generator=gen, dtype=torch.float64)
            x = x + s.drift_coeff(t) * x * dt + s.diffusion(t) * math.sqrt(dt) * z
            if i + 1 in checkpoints:
                tc = checkpoints[i + 1]
                mean, std = s.marginal(x0[None], tc)
                emp_mean, emp_std = x.mean(0), x.std(0)
                se_mean = std.squeeze() / math.sqrt(n_paths)
                se_std = std.squeeze() / math.sqrt(2 * n_paths)
                assert (emp_mean - mean[0]).abs().max() < 5 * se_mean + 1e-3 * std.squeeze()
                assert ((emp_std - std.squeeze()).abs() < 5 * se_std + 2e-3 * std.squeeze()).all()

    def test_prior_sample_shape_and_scale(self):
        s = self.get_scheduler()
        x = s.prior_sample((4000, 8), generator=torch.Generator().manual_seed(1))
        T = torch.tensor([s.t_max], dtype=torch.float64)
        expected = math.sqrt(s.marginal_mean_coeff(T).item() ** 2 + s.marginal_std(T).item() ** 2)
        assert x.shape == (4000, 8) and x.dtype == torch.float32
        assert abs(x.std().item() / expected - 1) < 0.02

    # ---- the reverse steps, driven by an exact score, undo the noise ----------------------------
    # Data N(μ, σ²I) with σ equal to the noise std at t_start, so p_{t_start} is clearly wider than the data.
    MU = 0.3

    def gaussian(self, s: SDEScheduler, t: float) -> tuple[float, float]:
        """(mean, std) of p_t for the test's data N(μ, σ²I): p_t = N(m·μ, m²σ² + s²)."""
        sigma = self.data_sigma(s)
        tt = torch.tensor([t], dtype=torch.float64)
        m, sd = s.marginal_mean_coeff(tt).item(), s.marginal_std(tt).item()
        return m * self.MU, math.sqrt(m**2 * sigma**2 + sd**2)

    def data_sigma(self, s: SDEScheduler) -> float:
        return s.marginal_std(torch.tensor([s.t_max / 2], dtype=torch.float64)).item()

    def exact_score(self, s: SDEScheduler, x: torch.Tensor, t: float) -> torch.Tensor:
        mean, std = self.gaussian(s, t)
        return -(x - mean) / std**2

    def run_reverse(self, mode: str, steps: int = 200, correct_steps: int = 0, snr: float = 0.02, seed: int = 0,
                    spacing: str = "uniform"):
        s = self.get_scheduler()
        gen = torch.Generator().manual_seed(seed)
        t_start = s.t_max / 2
        mean, std = self.gaussian(s, t_start)
        x = mean + std * torch.randn(2000, 64, generator=gen, dtype=torch.float64)  # exact draws of p_{t_start}
        grid = s.timesteps(steps, t_start, spacing=spacing)
        assert grid[0].item() == t_start and grid[-1].item() == 0 and (grid.diff() < 0).all() and len(grid) == steps + 1
        for i, (t, t_next) in enumerate(zip(grid[:-1].tolist(), grid[1:].tolist())):
            for _ in range(correct_steps):
                x = s.step_correct(self.exact_score(s, x, t), t, x, snr=snr, generator=gen).prev_sample
            score = self.exact_score(s, x, t)
            out = s.step_ode(score, t, t_next, x) if mode == "ode" else s.step(score, t, t_next, x, generator=gen)
            x = out.prev_sample_mean if i == steps - 1 else out.prev_sample
        return x

    @pytest.mark.parametrize("mode,correct_steps,spacing", [("sde", 0, "uniform"), ("sde", 1, "uniform"),
                                                            ("ode", 0, "uniform"), ("sde", 0, "log")])
    def test_reverse_steps_recover_the_data_gaussian(self, mode, correct_steps, spacing):
        s = self.get_scheduler()
        sigma = self.data_sigma(s)
        x = self.run_reverse(mode, correct_steps=correct_steps, spacing=spacing)
        n = x.numel()
        # 5 standard errors plus a 1.5 % discretisation allowance. The Langevin corrector's per-sample
        # step size (score_sde's rule) inflates the std like a temperature: +0.9 % at snr 0.02, +2.5 % at
        # snr 0.05 over 200 steps here, so the test runs it at snr 0.02.
        assert abs(x.mean().item() - self.MU) < 5 * sigma / math.sqrt(n) + 0.015 * sigma
        assert abs(x.std().item() - sigma) < 5 * sigma / math.sqrt(2 * n) + 0.015 * sigma

    def test_reverse_steps_are_needed(self):
        """Guard against a vacuous pass: p_{t_start} is far from the data, and a zero score does not get there."""
        s = self.get_scheduler()
        sigma = self.data_sigma(s)
        mean, std = self.gaussian(s, s.t_max / 2)
        assert std > 1.3 * sigma
        grid = s.timesteps(50, s.t_max / 2).tolist()
        x = mean + std * torch.randn(2000, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        for t, t_next in zip(grid[:-1], grid[1:]):
            x = s.step_ode(torch.zeros_like(x), t, t_next, x).prev_sample
        assert x.std().item() > 1.3 * sigma

    def test_tweedie_denoise_is_the_posterior_mean(self):
        """For Gaussian data N(MU, σ²) the exact score makes Tweedie's step the exact posterior mean of x_0."""
        s = self.get_scheduler()
        t = s.t_max / 2
        x = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
        mean_t, std_t = self.gaussian(s, t)
        m = s.marginal_mean_coeff(torch.tensor([t], dtype=torch.float64)).item()
        sd = s.marginal_std(torch.tensor([t], dtype=torch.float64)).item()
        sigma = self.data_sigma(s)
        # posterior of x0 given x_t = m·x0 + sd·ε with x0 ~ N(MU, σ²): a Gaussian conditioning formula
        posterior = self.MU + m * sigma**2 / (m**2 * sigma**2 + sd**2) * (x - m * self.MU)
        torch.testing.assert_close(s.denoise(self.exact_score(s, x, t), t, x), posterior)
        assert torch.allclose(torch.as_tensor(mean_t), torch.as_tensor(m * self.MU))
        with pytest.raises(ValueError, match="t must be > 0"):
            s.denoise(x, 0.0, x)

    # ---- configs and files ---------------------------------------------------------------------
    def test_config_round_trip(self, tmp_path):
        s = self.get_scheduler()
        s.save_pretrained(tmp_path)
        loaded = type(s).from_pretrained(tmp_path)
        assert loaded.config == s.config and type(loaded) is type(s)
        assert type(s).from_config(s.config).config == s.config

    def test_unknown_config_key_raises(self):
        from ncml.configuration_utils import config_to_dict

        d = config_to_dict(self.get_scheduler().config) | {"not_a_field": 1}
        with pytest.raises(ValueError, match="not_a_field"):
            self.scheduler_class.from_config(d)

    # ---- bad input -------------------------------------------------------------------------------
    def test_bad_times_raise(self):
        s = self.get_scheduler()
        x = torch.zeros(2, 3)
        with pytest.raises(ValueError, match="t must lie in"):
            s.marginal(x, s.t_max * 1.5)
        with pytest.raises(ValueError, match="t must lie in"):
            s.marginal(x, -0.01)
        with pytest.raises(ValueError, match="NaN"):
            s.marginal(x, torch.tensor([0.01, float("nan")]))
        with pytest.raises(ValueError, match=r"shape \(2,\)"):
            s.marginal(x, torch.tensor([0.01, 0.02, 0.03]))
        with pytest.raises(ValueError, match="num_steps"):
            s.timesteps(0, s.t_max)
        with pytest.raises(ValueError, match="t_start"):
            s.timesteps(10, s.t_max * 2)
        with pytest.raises(ValueError, match="t_start"):
            s.timesteps(10, 0.0)
        with pytest.raises(ValueError, match="spacing"):
            s.timesteps(10, s.t_max, spacing="cosine")
        with pytest.raises(ValueError, match="t_next must be smaller"):
            s.step(torch.zeros(2, 3), 0.01, 0.02, x)
        with pytest.raises(ValueError, match="t_next must lie in"):
            s.step_ode(torch.zeros(2, 3), 0.01, -0.01, x)

    def test_mismatched_shapes_raise(self):
        s = self.get_scheduler()
        x = torch.zeros(2, 3)
        with pytest.raises(ValueError, match="noise"):
            s.add_noise(x, torch.zeros(2, 4), 0.01)
        for fn in (s.step, s.step_ode):
            with pytest.raises(ValueError, match="score"):
                fn(torch.zeros(2, 4), 0.01, 0.005, x)
        for fn in (s.step_correct, s.denoise):
            with pytest.raises(ValueError, match="score"):
                fn(torch.zeros(2, 4), 0.01, x)

    def test_generator_determinism_and_global_rng_untouched(self):
        s = self.get_scheduler()
        x = torch.randn(3, 5)
        state = torch.get_rng_state()
        a = s.step(x, 0.01, 0.005, x, generator=torch.Generator().manual_seed(7)).prev_sample
        b = s.step(x, 0.01, 0.005, x, generator=torch.Generator().manual_seed(7)).prev_sample
        assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())
        per_sample = s.step(x, 0.01, 0.005, x,
                            generator=[torch.Generator().manual_seed(i) for i in range(3)]).prev_sample
        alone = s.step(x[1:2], 0.01, 0.005, x[1:2], generator=torch.Generator().manual_seed(1)).prev_sample
        torch.testing.assert_close(per_sample[1:2], alone)
