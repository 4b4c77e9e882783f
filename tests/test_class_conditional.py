"""Class-conditional NCML: the null class and label dropout, guidance (exact on the data grid), the exact Bayes
classifier ``class_posterior`` and ``matched_time``. Tiny NCPNs with jittered weights; no golden numbers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from example_scripts import load_example
from ncml import NCMLClassConditionalPipeline, NCMLLoss, NCMLLossConfig, VPSDEScheduler
from ncml.evaluation import class_posterior, matched_time, noisy_marginal_draw, smoothed_class_posterior
from ncml.models.ncpn import NCPNConfig, NCPNModel

TINY = dict(sample_size=2, in_channels=1, num_bits=2, nr_resnet=1, nr_filters=8, nr_logistic_mix=3,
            attention_heads=2, dropout=0.0, num_classes=3, null_class=True, fourier_scale=1.0, embedding_dim=16)


def tiny(dtype=torch.float64, seed=0, **overrides) -> NCPNModel:
    torch.manual_seed(seed)
    model = NCPNModel(NCPNConfig(**{**TINY, **overrides})).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


def all_images(model) -> torch.Tensor:
    """Every image of the model's grid, model space ``(L^(CHW), C, H, W)``."""
    c, h, w = model.image_shape
    levels = torch.arange(2**model.config.num_bits, dtype=torch.float64) * model.bin_width - 1
    grid = torch.tensor(list(itertools.product(range(len(levels)), repeat=c * h * w)))
    return levels[grid].view(-1, c, h, w).to(model.dtype)


def gen(s=0):
    return torch.Generator().manual_seed(s)


# ---- the null class and label dropout --------------------------------------------------------------
def test_null_class_config_and_labels():
    with pytest.raises(ValueError, match="null_class=True needs num_classes"):
        NCPNConfig(**{**TINY, "num_classes": None})
    with pytest.raises(TypeError, match="null_class must be a bool"):
        NCPNConfig(**{**TINY, "null_class": 1})
    model = tiny()
    assert model.null_label == 3 and model.embedding.class_embedding.num_embeddings == 4
    assert model.check_class_labels(None, 2).tolist() == [3, 3]  # None = no label for every image
    assert model.check_class_labels([0, 3], 2).tolist() == [0, 3]
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 3\] \(3 = no label\)"):
        model.check_class_labels([4, 0], 2)
    plain = tiny(null_class=False)
    assert plain.null_label is None
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 2\]"):
        plain.check_class_labels([3, 0], 2)
    with pytest.raises(ValueError, match="no null class"):
        plain.check_class_labels(None, 2)
    x = all_images(model)[:4]
    # the unconditional mode is a distribution too: its masses over every image sum to 1
    total = torch.logsumexp(model.log_prob(all_images(model), 0.0, None).flatten(1).sum(1), 0)
    assert abs(total.item()) < 1e-9
    assert torch.equal(model.log_prob(x, 0.0, None), model.log_prob(x, 0.0, [3] * 4))


def test_label_dropout_replaces_labels_at_its_rate_from_the_generator():
    model = tiny()
    loss = NCMLLoss(NCMLLossConfig(label_dropout=0.3))
    labels = torch.randint(0, 3, (20000,), generator=gen(5))
    dropped = loss.drop_labels(model, labels, 20000, generator=gen(1))
    kept = dropped != 3
    assert torch.equal(dropped[kept], labels[kept])
    assert stats.binomtest(int((~kept).sum()), 20000, 0.3).pvalue > 1e-3
    assert torch.equal(dropped, loss.drop_labels(model, labels, 20000, generator=gen(1)))  # the generator's draws
    # per-example generators: example i's fate does not depend on the batch it is in
    gens = [gen(100 + i) for i in range(6)]
    full = loss.drop_labels(model, labels[:6], 6, generator=gens)
    part = loss.drop_labels(model, labels[3:6], 3, generator=[gen(103), gen(104), gen(105)])
    assert torch.equal(full[3:], part)
    x0 = all_images(model)[:4]
    out = loss(model, VPSDEScheduler(), x0, [0, 1, 2, 0], generator=gen(0))
    assert torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="null class"):
        loss(tiny(null_class=False), VPSDEScheduler(), x0, [0, 1, 2, 0], generator=gen(0))
    with pytest.raises(ValueError, match="needs class_labels"):
        loss(model, VPSDEScheduler(), x0, None, generator=gen(0))
    with pytest.raises(ValueError, match="label_dropout must be a number in"):
        NCMLLossConfig(label_dropout=1.0)


