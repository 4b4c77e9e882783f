"""``ncml`` user errors: one line ``ncml: error: …`` naming the option, exit status 2, and no work done first."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ncml import cli


def _tiny_backbone(**config):
    from ncml.models.ncpn import NCPNConfig, NCPNModel

    options = dict(sample_size=8, in_channels=1, nr_resnet=1, nr_filters=8, nr_logistic_mix=2, attention_heads=0,
                   dropout=0.0, embedding_dim=16)
    return NCPNModel(NCPNConfig(**{**options, **config}))


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """A tiny untrained unconditional NCPN + VP-SDE (t_max = 0.1) pipeline for 8×8 grey images."""
    from ncml.pipelines.pipeline_ncml import NCMLPipeline
    from ncml.schedulers import VPSDEScheduler

    folder = tmp_path_factory.mktemp("pipeline")
    NCMLPipeline(backbone=_tiny_backbone(), scheduler=VPSDEScheduler()).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def conditional_pipeline(tmp_path_factory):
    """The same with 10 classes."""
    from ncml.pipelines.pipeline_ncml_class_conditional import NCMLClassConditionalPipeline
    from ncml.schedulers import VPSDEScheduler

    folder = tmp_path_factory.mktemp("conditional")
    NCMLClassConditionalPipeline(backbone=_tiny_backbone(num_classes=10),
                                 scheduler=VPSDEScheduler()).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def no_sampling(monkeypatch):
    """Fail the test if a pipeline is called (the error must come before any sampling)."""
    from ncml.pipelines.pipeline_ncml import NCMLPipeline
    from ncml.pipelines.pipeline_ncml_class_conditional import NCMLClassConditionalPipeline

    def fail(*args, **kwargs):
        raise AssertionError("the pipeline was called before the error")

    for cls in (NCMLPipeline, NCMLClassConditionalPipeline):
        monkeypatch.setattr(cls, "__call__", fail)


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a pipeline is loaded (outputs and the device are checked before anything)."""
    def fail(*args, **kwargs):
        raise AssertionError("the pipeline was loaded before the error")

    monkeypatch.setattr(cli, "load_pipeline", fail)


def one_line_error(argv, capsys, *, option: str) -> str:
    """Run ``ncml argv``; assert exit status 2 and one line ``ncml: error: …`` naming ``option``; return it."""
    try:
        code = cli.main([*argv, "--no-progress"])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, (captured.out, err)
    assert err.startswith("ncml: error: ") and err.count("\n") == 1, err
    assert option in err and "Traceback" not in err, err
    return err


# ---- values refused while parsing (no pipeline needed) ---------------------------------------------------
@pytest.mark.parametrize("argv, option, given", [
    (["sample", "--t-start", "nan"], "--t-start", "nan"),
    (["sample", "--t-start", "-1"], "--t-start", "-1"),
    (["sample", "--t-start", "inf"], "--t-start", "inf"),
    (["sample", "--snr", "-1"], "--snr", "-1"),
    (["sample", "--snr", "nan"], "--snr", "nan"),
    (["sample", "--snr", "0"], "--snr", "0"),
    (["sample", "--steps", "0"], "--steps", "0"),
    (["sample", "--steps", "two"], "--steps", "'two'"),
    (["sample", "--correct-steps", "-1"], "--correct-steps", "-1"),
    (["sample", "--class-label", "-1"], "--class-label", "-1"),
    (["sample", "--seed", "-1"], "--seed", "-1"),
    (["sample", "--seed", str(2**32)], "--seed", str(2**32)),
    (["sample", "--num-images", "0"], "--num-images", "0"),
    (["sample", "--batch-size", "0"], "--batch-size", "0"),
    (["sample", "--scale", "0"], "--scale", "0"),
    (["sanity-test", "--pis", "2"], "--pis", "2"),
    (["sanity-test", "--pis", "0.5", "nan"], "--pis", "nan"),
    (["sanity-test", "--num-times", "1"], "--num-times", "1"),
    (["evaluate", "--ts", "nan"], "--ts", "nan"),
    (["evaluate", "--ts", "0", "-0.5"], "--ts", "-0.5"),
    (["evaluate", "--num-images", "-3"], "--num-images", "-3"),
    (["ood", "--ood-dataset", "noise", "--ts", "nan"], "--ts", "nan"),
])
def test_bad_values_are_usage_errors(argv, option, given, capsys, no_loading):
    err = one_line_error(argv, capsys, option=option)
    assert f"got {given}" in err and "must be" in err
    assert "invalid" not in err and "parse" not in err  # argparse's wording names the Python type function


