"""The ``ncml`` command line, run in-process (``main(argv)``) on a tiny saved pipeline."""

import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from ncml import cli

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """A tiny untrained NCPN + VP-SDE pipeline for 8×8 grey images (the size of the bundled ``digits``)."""
    pipelines = pytest.importorskip("ncml.pipelines.pipeline_ncml", reason="NCMLPipeline is not built yet")
    from ncml.models.ncpn import NCPNConfig, NCPNModel
    from ncml.schedulers import VPSDEScheduler

    backbone = NCPNModel(NCPNConfig(sample_size=8, in_channels=1, nr_resnet=1, nr_filters=8, nr_logistic_mix=2,
                                    attention_heads=0, dropout=0.0, embedding_dim=16))
    folder = tmp_path_factory.mktemp("pipeline")
    pipelines.NCMLPipeline(backbone=backbone, scheduler=VPSDEScheduler()).save_pretrained(folder)
    return str(folder)


def run(argv, capsys):
    code = cli.main([*argv, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sample_writes_a_grid(tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "grid" / "samples.png"
    npz = tmp_path / "samples.npz"
    code, text, err = run(["sample", "--pipeline", tiny_pipeline, "--num-images", "3", "--batch-size", "2",
                           "--t-start", "0.01", "--steps", "2", "--seed", "0", "--out", str(out), "--nrow", "3",
                           "--scale", "1", "--save-npz", str(npz)], capsys)
    assert code == 0, err
    assert "network evaluations" in text and f"wrote {out}" in text
    assert out.read_bytes()[:8] == PNG
    assert Image.open(out).size == (2 + 3 * 10, 2 + 10)  # 3 images of 8 px, 2 px padding
    images = np.load(npz)["images"]
    assert images.shape == (3, 8, 8, 1) and images.dtype == np.uint8


def test_evaluate(tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "bpd.png"
    code, text, err = run(["evaluate", "--pipeline", tiny_pipeline, "--dataset", "digits", "--num-images", "6",
                           "--ts", "0", "0.01", "--batch-size", "4", "--out", str(out)], capsys)
    assert code == 0, err
    assert "NCML" in text and len([line for line in text.splitlines() if line.startswith(("0 ", "0.01"))]) == 2
    assert out.read_bytes()[:8] == PNG


def test_sanity_test(tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "robustness.png"
    code, text, err = run(["sanity-test", "--pipeline", tiny_pipeline, "--dataset", "digits", "--num-images", "5",
                           "--num-times", "3", "--out", str(out)], capsys)
    assert code == 0, err
    assert "Δlog p π=1" in text and out.read_bytes()[:8] == PNG


def test_ood_with_an_image_folder(tiny_pipeline, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):  # 10×10: needs --resize
        Image.fromarray(rng.integers(0, 256, (10, 10), dtype=np.uint8), mode="L").save(folder / f"{i}.png")
    out = tmp_path / "ood.png"
    code, text, err = run(["ood", "--pipeline", tiny_pipeline, "--dataset", "digits", "--ood-dataset", str(folder),
                           "--resize", "--num-images", "6", "--ts", "0", "0.02", "--out", str(out)], capsys)
    assert code == 0, err
    assert "AUROC" in text and "nll_mean (statistic)" in text and out.read_bytes()[:8] == PNG
    code, _, err = run(["ood", "--pipeline", tiny_pipeline, "--dataset", "digits", "--ood-dataset", str(folder),
                        "--out", str(out)], capsys)
    assert code == 2 and "--resize" in err


def test_bad_times_and_datasets(tiny_pipeline, capsys):
    code, _, err = run(["evaluate", "--pipeline", tiny_pipeline, "--dataset", "digits", "--ts", "5.0"], capsys)
    assert code == 2 and "t_max" in err
    code, _, err = run(["evaluate", "--pipeline", tiny_pipeline, "--dataset", "svhn"], capsys)
    assert code == 2 and "--dataset" in err and "fashion-mnist" in err


def test_ood_against_a_packaged_ood_set(tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "ood.png"
    code, text, err = run(["ood", "--pipeline", tiny_pipeline, "--dataset", "digits", "--ood-dataset",
                           "fashion-mnist", "--num-images", "6", "--ts", "0", "--out", str(out)], capsys)
    assert code == 0, err
    assert "out = fashion-mnist (6)" in text and out.read_bytes()[:8] == PNG


def test_missing_default_pipeline_says_to_pass_one(monkeypatch, capsys):
    monkeypatch.setattr(cli, "DEFAULT_PIPELINE", "no-such-bundled-model")
    code, _, err = run(["sample", "--num-images", "1"], capsys)
    assert code == 2 and "pass --pipeline PATH_OR_REPO_ID" in err


def test_missing_pipeline_folder(tmp_path, capsys):
    code, _, err = run(["sanity-test", "--pipeline", str(tmp_path / "nope")], capsys)
    assert code == 2 and "--pipeline" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["sample", "--num-images", "0"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        cli.main([])


def test_class_conditional_pipeline(tmp_path, capsys):
    """Labels reach the backbone: cycled (or --class-label) when sampling, the dataset's when evaluating."""
    pipelines = pytest.importorskip("ncml.pipelines.pipeline_ncml_class_conditional",
                                    reason="NCMLClassConditionalPipeline is not built yet")
    from ncml.models.ncpn import NCPNConfig, NCPNModel
    from ncml.schedulers import VPSDEScheduler

    backbone = NCPNModel(NCPNConfig(sample_size=8, in_channels=1, nr_resnet=1, nr_filters=8, nr_logistic_mix=2,
                                    attention_heads=0, dropout=0.0, embedding_dim=16, num_classes=10))
    folder = tmp_path / "pipeline"
    pipelines.NCMLClassConditionalPipeline(backbone=backbone, scheduler=VPSDEScheduler()).save_pretrained(folder)
    code, _, err = run(["sample", "--pipeline", str(folder), "--num-images", "2", "--t-start", "0",
                        "--class-label", "3", "--out", str(tmp_path / "s.png")], capsys)
    assert code == 0, err
    code, text, err = run(["evaluate", "--pipeline", str(folder), "--dataset", "digits", "--num-images", "4",
                           "--ts", "0", "--out", str(tmp_path / "e.png")], capsys)
    assert code == 0, err


def test_classify_and_guided_sampling(tiny_pipeline, tmp_path, capsys):
    """``classify`` prints the Bayes classifier's accuracy per noise level and writes the confusion matrix;
    ``sample --guidance-scale`` runs on a model with a null class and is refused by one without."""
    from ncml import NCMLClassConditionalPipeline
    from ncml.models.ncpn import NCPNConfig, NCPNModel
    from ncml.schedulers import VPSDEScheduler

    config = dict(sample_size=8, in_channels=1, nr_resnet=1, nr_filters=8, nr_logistic_mix=2, attention_heads=0,
                  dropout=0.0, embedding_dim=16, num_classes=10)
    folder, plain = tmp_path / "guidable", tmp_path / "plain"
    NCMLClassConditionalPipeline(NCPNModel(NCPNConfig(**config, null_class=True)),
                                 VPSDEScheduler()).save_pretrained(folder)
    NCMLClassConditionalPipeline(NCPNModel(NCPNConfig(**config)), VPSDEScheduler()).save_pretrained(plain)
    out = tmp_path / "confusion.png"
    code, text, err = run(["classify", "--pipeline", str(folder), "--dataset", "digits", "--num-images", "5",
                           "--noise-std", "0", "16", "--batch-size", "20", "--out", str(out)], capsys)
    assert code == 0, err
    rows = [line.split() for line in text.splitlines() if line.startswith(("0 ", "16 "))]
    assert len(rows) == 2 and rows[0][1] == "0" and float(rows[1][1]) > 0  # t = 0, then the matching t > 0
    assert all(0 <= float(r[2]) <= 1 for r in rows)
    assert out.read_bytes()[:8] == PNG
    # the smoothed classifier: each row's noise topped up to --smoothing-std, --num-draws copies (by hand below)
    code, text, err = run(["classify", "--pipeline", str(folder), "--dataset", "digits", "--num-images", "5",
                           "--noise-std", "0", "4", "12", "--smoothing-std", "8", "--num-draws", "2",
                           "--batch-size", "20", "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    assert "smoothed: noise topped up to std 8, 2 noisy copies per image" in text
    rows = [line.split() for line in text.splitlines() if line.startswith(("0 ", "4 ", "12 "))]
    from ncml.cli import load_images
    from ncml.evaluation import matched_time, noisy_marginal_draw, smoothed_class_posterior
    pipe = NCMLClassConditionalPipeline.from_pretrained(folder)
    images, labels = load_images("digits", split="test", num_images=5, seed=0, backbone=pipe.backbone, resize=False)
    g, sched = torch.Generator().manual_seed(0), pipe.scheduler
    clean = smoothed_class_posterior(pipe.backbone, sched, images, 16 / 255, num_draws=2, generator=g, progress=False)
    x, t4 = noisy_marginal_draw(sched, images, 8 / 255, generator=g)
    x = x / sched.marginal_mean_coeff(torch.tensor(t4, dtype=torch.float64))  # x_0 + σ·ε, as the CLI passes it
    noisy = smoothed_class_posterior(pipe.backbone, sched, x, 16 / 255, num_draws=2, input_noise_std=8 / 255,
                                     generator=g, progress=False)
    for row, log_post in zip(rows, (clean, noisy)):
        assert float(row[1]) == pytest.approx(matched_time(sched, 16 / 255), rel=1e-3)  # t of the topped-up std
        assert float(row[4]) == pytest.approx(-log_post[torch.arange(5), torch.from_numpy(labels)].mean().item(),
                                              abs=1e-4)
    assert float(rows[2][1]) == pytest.approx(matched_time(sched, 24 / 255), rel=1e-3)  # more noise than 8: as is
    # the validation split: the 150 digits carved from train (15 per class), all of them with --num-images 150
    code, text, err = run(["classify", "--pipeline", str(folder), "--dataset", "digits", "--split", "validation",
                           "--num-images", "150", "--batch-size", "50", "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    assert "digits (validation), 150 images" in text
    code, text, err = run(["sample", "--pipeline", str(folder), "--num-images", "2", "--t-start", "0",
                           "--guidance-scale", "2", "--out", str(tmp_path / "g.png")], capsys)
    assert code == 0, err
    assert "guidance scale" in text
    code, _, err = run(["sample", "--pipeline", str(plain), "--num-images", "1", "--t-start", "0",
                        "--guidance-scale", "2", "--out", str(tmp_path / "h.png")], capsys)
    assert code == 2 and "no null class" in err
    code, _, err = run(["sample", "--pipeline", tiny_pipeline, "--num-images", "1", "--t-start", "0",
                        "--guidance-scale", "2", "--out", str(tmp_path / "i.png")], capsys)
    assert code == 2 and "unconditional" in err
    code, _, err = run(["classify", "--pipeline", tiny_pipeline, "--dataset", "digits", "--out", str(out)], capsys)
    assert code == 2 and "unconditional" in err
    code, _, err = run(["classify", "--pipeline", str(folder), "--dataset", "digits", "--noise-std", "1e6",
                        "--out", str(out)], capsys)
    assert code == 2 and "--noise-std 1e+06" in err and "exceeds" in err
    code, _, err = run(["classify", "--pipeline", str(folder), "--dataset", "digits", "--smoothing-std", "1e6",
                        "--out", str(out)], capsys)
    assert code == 2 and "--smoothing-std 1e+06" in err and "exceeds" in err
    for flag, bad in (("--smoothing-std", "0"), ("--smoothing-std", "nan"), ("--num-draws", "0")):
        with pytest.raises(SystemExit) as e:
            run(["classify", "--pipeline", str(folder), flag, bad, "--out", str(out)], capsys)
        assert e.value.code == 2 and f"argument {flag}: must be" in capsys.readouterr().err


def test_a_bundled_name_is_a_pipeline(tmp_path, capsys):
    code, text, err = run(["evaluate", "--pipeline", "ncpn-mnist5k-mle", "--dataset", "mnist5k", "--num-images", "2",
                           "--ts", "0", "--out", str(tmp_path / "bpd.png")], capsys)
    assert code == 0, err
    code, _, err = run(["evaluate", "--pipeline", "ncpn-no-such-model", "--out", str(tmp_path / "b.png")], capsys)
    assert code == 2 and "ncpn-no-such-model" in err


# ---- help: fast (no torch) and with every default --------------------------------------------------------
def test_parser_and_help_do_not_import_torch():
    code = ("import sys, ncml.cli; ncml.cli.build_parser(); "
            "print('torch' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ncml.cli", "--help"], capture_output=True, text=True)
    print(f"ncml --help took {time.perf_counter() - start:.2f} s")  # reported, not asserted (machines vary)
    assert done.returncode == 0 and "usage: ncml" in done.stdout and "sanity-test" in done.stdout
    done = subprocess.run([sys.executable, "-m", "ncml.cli", "sample", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--t-start" in done.stdout


def _option_helps(parser):
    """``{"--option": its help text as printed}`` from ``parser.format_help()`` (wrapped lines joined)."""
    helps, current = {}, None
    for line in parser.format_help().split("options:", 1)[1].splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            helps[current] = line
        elif current and line.startswith("    "):
            helps[current] += " " + line.strip()
    return helps


@pytest.mark.parametrize("command", ["sample", "evaluate", "sanity-test", "ood", "classify"])
def test_help_shows_every_default(command):
    subparsers = next(a for a in cli.build_parser()._actions if a.choices and command in a.choices)
    parser = subparsers.choices[command]
    helps = _option_helps(parser)
    options = {a.option_strings[0] for a in parser._actions if a.option_strings}
    assert set(helps) == options
    for option, text in helps.items():
        if option != "-h":
            assert "(default:" in text or "(required)" in text, text
    if command == "sample":
        assert "(default: auto)" in helps["--device"] and "(default: samples.png)" in helps["--out"]
        assert "(default: 16)" in helps["--num-images"] and "(default: off)" in helps["--no-progress"]