def test_classifier_term_is_the_bayes_cross_entropy_at_each_examples_t_and_leaves_the_nll_as_is():
    model, sched = tiny(), VPSDEScheduler()
    x0 = all_images(model)[torch.randperm(256, generator=gen(3))[:6]]
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    base = NCMLLossConfig(clean_fraction=0.5, label_dropout=0.3)
    plain = NCMLLoss(base)(model, sched, x0, labels, generator=gen(0))
    alpha = 7.0
    hybrid = NCMLLoss(NCMLLossConfig(**{**vars(base), "classifier_weight": alpha, "classifier_examples": 4}))
    out = hybrid(model, sched, x0, labels, generator=gen(0))
    # the same draws of t, ε and dropped labels: the generative term is unchanged
    assert torch.equal(out.t, plain.t) and torch.equal(out.nll_per_dim, plain.nll_per_dim)
    assert plain.classifier_nll is None and out.classifier_nll.shape == (4,)
    assert (out.t[:4] == 0).any() and (out.t[:4] > 0).any()  # both kinds of example are scored
    # replay x_t (rand (B, 2) for t, then randn for ε) and score it with the exact Bayes classifier at each t,
    # with the TRUE labels although label dropout hid some of them from the generative term
    g = gen(0)
    torch.rand((6, 2), generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    assert (torch.rand(6, generator=g, dtype=torch.float64)[:4] < 0.3).any()  # a scored example lost its label
    x_t = torch.where((out.t == 0)[:, None, None, None], x0, sched.add_noise(x0, noise, out.t))
    expected = torch.stack([-class_posterior(model, x_t[i:i + 1], float(out.t[i]), progress=False)[0, labels[i]]
                            for i in range(4)])
    torch.testing.assert_close(out.classifier_nll, expected)
    torch.testing.assert_close(out.loss, plain.loss + (alpha * expected.mean() / (4 * math.log(2))).float())
    # all examples by default; the classifier term alone has a gradient for every class's embedding
    every = NCMLLoss(NCMLLossConfig(clean_fraction=1.0, classifier_weight=1.0))(model, sched, x0, labels)
    assert every.classifier_nll.shape == (6,)
    grad, = torch.autograd.grad(every.loss - every.nll_per_dim.mean(), model.embedding.class_embedding.weight)
    assert (grad[:3].abs().sum(1) > 0).all() and not grad[3].any()  # the null class is not one of p(y | x)'s


def test_classifier_term_bad_input():
    x0 = all_images(tiny())[:4]
    loss = NCMLLoss(NCMLLossConfig(classifier_weight=1.0))
    with pytest.raises(ValueError, match="needs a class-conditional backbone"):
        loss(tiny(num_classes=None, null_class=False), VPSDEScheduler(), x0, None, generator=gen(0))
    with pytest.raises(ValueError, match="needs class_labels"):
        loss(tiny(), VPSDEScheduler(), x0, None, generator=gen(0))
    with pytest.raises(ValueError, match="needs real classes 0 … 2, got the null label 3"):
        loss(tiny(), VPSDEScheduler(), x0, [0, 3, 1, 2], generator=gen(0))
    for bad in (-1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="classifier_weight must be a finite number"):
            NCMLLossConfig(classifier_weight=bad)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="classifier_examples must be None"):
            NCMLLossConfig(classifier_examples=bad)