def test_missing_command_and_unknown_option(capsys):
    err = one_line_error([], capsys, option="sample")
    assert "ncml --help" in err
    one_line_error(["sample", "--temperature", "2"], capsys, option="--temperature")


# ---- values that need the pipeline: refused after loading it, before sampling ------------------------------
def test_t_start_above_t_max(tiny_pipeline, capsys, no_sampling):
    err = one_line_error(["sample", "--pipeline", tiny_pipeline, "--t-start", "5"], capsys, option="--t-start")
    assert "t_max=0.1" in err and "got 5" in err


def test_class_label_on_an_unconditional_pipeline(tiny_pipeline, capsys, no_sampling):
    err = one_line_error(["sample", "--pipeline", tiny_pipeline, "--class-label", "7"], capsys,
                         option="--class-label")
    assert "unconditional" in err


def test_class_label_out_of_range(conditional_pipeline, capsys, no_sampling):
    err = one_line_error(["sample", "--pipeline", conditional_pipeline, "--class-label", "99"], capsys,
                         option="--class-label")
    assert "[0, 9]" in err and "got 99" in err


def test_reference_is_checked_before_sampling(tmp_path, capsys, no_sampling):
    from ncml.pipelines.pipeline_ncml import NCMLPipeline
    from ncml.schedulers import VPSDEScheduler

    err = one_line_error(["sample", "--pipeline", str(tmp_path), "--reference", "mnist5k"], capsys,
                         option="--pipeline")  # (no pipeline there)
    NCMLPipeline(backbone=_tiny_backbone(sample_size=28), scheduler=VPSDEScheduler()).save_pretrained(tmp_path)
    err = one_line_error(["sample", "--pipeline", str(tmp_path), "--reference", "mnist5k", "--num-images", "8"],
                         capsys, option="--reference")
    assert "--num-images >= 64" in err and "got 8" in err
    err = one_line_error(["sample", "--pipeline", str(tmp_path), "--reference", "svhn", "--num-images", "64"],
                         capsys, option="--reference")
    assert "'svhn'" in err


def test_pis_without_a_flip(capsys, no_loading):
    err = one_line_error(["sanity-test", "--pis", "0"], capsys, option="--pis")
    assert "> 0" in err


