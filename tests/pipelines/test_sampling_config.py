"""The pipeline's sampling config: saved with the folder, used for every call argument left as ``None``."""

from __future__ import annotations

import json

import pytest
import torch
from gaussian_backbone import GaussianBackbone

from ncml import NCMLPipeline, VPSDEScheduler
from ncml.pipelines.sampling_config import SAMPLING_CONFIG_NAME, SamplingConfig


def make_pipeline():
    scheduler = VPSDEScheduler()
    pipe = NCMLPipeline(GaussianBackbone.for_scheduler(scheduler, sample_size=4, mu=0.1, sigma=0.2), scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_round_trip_and_defaults(tmp_path):
    pipe = make_pipeline()
    assert pipe.sampling_config == SamplingConfig()  # t_start None = t_max / 2, 100 steps
    pipe.sampling_config = SamplingConfig(t_start=0.01, num_inference_steps=3, correct_steps=0, spacing="log",
                                          denoise="tweedie")
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / SAMPLING_CONFIG_NAME).read_text())["spacing"] == "log"
    loaded = NCMLPipeline.from_pretrained(tmp_path)
    assert loaded.sampling_config == pipe.sampling_config
    (tmp_path / SAMPLING_CONFIG_NAME).unlink()  # an older folder: the defaults
    assert NCMLPipeline.from_pretrained(tmp_path).sampling_config == SamplingConfig()


def test_config_sets_the_defaults_and_explicit_arguments_win():
    pipe = make_pipeline()
    pipe.sampling_config = SamplingConfig(t_start=0.02, num_inference_steps=3, correct_steps=0)
    out = pipe(2, output_type="pt", generator=torch.Generator().manual_seed(0))
    assert out.nfe == 16 + 3  # 16 AR positions (4×4) + 3 predictor steps, no corrector
    out = pipe(2, num_inference_steps=2, correct_steps=1, output_type="pt", generator=torch.Generator().manual_seed(0))
    assert out.nfe == 16 + 2 * 2
    assert pipe(2, t_start=0.0, output_type="pt").nfe == 16  # plain AR: no refinement
    a = pipe(2, output_type="pt", generator=torch.Generator().manual_seed(3)).images
    b = pipe(2, t_start=0.02, num_inference_steps=3, correct_steps=0, output_type="pt",
             generator=torch.Generator().manual_seed(3)).images
    assert torch.equal(a, b)


def test_tweedie_and_log_grid_run_and_differ_from_the_default():
    pipe = make_pipeline()
    kw = dict(t_start=0.02, num_inference_steps=4, correct_steps=0, output_type="pt")
    base = pipe(8, generator=torch.Generator().manual_seed(1), **kw).images
    for extra in (dict(spacing="log"), dict(denoise="tweedie")):
        other = pipe(8, generator=torch.Generator().manual_seed(1), **kw, **extra)
        assert other.nfe == 16 + 4 and not torch.equal(other.images, base)


def test_a_call_does_not_change_the_scheduler():
    pipe = make_pipeline()
    before = dict(vars(pipe.scheduler))
    pipe(2, t_start=0.02, num_inference_steps=3, output_type="pt")
    assert vars(pipe.scheduler) == before


@pytest.mark.parametrize("fields,error,match", [
    (dict(t_start=-0.1), ValueError, "t_start"),
    (dict(num_inference_steps=0), ValueError, "num_inference_steps"),
    (dict(num_inference_steps=2.0), TypeError, "num_inference_steps"),
    (dict(snr=float("nan")), ValueError, "snr"),
    (dict(denoise="yes"), ValueError, "denoise"),
    (dict(spacing="cosine"), ValueError, "spacing"),
    (dict(probability_flow=1), TypeError, "probability_flow"),
])
def test_bad_sampling_config(fields, error, match):
    with pytest.raises(error, match=match):
        SamplingConfig(**fields)
    with pytest.raises(error, match=match):  # the same checks on call arguments, naming the argument
        make_pipeline()(1, **({"t_start": 0.02} | fields))


@pytest.mark.parametrize("returned,error,match", [
    ({"sample": torch.zeros(3, 1, 4, 4)}, ValueError, r"shape \(3, 1, 4, 4\)"),
    ({"sample": torch.full((2, 1, 4, 4), float("nan"))}, ValueError, "NaN"),
    ({"sample": torch.zeros(2, 1, 4, 4, dtype=torch.uint8)}, TypeError, "float tensor"),
    ({"sample": [0.0]}, TypeError, "float tensor"),
    ([1, 2], TypeError, "None or a dict"),
])
def test_callback_returns_are_checked_and_name_the_callback(returned, error, match):
    def my_callback(pipe, i, t, state):
        return returned

    with pytest.raises(error, match=match) as info:
        make_pipeline()(2, t_start=0.02, num_inference_steps=2, callback_on_step_end=my_callback, output_type="pt")
    assert "my_callback" in str(info.value)
