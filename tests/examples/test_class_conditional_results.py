"""examples/class_conditional_results.py --stage ship: the bundled card records every run of the training chain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from example_scripts import load_example
from ncml import NCMLClassConditionalPipeline

ROOT = Path(__file__).resolve().parents[2]
TINY = {"_class_name": "NCPNModel", "sample_size": 8, "in_channels": 1, "nr_resnet": 1, "nr_filters": 8,
        "nr_logistic_mix": 2, "attention_heads": 2, "dropout": 0.0, "embedding_dim": 16, "num_classes": 10,
        "null_class": True}


@pytest.fixture()
def results(tmp_path, monkeypatch):
    """The script with its repository root moved to ``tmp_path`` (bundled pipelines and training logs copied)."""
    module = load_example("class_conditional_results")
    bundled = tmp_path / "ncml" / "bundled-pipelines"
    for name in ("ncpn-mnist5k-vp", module.NAME):
        shutil.copytree(module.BUNDLED / name, bundled / name)
    shutil.copytree(ROOT / "docs" / "training", tmp_path / "docs" / "training")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "BUNDLED", bundled)
    return module


def tiny_run(tmp_path: Path, name: str, *flags: str) -> Path:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": TINY, "loss": {"label_dropout": 0.1}}))
    out = tmp_path / name
    load_example("train_ncml").main(["--config", str(config), "--dataset", "digits", "--output_dir", str(out),
                             "--max_train_steps", "2", "--train_batch_size", "4", "--checkpointing_steps", "0",
                             "--eval_max_images", "20", "--eval_t_fractions", "0.5", "--num_sample_images", "0",
                             *flags])
    return out


def section(card: str, heading: str) -> str:
    return card.split(heading, 1)[1].split("\n### ", 1)[0].split("\nValidation bits/dim", 1)[0]


def test_ship_continuing_the_bundled_model_keeps_its_runs_and_adds_the_new_one(results, tmp_path):
    card = results.BUNDLED / results.NAME / "README.md"
    before = card.read_text()
    earlier = results.recorded_runs(card)
    assert len(earlier) >= 1 and all(line.startswith("- steps: ") for line in [run[1] for run in earlier])
    release = tiny_run(tmp_path, "hybrid", "--classifier_weight", "10", "--classifier_examples", "2")
    results.ship(release, {}, continues_bundled=True)
    after = card.read_text()
    n = len(earlier) + 1
    # the earlier runs' records are kept word for word, the new one is the last run, with its log beside theirs
    for i in range(1, n):
        assert section(after, f"### Run {i}") == section(before, f"### Run {i}")
    assert f"### Run {n}: continued from run {n - 1}'s EMA weights" in after
    assert "classifier_weight=10.0, classifier_examples=2" in section(after, f"### Run {n}")
    assert f"run {n} added the exact Bayes classifier's cross-entropy" in after
    log = results.log_path(n)
    assert log.read_text() == (release / "logs" / "metrics.jsonl").read_text()
    assert f"`docs/training/{log.name}`" in after and " + 2 steps with" in after
    final = [json.loads(line) for line in log.read_text().splitlines()][-1]
    assert f"labels {final['eval/bayes_accuracy_t=0']:.1%} of them correctly" in after
    assert results.recorded_runs(card)[:-1] == earlier
    pipe = NCMLClassConditionalPipeline.from_pretrained(results.BUNDLED / results.NAME)
    assert pipe.backbone.config.sample_size == 8
    # a chain of two new runs after the bundled ones (the card as it was): both are added, in order
    second = tiny_run(tmp_path, "second", "--init_from", str(release))
    card.write_text(before)
    results.ship(second, {}, pretrain=release, continues_bundled=True)
    chained = card.read_text()
    assert section(chained, f"### Run {n}") == section(after, f"### Run {n}")
    assert f"### Run {n + 1}: continued from run {n}'s EMA weights" in chained and " + 2 + 2 steps with" in chained
    assert results.log_path(n + 1).read_text() == (second / "logs" / "metrics.jsonl").read_text()
    assert f"run {n} added the exact Bayes" in chained  # the second run has no classifier term
    # a card without run records cannot be continued
    card.write_text("# no record\n")
    with pytest.raises(SystemExit, match="records no training runs"):
        results.ship(release, {}, continues_bundled=True)


def test_ship_of_a_run_and_the_run_it_continued(results, tmp_path):
    first = tiny_run(tmp_path, "first")
    second = tiny_run(tmp_path, "second", "--init_from", str(tmp_path / "first"))
    results.ship(second, {}, pretrain=first)
    card = (results.BUNDLED / results.NAME / "README.md").read_text()
    assert "2 + 2 steps with" in card and "### Run 3" not in card and "hybrid training" not in card
    assert "### Run 1: from scratch" in card and "### Run 2: continued from run 1's EMA weights" in card
    assert results.log_path(1).read_text() == (first / "logs" / "metrics.jsonl").read_text()
    assert results.log_path(2).read_text() == (second / "logs" / "metrics.jsonl").read_text()
