"""Two-part sampling against an analytic backbone: Gaussian data, exact marginals, exact scores.

If AR sampling draws ``x_{t_start}`` from the exact marginal and refinement integrates the reverse SDE / ODE
with the exact score, the output is ``N(μ, σ²)`` up to discretisation and sampling error, for every SDE.
The draws at ``t_start`` are much wider than ``σ``, so a pipeline that skipped or botched refinement fails.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from gaussian_backbone import GaussianBackbone

from ncml import (NCMLClassConditionalPipeline, NCMLInpaintPipeline, NCMLPipeline, SubVPSDEScheduler,
                  VESDEScheduler, VPSDEScheduler)
from ncml.pipelines.refinement import refine

MU, SIGMA = 0.1, 0.2
BATCH, SIZE = 256, 8  # 16,384 i.i.d. values per run: standard error of the mean ≈ 0.0016, of the std ≈ 0.0011

# sub-VP's paper horizon T = 0.025 barely noises the data (s(T) ≈ 0.009), which would not test refinement;
# a longer horizon of the same SDE does.
SCHEDULERS = {"ve": VESDEScheduler, "vp": VPSDEScheduler, "subvp": lambda: SubVPSDEScheduler(t_max=0.5)}
MODES = {"predictor": dict(correct_steps=0), "pc": dict(correct_steps=1),
         "probability_flow": dict(correct_steps=0, probability_flow=True)}


def make_pipeline(scheduler, pipeline_class=NCMLPipeline, **fields):
    backbone = GaussianBackbone.for_scheduler(scheduler, sample_size=SIZE, mu=MU, sigma=SIGMA, **fields)
    pipe = pipeline_class(backbone, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_analytic_backbone_normalises():
    scheduler = VPSDEScheduler()
    model = GaussianBackbone.for_scheduler(scheduler, sample_size=1, mu=MU, sigma=SIGMA)
    levels = torch.linspace(-1, 1, 256).view(-1, 1, 1, 1)
    mass = model.log_prob(levels, 0.0).exp().sum()  # t = 0: probability masses over all 256 bins
    assert abs(mass.item() - 1) < 1e-5
    grid = torch.linspace(-4, 4, 4001).view(-1, 1, 1, 1)
    density = (model.log_prob(grid, 0.05) - math.log(model.bin_width)).exp().flatten().double()
    assert abs(torch.trapezoid(density, dx=8 / 4000).item() - 1) < 1e-4  # t > 0: a density
    x = torch.randn(3, 1, 1, 1)  # the autograd score is the Gaussian's score
    mean, std = model.marginal(torch.full((3,), 0.05), None, x)
    torch.testing.assert_close(model.score(x, 0.05), -(x - mean) / std**2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sde", SCHEDULERS)
def test_refinement_recovers_the_data_distribution(sde, mode):
    scheduler = SCHEDULERS[sde]()
    pipe = make_pipeline(scheduler)
    out = pipe(BATCH, t_start=scheduler.t_max, num_inference_steps=100, output_type="pt",
               generator=torch.Generator().manual_seed(1), **MODES[mode])
    noisy_std = out.noisy_samples.std().item()
    assert noisy_std > 1.5 * SIGMA, "the AR draws at t_start must be far from the data for this test to bite"
    x = out.images
    assert abs(x.mean().item() - MU) < 0.015
    assert abs(x.std().item() - SIGMA) < 0.015
    assert out.nfe == SIZE * SIZE + 100 * (1 + MODES[mode]["correct_steps"])  # AR positions + scores


def test_default_t_start_and_denoise_flag():
    scheduler = VPSDEScheduler()
    pipe = make_pipeline(scheduler)
    kwargs = dict(num_inference_steps=20, output_type="pt", correct_steps=0)
    a = pipe(BATCH, generator=torch.Generator().manual_seed(0), **kwargs)
    b = pipe(BATCH, t_start=scheduler.t_max / 2, generator=torch.Generator().manual_seed(0), **kwargs)
    torch.testing.assert_close(a.images, b.images)  # t_start=None means t_max / 2
    c = pipe(BATCH, t_start=scheduler.t_max / 2, denoise=False, generator=torch.Generator().manual_seed(0),
             **kwargs)
    assert not torch.equal(b.images, c.images)  # the last step's noise is dropped only with denoise=True


def test_t_start_zero_is_plain_ar_sampling():
    scheduler = VESDEScheduler()
    pipe = make_pipeline(scheduler)
    out = pipe(BATCH, t_start=0.0, output_type="pt", generator=torch.Generator().manual_seed(0))
    direct = pipe.backbone.sample(BATCH, 0.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.images, direct)  # no refinement: the discretised t = 0 draw itself
    assert out.nfe == SIZE * SIZE  # one AR evaluation per pixel, no refinement


def test_refine_counts_evaluations_and_probability_flow_is_deterministic():
    scheduler = VPSDEScheduler()
    pipe = make_pipeline(scheduler)
    x = pipe.backbone.sample(4, 0.05, generator=torch.Generator().manual_seed(0))
    out = [refine(pipe.backbone, scheduler, x, t_start=0.05, num_inference_steps=7, correct_steps=0,
                  probability_flow=True, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    torch.testing.assert_close(out[0].sample, out[1].sample)
    assert out[0].nfe == 7
    sde = refine(pipe.backbone, scheduler, x, t_start=0.05, num_inference_steps=7, correct_steps=2,
                 generator=torch.Generator().manual_seed(0))
    assert sde.nfe == 7 * 3
    steps = []
    refine(pipe.backbone, scheduler, x, t_start=0.05, num_inference_steps=7, correct_steps=0,
           on_step_end=lambda i, t, x: steps.append((i, t)))
    assert [i for i, _ in steps] == list(range(7))
    assert steps[0][1] == 0.05 and all(a > b for (_, a), (_, b) in zip(steps, steps[1:]))


def test_callback_on_step_end_can_replace_the_sample():
    pipe = make_pipeline(VPSDEScheduler())
    seen = []

    def callback(pipeline, i, t, kwargs):
        seen.append(i)
        assert pipeline is pipe
        return {"sample": torch.zeros_like(kwargs["sample"])} if i == 4 else None

    out = pipe(2, t_start=0.05, num_inference_steps=5, correct_steps=0, probability_flow=True, output_type="pt",
               callback_on_step_end=callback)
    assert seen == [0, 1, 2, 3, 4]
    assert torch.all(out.images.abs() <= pipe.backbone.bin_width)  # zero, quantised to the nearest level


def test_class_conditional_uses_the_labels():
    scheduler = VPSDEScheduler()
    pipe = make_pipeline(scheduler, NCMLClassConditionalPipeline, num_classes=3, class_shift=0.3)
    for label in (0, 2):
        out = pipe(class_labels=[label] * BATCH, t_start=scheduler.t_max, num_inference_steps=50,
                   output_type="pt", generator=torch.Generator().manual_seed(0))
        assert out.images.shape[0] == BATCH
        assert abs(out.images.mean().item() - (MU + 0.3 * label)) < 0.02
        assert abs(out.images.std().item() - SIGMA) < 0.02


@pytest.mark.parametrize("sde", ["ve", "vp"])
def test_inpainting_keeps_known_pixels_and_samples_the_rest(sde):
    scheduler = SCHEDULERS[sde]()
    pipe = make_pipeline(scheduler, NCMLInpaintPipeline)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(BATCH, SIZE, SIZE, 1), dtype=np.uint8)
    mask = rng.integers(0, 2, size=(SIZE, SIZE))
    out = pipe(image=image, mask=mask, t_start=scheduler.t_max, num_inference_steps=100, output_type="np",
               generator=torch.Generator().manual_seed(0))
    keep = np.broadcast_to(mask[None, :, :, None].astype(bool), image.shape)
    assert np.array_equal(out.images[keep], image[keep])
    # dimensions are independent, so the unknown pixels follow the data distribution N(μ, σ²)
    free = out.images[~keep].astype(np.float64) * 2 / 255 - 1
    assert abs(free.mean() - MU) < 0.015 and abs(free.std() - SIGMA) < 0.015
    # phase 1 saw the known pixels noised to t_start, not the clean ones
    noisy_known = out.noisy_samples.permute(0, 2, 3, 1).numpy()[keep]
    assert not np.allclose(noisy_known, image[keep] * 2 / 255 - 1, atol=0.05)


def test_to_changes_the_dtype_of_sampling():
    pipe = make_pipeline(VPSDEScheduler())
    assert pipe.to(dtype=torch.float64) is pipe and pipe.dtype == torch.float64
    out = pipe(2, t_start=0.05, num_inference_steps=3, output_type="pt", generator=torch.Generator().manual_seed(0))
    assert out.noisy_samples.dtype == torch.float64


def test_user_defined_sde_and_backbone_round_trip(tmp_path):
    """A user's SDE subclass (tests/schedulers/custom_sde.py) and backbone subclass work and save/load by name."""
    from custom_sde import CosineVPSDEScheduler

    scheduler = CosineVPSDEScheduler(t_max=0.5)  # long enough to noise the data well beyond σ
    pipe = make_pipeline(scheduler)
    kwargs = dict(t_start=scheduler.t_max, num_inference_steps=100, output_type="pt")
    out = pipe(BATCH, generator=torch.Generator().manual_seed(0), **kwargs)
    assert out.noisy_samples.std().item() > 1.5 * SIGMA
    assert abs(out.images.mean().item() - MU) < 0.015 and abs(out.images.std().item() - SIGMA) < 0.015

    pipe.save_pretrained(tmp_path / "custom")
    index = json.loads((tmp_path / "custom" / "model_index.json").read_text())
    assert index["scheduler"] == ["custom_sde", "CosineVPSDEScheduler"]
    assert index["backbone"] == ["gaussian_backbone", "GaussianBackbone"]
    loaded = NCMLPipeline.from_pretrained(tmp_path / "custom")
    loaded.set_progress_bar_config(disable=True)
    again = loaded(BATCH, generator=torch.Generator().manual_seed(0), **kwargs)
    torch.testing.assert_close(again.images, out.images, rtol=0, atol=0)


def test_inference_mode_is_refused_with_a_clear_error():
    pipe = make_pipeline(VPSDEScheduler())
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        pipe(2, num_inference_steps=2)
    with torch.no_grad():  # no_grad is fine: the score re-enables autograd locally
        assert pipe(2, num_inference_steps=2, output_type="np").images.shape == (2, SIZE, SIZE, 1)