def test_init_from_an_unconditional_model_starts_as_that_model_for_every_label(tmp_path):
    script = load_example("train_ncml")
    from ncml import NCMLPipeline
    source = tiny(dtype=torch.float32, num_classes=None, null_class=False)
    NCMLPipeline(source, VPSDEScheduler()).save_pretrained(tmp_path / "uncond")
    model = NCPNModel(NCPNConfig(**TINY))
    script.init_weights(model, str(tmp_path / "uncond"))
    x = all_images(model)[:5].float()
    for label in (0, 2, None):
        assert torch.equal(model.eval().log_prob(x, 0.01, label), source.log_prob(x, 0.01))
    with pytest.raises(ValueError, match="differs"):
        script.init_weights(NCPNModel(NCPNConfig(**{**TINY, "nr_filters": 4})), str(tmp_path / "uncond"))
    # the new parameters (the class embedding) can learn at a larger rate than the trained ones
    args = script.TrainingConfig(init_from=str(tmp_path / "uncond"), new_params_lr_scale=50.0)
    groups = script.parameter_groups(model, args)
    assert [g["lr_scale"] for g in groups] == [1.0, 50.0]
    assert groups[1]["params"] == [model.embedding.class_embedding.weight]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    default = script.parameter_groups(model, script.TrainingConfig(init_from=str(tmp_path / "uncond")))
    assert len(default) == 1 and default[0]["lr_scale"] == 1.0


# ---- guidance --------------------------------------------------------------------------------------
def test_channel_log_probs_are_the_model_conditionals_for_rgb():
    model = tiny(in_channels=3, num_bits=3, sample_size=2)
    x = all_images(tiny(in_channels=3, num_bits=3, sample_size=1))[::37][:6]  # a few 1-pixel RGB values
    params = model(torch.zeros(6, 3, 2, 2, dtype=model.dtype), 0.0, [0] * 6).params[:, :, 0, 0].detach()
    mix = model.mixture(params)
    ref = mix.log_prob(x[:, :, 0, 0], True)  # (6, 3): log p(x_c | x_<c)
    for ch in range(3):
        got = mix.channel_log_probs(x[:, :, 0, 0], ch, x[:, ch, 0, 0][:, None], True)[:, 0]
        torch.testing.assert_close(got, ref[:, ch])
        levels = torch.arange(8, dtype=model.dtype) * model.bin_width - 1
        total = torch.logsumexp(mix.channel_log_probs(x[:, :, 0, 0], ch, levels.expand(6, -1), True), 1)
        torch.testing.assert_close(total, torch.zeros(6, dtype=model.dtype))  # each conditional is normalised


def test_guided_draws_follow_the_normalised_tilt_on_the_grid_and_w0_is_the_conditional():
    model = tiny()
    n = 4000
    params = model(torch.zeros(2, 1, 2, 2, dtype=model.dtype), 0.0, [1, 3]).params[:, :, 0, 0].detach()
    cond, uncond = (model.mixture(p.expand(n, -1)) for p in params.chunk(2))
    levels = torch.arange(4, dtype=model.dtype) * model.bin_width - 1
    x = torch.zeros(1, 1, dtype=model.dtype)
    lc = cond.channel_log_probs(x.expand(n, 1), 0, levels.expand(n, -1), True)[0]
    lu = uncond.channel_log_probs(x.expand(n, 1), 0, levels.expand(n, -1), True)[0]
    for w in (0.0, 2.0):
        expected = torch.softmax((1 + w) * lc - w * lu, 0)
        if w == 0:
            torch.testing.assert_close(expected, lc.exp())  # w = 0: exactly the conditional
        draws = cond.guided_sample(uncond, w, True, generator=gen(3))[:, 0]
        counts = torch.stack([(draws == v).sum() for v in levels]).numpy()
        assert counts.sum() == n
        assert stats.chisquare(counts, expected.numpy() * n).pvalue > 1e-3


def test_guided_draws_off_the_grid_approximate_the_tilted_density():
    model = tiny()
    n = 4000
    params = model(torch.zeros(2, 1, 2, 2, dtype=model.dtype), 0.05, [1, 3]).params[:, :, 0, 0].detach()
    cond, uncond = (model.mixture(p.expand(n, -1)) for p in params.chunk(2))
    draws = cond.guided_sample(uncond, 0.0, False, generator=gen(4))[:, 0]
    reference = cond.sample(False, generator=gen(5))[:, 0]  # w = 0: the conditional itself
    assert stats.ks_2samp(draws.numpy(), reference.numpy()).pvalue > 1e-3


