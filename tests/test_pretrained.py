"""The bundled pipelines load, have a sane held-out likelihood, and sample."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ncml
from ncml.data import load_dataset
from ncml.evaluation import bits_per_dim
from ncml.bundled import available

BUNDLED = ("ncpn-mnist5k-vp", "ncpn-mnist5k-mle")


def test_bundled_names_exist():
    assert callable(ncml.pretrained)  # the function, not shadowed by a submodule
    assert set(BUNDLED) <= set(available())
    with pytest.raises(ValueError, match="not a bundled pipeline"):
        ncml.pretrained("nope")


def test_no_import_shadows_the_function():
    """The data folder's name is not importable: ``import ncml.pretrained`` fails and cannot replace the function
    (a fresh interpreter, so that a failure here cannot replace it for the other tests)."""
    code = ("import ncml\ntry:\n    import ncml.pretrained\nexcept ModuleNotFoundError:\n    print('refused')\n"
            f"print(ncml.pretrained({BUNDLED[0]!r}).is_dir())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(ncml.__file__).parents[1])
    assert run.stdout.split() == ["refused", "True"], run.stderr[-2000:]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_pipeline_likelihood_and_sampling(name):
    pipe = ncml.NCMLPipeline.from_pretrained(ncml.pretrained(name))
    pipe.set_progress_bar_config(disable=True)
    images, labels = load_dataset("mnist5k", "test")  # ordered by class: a seeded shuffle covers all ten
    idx = np.random.default_rng(0).permutation(len(images))[:64]
    assert len(set(labels[idx].tolist())) == 10
    bpd = bits_per_dim(pipe.backbone, images[idx], t=0.0, progress=False)
    assert bpd.mean < 2.0, bpd.mean
    out = pipe(batch_size=2, t_start=0.01, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
               output_type="np")
    assert out.images.shape == (2, 28, 28, 1) and out.images.dtype == np.uint8


def test_bundled_class_conditional_pipeline():
    """The bundled class-conditional model: a null class for guidance, a likelihood given the label, an exact Bayes
    classifier far above chance on test digits, and guided sampling through the pipeline."""
    from ncml.evaluation import class_posterior

    pipe = ncml.NCMLClassConditionalPipeline.from_pretrained(ncml.pretrained("ncpn-mnist5k-vp-cond"))
    pipe.set_progress_bar_config(disable=True)
    config = pipe.backbone.config
    assert config.num_classes == 10 and config.null_class
    images, labels = load_dataset("mnist5k", "test")
    idx = np.random.default_rng(0).permutation(len(images))[:100]
    bpd = bits_per_dim(pipe.backbone, images[idx], t=0.0, class_labels=torch.from_numpy(labels[idx]), progress=False)
    assert bpd.mean < 2.0, bpd.mean
    log_post = class_posterior(pipe.backbone, images[idx], progress=False)
    accuracy = (log_post.argmax(1).numpy() == labels[idx]).mean()
    assert accuracy > 0.5, accuracy  # chance: 0.1
    out = pipe(class_labels=[3, 7], guidance_scale=1.0, t_start=0.01, num_inference_steps=2,
               generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (2, 28, 28, 1) and out.images.dtype == np.uint8
