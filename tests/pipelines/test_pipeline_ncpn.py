"""The pipelines with a tiny random NCPN: outputs, determinism, Hub folders, inpainting, classes, bad input.

Naive AR sampling costs one forward pass per pixel, so images are 8×8 and refinement takes 2 steps.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_testing import populate_hub_cache
from PIL import Image

from ncml import (NCMLClassConditionalPipeline, NCMLInpaintPipeline, NCMLPipeline, NCPNConfig, NCPNModel, Pipeline,
                  VESDEScheduler, VPSDEScheduler)
from ncml.data import to_model_space

SIZE = 8
TINY = dict(sample_size=SIZE, in_channels=1, num_bits=8, nr_resnet=1, nr_filters=8, nr_logistic_mix=2,
            attention_heads=2, dropout=0.0, num_classes=None, fourier_scale=1.0)
if "embedding_dim" in {f.name for f in dataclasses.fields(NCPNConfig)}:
    TINY["embedding_dim"] = 16
FAST = dict(t_start=0.05, num_inference_steps=2, correct_steps=1)  # 4 score evaluations


def tiny_ncpn(**overrides) -> NCPNModel:
    """A tiny NCPN with its weights jittered (seeded), so zero-initialised paths (e.g. conditioning) matter."""
    model = NCPNModel(NCPNConfig(**{**TINY, **overrides}))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.eval()


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seed(s=0):
    return torch.Generator().manual_seed(s)


@pytest.fixture(scope="module")
def pipe():
    return quiet(NCMLPipeline(tiny_ncpn(), VPSDEScheduler()))


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline") / "tiny-ncml"
    pipe.save_pretrained(folder)
    return folder


def files_of(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file()}


# ---- outputs --------------------------------------------------------------------------------------
def test_output_types_determinism_and_tuple(pipe):
    np_out = pipe(2, generator=seed(0), output_type="np", **FAST)
    assert isinstance(np_out.images, np.ndarray) and np_out.images.dtype == np.uint8
    assert np_out.images.shape == (2, SIZE, SIZE, 1)
    assert np_out.noisy_samples.shape == (2, 1, SIZE, SIZE) and np_out.noisy_samples.dtype == torch.float32

    pt_out = pipe(2, generator=seed(0), output_type="pt", **FAST)  # same generator: same images
    assert pt_out.images.shape == (2, 1, SIZE, SIZE) and pt_out.images.dtype == torch.float32
    torch.testing.assert_close(pt_out.images, to_model_space(np_out.images), rtol=0, atol=0)
    torch.testing.assert_close(pt_out.noisy_samples, np_out.noisy_samples, rtol=0, atol=0)

    pil_out = pipe(2, generator=seed(0), output_type="pil", **FAST)
    assert isinstance(pil_out.images, list) and len(pil_out.images) == 2
    assert all(isinstance(im, Image.Image) and im.mode == "L" and im.size == (SIZE, SIZE) for im in pil_out.images)
    assert np.array_equal(np.stack([np.asarray(im) for im in pil_out.images]), np_out.images[..., 0])

    other = pipe(2, generator=seed(1), output_type="np", **FAST)
    assert not np.array_equal(other.images, np_out.images)

    images, nfe, noisy = pipe(2, generator=seed(0), output_type="np", return_dict=False, **FAST)
    assert np.array_equal(images, np_out.images) and nfe == np_out.nfe
    torch.testing.assert_close(noisy, np_out.noisy_samples, rtol=0, atol=0)


def test_nfe_counts_both_phases(pipe):
    ar_only = pipe(1, t_start=0.0, output_type="np", generator=seed(0))
    assert ar_only.nfe == SIZE * SIZE  # phase 1: one evaluation per pixel
    both = pipe(1, output_type="np", generator=seed(0), **FAST)
    assert both.nfe - ar_only.nfe == 2 * (1 + 1)  # phase 2: (corrector + predictor) per step


def test_t_start_zero_returns_ar_samples_on_the_grid(pipe):
    out = pipe(2, t_start=0.0, output_type="pt", generator=seed(0))
    torch.testing.assert_close(out.images, out.noisy_samples, rtol=0, atol=1e-6)  # nothing to refine


def test_per_sample_generators_make_samples_independent_of_the_batch(pipe):
    both = pipe(2, generator=[seed(3), seed(4)], output_type="np", **FAST)
    alone = pipe(1, generator=[seed(4)], output_type="np", **FAST)
    assert np.array_equal(both.images[1:], alone.images)


# ---- progress bars --------------------------------------------------------------------------------
def test_progress_bar_shows_both_phases_and_can_be_disabled(capfd):
    pipe = NCMLPipeline(tiny_ncpn(), VPSDEScheduler())
    pipe(1, generator=seed(0), output_type="np", **FAST)
    err = capfd.readouterr().err
    assert "refinement" in err and "AR sampling" in err
    pipe.set_progress_bar_config(disable=True)
    pipe(1, generator=seed(0), output_type="np", **FAST)
    assert capfd.readouterr().err == ""
    with pytest.raises(TypeError, match="disabel"):
        pipe.set_progress_bar_config(disabel=True)


# ---- Hub folders ----------------------------------------------------------------------------------
def test_save_writes_the_documented_layout(saved):
    assert {"model_index.json", "README.md", "backbone/config.json", "backbone/model.safetensors",
            "scheduler/scheduler_config.json"} <= files_of(saved)
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == "NCMLPipeline" and isinstance(index["_ncml_version"], str)
    assert index["backbone"] == ["ncml", "NCPNModel"] and index["scheduler"] == ["ncml", "VPSDEScheduler"]
    assert "library_name: ncml" in (saved / "README.md").read_text()


def test_load_by_path_and_by_repo_id_gives_identical_images(pipe, saved, hub_cache):
    expected = pipe(2, generator=seed(0), output_type="np", **FAST).images
    by_path = quiet(NCMLPipeline.from_pretrained(saved))
    assert np.array_equal(by_path(2, generator=seed(0), output_type="np", **FAST).images, expected)

    populate_hub_cache(saved, "ncml-test/tiny-ncml", hub_cache)
    by_id = quiet(NCMLPipeline.from_pretrained("ncml-test/tiny-ncml", cache_dir=hub_cache))
    assert np.array_equal(by_id(2, generator=seed(0), output_type="np", **FAST).images, expected)

    generic = Pipeline.from_pretrained(saved)  # the base class builds the class named in model_index.json
    assert type(generic) is NCMLPipeline
    assert type(NCMLInpaintPipeline.from_pretrained(saved)) is NCMLInpaintPipeline  # same components


def test_component_overrides(saved):
    pipe = NCMLPipeline.from_pretrained(saved, scheduler=VPSDEScheduler(beta_max=10.0))  # same SDE class and T
    assert pipe.scheduler.config.beta_max == 10.0
    pipe = NCMLPipeline.from_pretrained(saved, scheduler=VESDEScheduler(t_max=0.3), allow_scheduler_mismatch=True)
    assert isinstance(pipe.scheduler, VESDEScheduler) and pipe.scheduler.t_max == 0.3
    with pytest.raises(TypeError, match="schedular"):
        NCMLPipeline.from_pretrained(saved, schedular=VESDEScheduler())
    with pytest.raises(TypeError, match="scheduler"):
        NCMLPipeline.from_pretrained(saved, scheduler="VESDEScheduler")


@pytest.mark.parametrize("key, value", [("backbone", ["torch", "Linear"]), ("backbone", ["os", "system"]),
                                        ("scheduler", ["ncml", "NCPNModel"]),
                                        ("_class_name", "EvilPipeline"), ("_class_name", "NCPNModel")])
def test_model_index_naming_a_non_ncml_class_is_refused(saved, tmp_path, key, value):
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(saved, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index[key] = value
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="model_index.json"):
        NCMLPipeline.from_pretrained(folder)


def test_push_to_hub_uploads_the_saved_files_and_a_card(pipe, saved, monkeypatch):
    import huggingface_hub

    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs.get("private"))

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kwargs):
        calls["upload"] = (repo_id, files_of(folder_path), commit_message)
        card = (Path(folder_path) / "README.md").read_text()
        calls["card"] = card
        return "https://huggingface.co/ncml-test/tiny-ncml"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    pipe = NCMLPipeline(pipe.backbone, pipe.scheduler)
    pipe.set_model_card(datasets=["mnist"], metrics={"bits/dim": 1.23})
    pipe.push_to_hub("ncml-test/tiny-ncml", private=True, commit_message="tiny")
    assert calls["create_repo"] == ("ncml-test/tiny-ncml", True)
    repo_id, uploaded, message = calls["upload"]
    assert repo_id == "ncml-test/tiny-ncml" and message == "tiny"
    assert uploaded == files_of(saved) and "README.md" in uploaded
    assert "library_name: ncml" in calls["card"] and "mnist" in calls["card"] and "| bits/dim | 1.23 |" in calls["card"]
    with pytest.raises(ValueError, match="repo_id"):
        pipe.save_pretrained(saved.parent / "unused", push_to_hub=True)


def test_to_moves_the_backbone(pipe):
    assert pipe.to("cpu") is pipe and pipe.device == torch.device("cpu")


def test_reference_usage(tmp_path):
    """The basic use: load a pipeline folder, call it with t_start, get PIL images (4×4: 200 score evaluations)."""
    NCMLPipeline(tiny_ncpn(sample_size=4), VPSDEScheduler()).save_pretrained(tmp_path / "reference")
    images = NCMLPipeline.from_pretrained(tmp_path / "reference")(t_start=0.05).images
    assert len(images) == 1 and isinstance(images[0], Image.Image) and images[0].size == (4, 4)


# ---- inpainting ------------------------------------------------------------------------------------
@pytest.mark.parametrize("t_start", [0.05, 0.0])
def test_inpainting_keeps_known_pixels_bit_exact(t_start):
    pipe = quiet(NCMLInpaintPipeline(tiny_ncpn(), VPSDEScheduler()))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(2, SIZE, SIZE, 1), dtype=np.uint8)
    top_half = np.zeros((SIZE, SIZE), dtype=np.uint8)
    top_half[: SIZE // 2] = 1
    arbitrary = rng.integers(0, 2, size=image.shape).astype(bool)
    for mask in (top_half, arbitrary):
        out = pipe(image=image, mask=mask, t_start=t_start, num_inference_steps=2, output_type="np",
                   generator=seed(0))
        keep = np.broadcast_to(mask.reshape(-1 if mask.ndim == 4 else 1, SIZE, SIZE, 1), image.shape).astype(bool)
        assert np.array_equal(out.images[keep], image[keep])
        assert not np.array_equal(out.images[~keep], image[~keep])  # the rest was sampled
        if mask is top_half:  # phase 1 evaluates the network only for the unknown bottom half
            assert out.nfe == SIZE * SIZE // 2 + (4 if t_start else 0)


def test_inpainting_one_image_many_completions():
    pipe = quiet(NCMLInpaintPipeline(tiny_ncpn(), VPSDEScheduler()))
    image = torch.randint(0, 256, (1, SIZE, SIZE, 1), dtype=torch.uint8)
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[: SIZE // 2] = True
    out = pipe(3, image=image, mask=mask, output_type="np", generator=seed(0), **FAST)
    assert out.images.shape == (3, SIZE, SIZE, 1)
    assert (out.images[:, : SIZE // 2] == image.numpy()[:, : SIZE // 2]).all()
    assert not np.array_equal(out.images[0], out.images[1])


# ---- class-conditional --------------------------------------------------------------------------
def test_class_conditional_sampling_uses_the_labels():
    pipe = quiet(NCMLClassConditionalPipeline(tiny_ncpn(num_classes=3), VPSDEScheduler()))
    a = pipe(class_labels=[0, 0], generator=seed(0), output_type="np", **FAST)
    b = pipe(class_labels=[2, 2], generator=seed(0), output_type="np", **FAST)
    assert a.images.shape[0] == 2
    assert not torch.equal(a.noisy_samples, b.noisy_samples) and not np.array_equal(a.images, b.images)
    c = pipe(2, class_labels=torch.tensor([2, 2]), generator=seed(0), output_type="np", **FAST)
    d = pipe(2, class_labels=2, generator=seed(0), output_type="np", **FAST)
    assert np.array_equal(b.images, c.images) and np.array_equal(c.images, d.images)


def test_pipelines_check_the_backbone_kind():
    with pytest.raises(ValueError, match="NCMLClassConditionalPipeline"):
        NCMLPipeline(tiny_ncpn(num_classes=3), VPSDEScheduler())
    with pytest.raises(ValueError, match="unconditional"):
        NCMLClassConditionalPipeline(tiny_ncpn(), VPSDEScheduler())
    with pytest.raises(TypeError, match="scheduler"):
        NCMLPipeline(tiny_ncpn(), "vp")


# ---- bad input ------------------------------------------------------------------------------------
IMAGE = np.zeros((1, SIZE, SIZE, 1), dtype=np.uint8)
MASK = np.ones((SIZE, SIZE), dtype=bool)
BAD_CALLS = {
    "t_start<0": ("plain", dict(t_start=-0.01), ValueError, "t_start"),
    "t_start>t_max": ("plain", dict(t_start=0.2), ValueError, "t_start"),
    "t_start nan": ("plain", dict(t_start=float("nan")), ValueError, "t_start"),
    "steps<1": ("plain", dict(num_inference_steps=0), ValueError, "num_inference_steps"),
    "steps float": ("plain", dict(num_inference_steps=2.0), TypeError, "num_inference_steps"),
    "batch_size<1": ("plain", dict(batch_size=0), ValueError, "batch_size"),
    "correct_steps<0": ("plain", dict(correct_steps=-1), ValueError, "correct_steps"),
    "snr<=0": ("plain", dict(snr=0.0), ValueError, "snr"),
    "output_type": ("plain", dict(output_type="tensor"), ValueError, "output_type"),
    "generator list": ("plain", dict(batch_size=2, generator=[torch.Generator()]), ValueError, "generator"),
    "mask shape": ("inpaint", dict(image=IMAGE, mask=np.ones((SIZE, SIZE + 1), dtype=bool)), ValueError, "mask"),
    "mask dtype": ("inpaint", dict(image=IMAGE, mask=MASK.astype(np.float32)), TypeError, "mask"),
    "mask values": ("inpaint", dict(image=IMAGE, mask=MASK.astype(np.int64) * 2), ValueError, "mask"),
    "image shape": ("inpaint", dict(image=IMAGE[..., 0], mask=MASK), ValueError, "image"),
    "image size": ("inpaint", dict(image=np.zeros((1, 4, 4, 1), dtype=np.uint8), mask=MASK), ValueError, "image"),
    "image dtype": ("inpaint", dict(image=IMAGE.astype(np.float32), mask=MASK), TypeError, "image"),
    "image values": ("inpaint", dict(image=IMAGE.astype(np.int64) + 300, mask=MASK), ValueError, "image"),
    "image negative": ("inpaint", dict(image=IMAGE.astype(np.int64) - 1, mask=MASK), ValueError, "image"),
    "batch vs images": ("inpaint", dict(batch_size=3, image=np.zeros((2, SIZE, SIZE, 1), np.uint8), mask=MASK),
                        ValueError, "batch_size"),
    "labels missing": ("class", dict(class_labels=None), ValueError, "class_labels"),
    "labels range": ("class", dict(class_labels=[0, 3]), ValueError, "class_labels"),
    "labels negative": ("class", dict(class_labels=-1), ValueError, "class_labels"),
    "labels float": ("class", dict(class_labels=torch.tensor([0.5])), TypeError, "class_labels"),
    "labels length": ("class", dict(batch_size=3, class_labels=[0, 1]), ValueError, "class_labels"),
}


@pytest.fixture(scope="module")
def pipes(pipe):
    return {"plain": pipe, "inpaint": quiet(NCMLInpaintPipeline(pipe.backbone, VPSDEScheduler())),
            "class": quiet(NCMLClassConditionalPipeline(tiny_ncpn(num_classes=3), VPSDEScheduler()))}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_names_the_argument(pipes, case):
    kind, kwargs, error, argname = BAD_CALLS[case]
    with pytest.raises(error, match=argname):
        pipes[kind](**kwargs)


def test_class_labels_are_required_by_signature(pipes):
    with pytest.raises(TypeError, match="class_labels"):
        pipes["class"](2)