def test_guidance_in_sample_pipeline_and_score():
    model = tiny()
    g0 = model.sample(3, 0.0, [0, 1, 2], generator=gen(7), progress=False)
    assert torch.equal(g0, model.sample(3, 0.0, [0, 1, 2], generator=gen(7), progress=False, guidance_scale=0))
    cached = model.sample(3, 0.0, [0, 1, 2], generator=gen(8), progress=False, guidance_scale=1.5)
    naive = model.sample(3, 0.0, [0, 1, 2], generator=gen(8), progress=False, guidance_scale=1.5, use_cache=False)
    assert torch.equal(cached, naive)  # the guided loop runs either sampler on the doubled batch alike
    assert model.num_sampling_evaluations(guided=True) == 2 * model.num_sampling_evaluations()
    # guided score = (1 + w) conditional − w unconditional; w = 0 is the plain score
    x = torch.randn(3, 1, 2, 2, dtype=model.dtype) * 0.5
    sc, su = model.score(x, 0.02, [0, 1, 2]), model.score(x, 0.02, None)
    torch.testing.assert_close(model.guided_score(x, 0.02, [0, 1, 2], 2.0), 3 * sc - 2 * su)
    assert torch.equal(model.guided_score(x, 0.02, [0, 1, 2], 0.0), sc)
    pipe = NCMLClassConditionalPipeline(model.float(), VPSDEScheduler())
    pipe.set_progress_bar_config(disable=True)
    out = pipe(class_labels=[0, 1], guidance_scale=1.0, t_start=0.01, num_inference_steps=2, correct_steps=1,
               generator=gen(0), output_type="pt")
    plain = pipe(class_labels=[0, 1], t_start=0.01, num_inference_steps=2, correct_steps=1, generator=gen(0),
                 output_type="pt")
    assert out.images.shape == (2, 1, 2, 2) and torch.isfinite(out.images).all()
    assert out.nfe == 2 * plain.nfe


@pytest.mark.parametrize("w, match", [(-1.0, "finite number >= 0"), (float("nan"), "finite number >= 0"),
                                      (True, "finite number >= 0"), ("2", "finite number >= 0")])
def test_bad_guidance_scales(w, match):
    model = tiny()
    with pytest.raises(ValueError, match=match):
        model.sample(1, 0.0, [0], guidance_scale=w, progress=False)


def test_guidance_needs_a_guidable_model_and_real_labels():
    with pytest.raises(ValueError, match="unconditional"):
        tiny(num_classes=None, null_class=False).sample(1, 0.0, guidance_scale=1.0, progress=False)
    with pytest.raises(ValueError, match="null class"):
        tiny(null_class=False).sample(1, 0.0, [0], guidance_scale=1.0, progress=False)
    with pytest.raises(ValueError, match="real label"):
        tiny().sample(2, 0.0, [0, 3], guidance_scale=1.0, progress=False)
    with pytest.raises(ValueError, match="class_labels must lie"):
        tiny().sample(1, 0.0, [7], guidance_scale=1.0, progress=False)
    pipe = NCMLClassConditionalPipeline(tiny(null_class=False).float(), VPSDEScheduler())
    with pytest.raises(ValueError, match="null class"):
        pipe(class_labels=[0], guidance_scale=1.0, t_start=0.0)


# ---- the Bayes classifier ------------------------------------------------------------------------------
def test_class_posterior_is_bayes_rule_over_exact_likelihoods():
    model = tiny()
    x = all_images(model)  # all 256 images of the 2x2, 2-bit grid
    log_px_y = torch.stack([model.log_prob(x, 0.0, [y] * len(x)).flatten(1).sum(1) for y in range(3)], 1)
    assert torch.allclose(torch.logsumexp(log_px_y, 0), torch.zeros(3, dtype=torch.float64), atol=1e-9)
    prior = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    brute = log_px_y + prior.log()
    brute = brute - torch.logsumexp(brute, 1, keepdim=True)
    uint8 = ((x + 1) / model.bin_width).round().to(torch.uint8).permute(0, 2, 3, 1)
    got = class_posterior(model, uint8, prior=prior.tolist(), batch_size=48, progress=False)
    torch.testing.assert_close(got, brute)
    torch.testing.assert_close(got.exp().sum(1), torch.ones(len(x), dtype=torch.float64))
    # float model-space input at t = 0 is the same images; a uniform prior by default
    uniform = class_posterior(model, x, batch_size=300, progress=False)
    torch.testing.assert_close(uniform, log_px_y - torch.logsumexp(log_px_y, 1, keepdim=True))
    noisy = class_posterior(model, x + 0.1, t=0.01, batch_size=300, progress=False)  # any x_t at t > 0
    assert noisy.shape == (256, 3) and torch.isfinite(noisy).all()


