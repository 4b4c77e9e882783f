"""examples/train_ncml.py sends its sample grids, upscaled, to the trackers that show images."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from test_train_ncml import SCRIPT, load_script, run, write_config


class FakeWriter:
    def __init__(self):
        self.images = []

    def add_image(self, tag, array, step, dataformats):
        self.images.append((tag, np.asarray(array).shape, step, dataformats))


def test_sample_grids_go_upscaled_to_image_trackers_only():
    script = load_script()
    board = SimpleNamespace(name="tensorboard", writer=FakeWriter())
    other = SimpleNamespace(name="mlflow")  # metrics only: never asked to show an image
    accelerator = SimpleNamespace(trackers=[other, board])
    grid = Image.fromarray(np.zeros((28, 56), np.uint8), mode="L")  # two 28-pixel digits
    assert script.log_sample_grid(accelerator, grid, 7) == ["tensorboard"]
    (tag, shape, step, fmt), = board.writer.images
    scale = -(-script.TRACKER_IMAGE_SIZE // 28)
    assert (tag, step, fmt) == ("samples", 7, "HW") and shape == (28 * scale, 56 * scale)
    rgb = Image.fromarray(np.zeros((300, 300, 3), np.uint8))  # already large: not scaled
    script.log_sample_grid(accelerator, rgb, 8)
    assert board.writer.images[-1][1:] == ((300, 300, 3), 8, "HWC")


def test_a_tensorboard_run_logs_the_sample_grid(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard tracker is an optional extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    run([sys.executable, str(SCRIPT), "--config", str(write_config(tmp_path)), "--output_dir", str(out),
         "--max_train_steps", "1", "--eval_steps", "1", "--num_sample_images", "2", "--report_to", "tensorboard"])
    events = [p for p in Path(out / "logs").rglob("events.out.tfevents*")]
    assert events
    tags = set()
    for path in events:
        acc = EventAccumulator(str(path), size_guidance={"images": 0})
        acc.Reload()
        tags |= set(acc.Tags()["images"])
    assert "samples" in tags
