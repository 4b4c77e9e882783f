import numpy as np
import pytest

from ncml.evaluation import format_table, make_grid


def test_make_grid_layout():
    images = np.stack([np.full((4, 5, 1), i * 20, np.uint8) for i in range(7)])
    grid = make_grid(images, nrow=3, padding=1, pad_value=255)
    assert grid.mode == "L" and grid.size == (1 + 3 * 6, 1 + 3 * 5)  # (width, height)
    a = np.asarray(grid)
    assert (a[1:5, 1:6] == 0).all() and (a[6:10, 1:6] == 60).all() and (a[1:5, 7:12] == 20).all()
    assert a[0].tolist() == [255] * a.shape[1]
    rgb = make_grid(np.zeros((4, 3, 3, 3), np.uint8), scale=2, padding=0)
    assert rgb.mode == "RGB" and rgb.size == (12, 12)


def test_make_grid_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        make_grid(np.zeros((1, 2, 2, 1)))
    with pytest.raises(ValueError, match="shape"):
        make_grid(np.zeros((0, 2, 2, 1), np.uint8))
    with pytest.raises(ValueError, match="nrow"):
        make_grid(np.zeros((1, 2, 2, 1), np.uint8), nrow=0)


def test_format_table():
    text = format_table(["a", "bb"], [["x", "1.0"], ["yyy", "22.5"]])
    lines = text.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1