def test_class_posterior_bad_input():
    model = tiny()
    images = np.zeros((2, 2, 2, 1), np.uint8)
    with pytest.raises(ValueError, match="must be class-conditional"):
        class_posterior(tiny(num_classes=None, null_class=False), images, progress=False)
    with pytest.raises(ValueError, match="prior must sum to 1"):
        class_posterior(model, images, prior=[0.5, 0.5, 0.5], progress=False)
    with pytest.raises(ValueError, match=r"prior must have shape \(3,\)"):
        class_posterior(model, images, prior=[0.5, 0.5], progress=False)
    with pytest.raises(ValueError, match="prior must hold finite probabilities"):
        class_posterior(model, images, prior=[1.5, -0.5, 0.0], progress=False)
    with pytest.raises(ValueError, match="t must be a finite float"):
        class_posterior(model, images, t=float("nan"), progress=False)
    with pytest.raises(ValueError, match="images must have shape"):
        class_posterior(model, np.zeros((2, 3, 3, 1), np.uint8), progress=False)
    with pytest.raises(ValueError, match="on the 4-level data grid|x must lie"):
        class_posterior(model, torch.full((1, 1, 2, 2), 0.1, dtype=torch.float64), progress=False)


def test_smoothed_class_posterior_averages_log_likelihoods_over_noisy_copies():
    model, sched = tiny(), VPSDEScheduler()
    images = np.random.default_rng(0).integers(0, 4, size=(5, 2, 2, 1)).astype(np.uint8)
    sigma = 0.3
    # the noisy copies: model-space images plus sigma-noise, scaled by m(t) at the matched t
    x_t, t = noisy_marginal_draw(sched, images, sigma, num_bits=2, generator=gen(7))
    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).double() * model.bin_width - 1
    m = sched.marginal_mean_coeff(torch.tensor(t, dtype=torch.float64))
    torch.testing.assert_close(x_t, m * (x0 + sigma * torch.randn(x0.shape, generator=gen(7), dtype=torch.float64)))
    assert t == matched_time(sched, sigma) > 0
    # by hand: log p(y) + mean_k log p_t(x_k | y), normalised over classes
    prior = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    g = gen(3)
    draws = [noisy_marginal_draw(sched, images, sigma, num_bits=2, generator=g)[0] for _ in range(3)]
    ll = torch.stack([torch.stack([model.log_prob(x, t, [y] * len(x)).flatten(1).sum(1) for y in range(3)], 1)
                      for x in draws]).mean(0) + prior.log()
    got = smoothed_class_posterior(model, sched, images, sigma, num_draws=3, prior=prior.tolist(), generator=gen(3),
                                   batch_size=7, progress=False)
    torch.testing.assert_close(got, ll - torch.logsumexp(ll, 1, keepdim=True))
    torch.testing.assert_close(got.exp().sum(1), torch.ones(5, dtype=torch.float64))
    # one draw is class_posterior on that draw; noise_std = 0 is class_posterior at t = 0
    one = smoothed_class_posterior(model, sched, images, sigma, num_draws=1, generator=gen(3), progress=False)
    torch.testing.assert_close(one, class_posterior(model, draws[0], t, progress=False))
    torch.testing.assert_close(smoothed_class_posterior(model, sched, images, 0.0, progress=False),
                               class_posterior(model, images, progress=False))
    with pytest.raises(ValueError, match="num_draws must be an int >= 1"):
        smoothed_class_posterior(model, sched, images, sigma, num_draws=0, progress=False)
    with pytest.raises(ValueError, match="noise_std must be"):
        smoothed_class_posterior(model, sched, images, -0.1, progress=False)
    with pytest.raises(TypeError, match="images must have dtype uint8"):
        noisy_marginal_draw(sched, images.astype(np.float32), sigma, num_bits=2)