# ---- outputs and the device: refused before loading or sampling anything -----------------------------------
@pytest.fixture
def readonly_folder(tmp_path, monkeypatch):
    """A folder without write permission (root may write anyway: then ``os.access`` is told it may not)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == folder and mode & os.W_OK
                            else real_access(path, mode, **kw))
    yield folder
    folder.chmod(0o755)


def test_out_in_a_readonly_folder(readonly_folder, capsys, no_loading):
    err = one_line_error(["sample", "--out", str(readonly_folder / "s.png")], capsys, option="--out")
    assert "not writable" in err
    err = one_line_error(["sample", "--out", str(readonly_folder / "new" / "s.png")], capsys, option="--out")
    assert "not writable" in err
    err = one_line_error(["evaluate", "--out", str(readonly_folder / "e.png")], capsys, option="--out")
    err = one_line_error(["sample", "--save-npz", str(readonly_folder / "s.npz")], capsys, option="--save-npz")
    assert "not writable" in err


@pytest.mark.parametrize("name", ["samples.foo", "samples", "samples.npz"])
def test_out_with_an_extension_pil_cannot_write(name, tmp_path, capsys, no_loading):
    err = one_line_error(["sample", "--out", str(tmp_path / name)], capsys, option="--out")
    assert ".png" in err and ".jpg" in err and repr(str(tmp_path / name)) in err


def test_plot_out_must_be_png(tmp_path, capsys, no_loading):
    for command in (["evaluate"], ["sanity-test"], ["ood", "--ood-dataset", "noise"]):
        err = one_line_error([*command, "--out", str(tmp_path / "plot.jpg")], capsys, option="--out")
        assert ".png" in err


def test_out_under_a_file_or_naming_a_folder(tmp_path, capsys, no_loading):
    (tmp_path / "file.txt").write_text("x")
    for out in (tmp_path / "file.txt" / "s.png", tmp_path / "file.txt" / "sub" / "s.png"):
        err = one_line_error(["sample", "--out", str(out)], capsys, option="--out")
        assert "file.txt is a file" in err
    (tmp_path / "folder.png").mkdir()
    err = one_line_error(["sample", "--out", str(tmp_path / "folder.png")], capsys, option="--out")
    assert "is a folder" in err
    err = one_line_error(["sample", "--save-npz", str(tmp_path / "file.txt" / "s.npz")], capsys,
                         option="--save-npz")
    err = one_line_error(["sample", "--save-npz", str(tmp_path / "s.txt")], capsys, option="--save-npz")
    assert ".npz" in err


def test_unknown_or_absent_device(capsys, monkeypatch, no_loading):
    import torch

    err = one_line_error(["sample", "--device", "foo"], capsys, option="--device")
    assert "'cpu'" in err and "got 'foo'" in err
    one_line_error(["evaluate", "--device", "meta"], capsys, option="--device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = one_line_error(["sample", "--device", "cuda"], capsys, option="--device")
    assert "CUDA is not available" in err
    one_line_error(["ood", "--ood-dataset", "noise", "--device", "cuda:0"], capsys, option="--device")


def test_device_auto_and_save_npz_folders_are_made(tiny_pipeline, tmp_path, capsys):
    npz = tmp_path / "new" / "deeper" / "s.npz"
    code = cli.main(["sample", "--pipeline", tiny_pipeline, "--num-images", "2", "--t-start", "0",
                     "--out", str(tmp_path / "s.jpg"), "--save-npz", str(npz), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert np.load(npz)["images"].shape == (2, 8, 8, 1)
    assert Image.open(tmp_path / "s.jpg").format == "JPEG"


# ---- datasets: user errors, not tracebacks ---------------------------------------------------------------
def _save_images(folder: Path, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, size in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L").save(folder / f"{i}.png")


def test_dataset_folder_errors(tiny_pipeline, tmp_path, capsys):
    base = ["evaluate", "--pipeline", tiny_pipeline, "--ts", "0", "--out", str(tmp_path / "e.png")]
    err = one_line_error([*base, "--dataset", str(tmp_path / "missing")], capsys, option="--dataset")
    assert "no such folder" in err
    (tmp_path / "empty").mkdir()
    err = one_line_error([*base, "--dataset", str(tmp_path / "empty")], capsys, option="--dataset")
    assert "holds no" in err and "path=" not in err
    _save_images(tmp_path / "mixed", [8, 10])
    err = one_line_error([*base, "--dataset", str(tmp_path / "mixed")], capsys, option="--dataset")
    assert "mixed sizes" in err
    _save_images(tmp_path / "big", [10, 10])
    err = one_line_error([*base, "--dataset", str(tmp_path / "big")], capsys, option="--dataset")
    assert "--resize" in err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "0.png").write_bytes(b"not a png")
    one_line_error([*base, "--dataset", str(tmp_path / "broken")], capsys, option="--dataset")
    err = one_line_error([*base, "--dataset", str(tmp_path / "broken" / "0.png")], capsys, option="--dataset")
    assert "is a file" in err
    err = one_line_error(["ood", "--pipeline", tiny_pipeline, "--dataset", "digits", "--ood-dataset",
                          str(tmp_path / "missing"), "--out", str(tmp_path / "o.png")], capsys,
                         option="--ood-dataset")
    assert "no such folder" in err