def test_smoothed_class_posterior_of_noisy_images_tops_their_noise_up():
    model, sched = tiny(), VPSDEScheduler()
    images = np.random.default_rng(1).integers(0, 4, size=(4, 2, 2, 1)).astype(np.uint8)
    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).double() * model.bin_width - 1
    s_in, sigma = 0.2, 0.3  # x_0 + s_in·ε0 + sqrt(sigma² − s_in²)·ε_k has noise std sigma
    noisy = x0 + s_in * torch.randn(x0.shape, generator=gen(11), dtype=torch.float64)  # observed x_0 + s_in·ε
    t = matched_time(sched, sigma)
    m = sched.marginal_mean_coeff(torch.tensor(t, dtype=torch.float64))
    # by hand: each copy adds independent noise of std sqrt(sigma² − s_in²), scaled by m(t) at sigma's matched t
    g = gen(5)
    copies = [m * (noisy + math.sqrt(sigma**2 - s_in**2) * torch.randn(x0.shape, generator=g, dtype=torch.float64))
              for _ in range(3)]
    ll = torch.stack([torch.stack([model.log_prob(x, t, [y] * len(x)).flatten(1).sum(1) for y in range(3)], 1)
                      for x in copies]).mean(0)
    got = smoothed_class_posterior(model, sched, noisy, sigma, num_draws=3, input_noise_std=s_in, generator=gen(5),
                                   progress=False)
    torch.testing.assert_close(got, ll - torch.logsumexp(ll, 1, keepdim=True))
    # with no room to add noise, one evaluation at the matched t (num_draws is irrelevant)
    torch.testing.assert_close(
        smoothed_class_posterior(model, sched, noisy, s_in, num_draws=5, input_noise_std=s_in, progress=False),
        class_posterior(model, m_at(sched, s_in) * noisy, matched_time(sched, s_in), progress=False))
    # clean model-space floats behave as the uint8 images
    torch.testing.assert_close(
        smoothed_class_posterior(model, sched, x0, sigma, num_draws=2, generator=gen(8), progress=False),
        smoothed_class_posterior(model, sched, images, sigma, num_draws=2, generator=gen(8), progress=False))
    with pytest.raises(ValueError, match="noise_std=0.1 must be >= input_noise_std=0.2"):
        smoothed_class_posterior(model, sched, noisy, 0.1, input_noise_std=s_in, progress=False)
    with pytest.raises(ValueError, match="input_noise_std=0.2 > 0: images must be the noisy images as a float"):
        smoothed_class_posterior(model, sched, images, sigma, input_noise_std=s_in, progress=False)
    for bad in (-0.1, float("nan"), True):
        with pytest.raises(ValueError, match="input_noise_std must be a finite float >= 0"):
            smoothed_class_posterior(model, sched, noisy, sigma, input_noise_std=bad, progress=False)
    with pytest.raises(ValueError, match="images must be finite"):
        smoothed_class_posterior(model, sched, noisy.index_fill(0, torch.tensor([1]), float("nan")), sigma,
                                 input_noise_std=s_in, progress=False)
    with pytest.raises(ValueError, match=r"images: a float tensor must be model-space .* got \(4, 1, 2\)"):
        smoothed_class_posterior(model, sched, noisy[:, :, 0], sigma, input_noise_std=s_in, progress=False)


def m_at(sched, sigma: float) -> torch.Tensor:
    """``m(t)`` at the time matched to ``sigma``."""
    return sched.marginal_mean_coeff(torch.tensor(matched_time(sched, sigma), dtype=torch.float64))


def test_matched_time_makes_scaled_noisy_images_marginal_draws():
    sched = VPSDEScheduler()
    for sigma in (0.0, 2 / 255, 0.05, 0.2):
        t = matched_time(sched, sigma)
        tt = torch.tensor([t], dtype=torch.float64)
        ratio = (sched.marginal_std(tt) / sched.marginal_mean_coeff(tt)).item()
        assert math.isclose(ratio, sigma, rel_tol=1e-9, abs_tol=1e-15) and 0 <= t <= sched.t_max
    with pytest.raises(ValueError, match="exceeds"):
        matched_time(sched, 10.0)
    with pytest.raises(ValueError, match="noise_std must be"):
        matched_time(sched, -1.0)
