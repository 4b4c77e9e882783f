"""ncml.data.transforms and ImageFolder(convert=True, resolution=...): images of any mode and size to a model's grid."""

import numpy as np
import pytest
from PIL import Image

from ncml.data import ImageFolder, augment_batch, center_crop, convert_image, prepare_images, resize_shorter_side
from ncml.data import stack_images


def test_transparency_is_composited_on_white():
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: kept
    rgba[0, 1] = (0, 0, 0, 0)  # transparent black: white
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black: mid grey
    out = convert_image(Image.fromarray(rgba, "RGBA"), 3)
    assert out.shape == (1, 3, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [10, 20, 30] and out[0, 1].tolist() == [255, 255, 255]
    assert all(abs(v - 127) <= 1 for v in out[0, 2])
    la = Image.fromarray(np.array([[[0, 0], [40, 255]]], dtype=np.uint8), "LA")
    assert convert_image(la, 1)[..., 0].tolist() == [[255, 40]]


def test_palette_and_transparent_palette():
    p = Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], dtype=np.uint8)).convert("P")
    assert convert_image(p, 3).tolist() == [[[255, 0, 0], [0, 0, 255]]]
    p.info["transparency"] = p.getpixel((0, 0))  # the red entry becomes transparent
    assert convert_image(p, 3).tolist() == [[[255, 255, 255], [0, 0, 255]]]


def test_grey_rgb_bilevel_and_16_bit():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    grey = convert_image(Image.fromarray(rgb), 1)
    assert grey.shape == (1, 3, 1)
    assert grey[0, :, 0].tolist() == [76, 150, 29]  # ITU-R 601-2 luma, PIL's convert("L")
    assert np.array_equal(convert_image(Image.fromarray(grey[..., 0]), 3), np.repeat(grey, 3, axis=2))
    assert convert_image(Image.fromarray(np.array([[True, False]])), 1)[..., 0].tolist() == [[255, 0]]
    sixteen = Image.fromarray(np.array([[0, 256, 65535]], dtype=np.uint16))
    assert sixteen.mode == "I;16" and convert_image(sixteen, 1)[..., 0].tolist() == [[0, 1, 255]]
    assert convert_image(Image.new("CMYK", (2, 2)), 3).shape == (2, 2, 3)


def test_arrays_are_images_too():
    a = np.arange(12, dtype=np.int64).reshape(2, 2, 3)
    assert np.array_equal(convert_image(a, 3), a.astype(np.uint8))
    assert convert_image(np.zeros((2, 2, 1), np.uint8), 3).shape == (2, 2, 3)


@pytest.mark.parametrize("image, match", [
    (Image.new("F", (2, 2)), "floating-point"),
    (np.zeros((2, 2), np.float32), "float32"),
    (np.full((2, 2), 300), "0 … 255"),
    (np.zeros((2, 2, 2), np.uint8), "shape"),
    ("not an image", "expected an image"),
])
def test_unusable_images_are_one_line_errors_naming_them(image, match):
    with pytest.raises(ValueError, match=f"^photo 7: .*{match}"):
        convert_image(image, 3, name="photo 7")
    with pytest.raises(ValueError, match="channels"):
        convert_image(np.zeros((2, 2), np.uint8), 2)


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((2, 3), np.uint8)
    a[0, 0] = 255
    image = Image.fromarray(a)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    with Image.open(tmp_path / "rotated.jpg") as im:
        out = convert_image(im, 1)
    assert out.shape == (3, 2, 1) and out[0, 1, 0] > 200  # the top-left pixel moved to the top-right


def test_resize_shorter_side_and_center_crop_follow_torchvision():
    a = np.random.default_rng(0).integers(0, 256, (10, 25, 3), dtype=np.uint8)
    r = resize_shorter_side(a, 4)
    assert r.shape == (4, 10, 3)  # int(4 · 25 / 10)
    assert resize_shorter_side(a, 10) is a
    assert resize_shorter_side(np.zeros((30, 7, 1), np.uint8), 7).shape == (30, 7, 1)
    assert resize_shorter_side(np.zeros((3, 5, 1), np.uint8), 6).shape == (6, 10, 1)  # upscaling too
    c = center_crop(np.arange(5 * 8).reshape(5, 8, 1), 4)
    assert c[..., 0].tolist() == [[2, 3, 4, 5], [10, 11, 12, 13], [18, 19, 20, 21], [26, 27, 28, 29]]  # top round(0.5)
    with pytest.raises(ValueError, match="cannot crop"):
        center_crop(np.zeros((3, 8, 1)), 4)


def test_prepare_images_mixed_sizes_and_modes():
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (12, 20, 4), dtype=np.uint8), "RGBA"),
              Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)),
              Image.fromarray(rng.integers(0, 256, (30, 9, 3), dtype=np.uint8)).convert("P")]
    stacked = prepare_images(images, channels=3, resolution=8, center_crop=True)
    assert stacked.shape == (3, 8, 8, 3) and stacked.dtype == np.uint8
    ragged = prepare_images(images, channels=1, resolution=8, center_crop=False)
    assert [a.shape for a in ragged] == [(8, 13, 1), (8, 8, 1), (26, 8, 1)]
    assert stack_images(ragged, 8).shape == (3, 8, 8, 1)
    with pytest.raises(ValueError, match=r"mixed sizes: 12×20 \(a\), 8×8 \(b\)"):
        prepare_images(images, channels=3, names=["a", "b", "c"])
    with pytest.raises(ValueError, match="resolution"):
        prepare_images(images, channels=3, resolution=0)


def test_augment_batch_is_a_function_of_seed_and_example_number():
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (8, 12, 1), dtype=np.uint8) for _ in range(5)]
    idx, numbers = np.array([4, 0, 2, 2]), np.array([100, 101, 102, 103])
    a = augment_batch(images, idx, numbers, seed=7, size=8, random_flip=True)
    assert a.shape == (4, 8, 8, 1) and a.dtype == np.uint8
    assert np.array_equal(a, augment_batch(images, idx, numbers, seed=7, size=8, random_flip=True))
    # each example on its own (another process, a resumed run) gets the same crop and flip
    for b in range(4):
        assert np.array_equal(a[b:b + 1], augment_batch(images, idx[b:b + 1], numbers[b:b + 1], seed=7, size=8,
                                                        random_flip=True))
    # each output is a crop of its image, flipped or not
    for b, i in enumerate(idx):
        crops = [images[i][:, x:x + 8] for x in range(5)]
        assert any(np.array_equal(a[b], c) or np.array_equal(a[b], c[:, ::-1]) for c in crops)
    # other seeds or example numbers draw other crops / flips (over many draws, both of each happen)
    many = augment_batch([images[0]] * 64, np.arange(64), np.arange(64), seed=7, size=8, random_flip=True)
    assert len({m.tobytes() for m in many}) > 4
    flips = [np.array_equal(augment_batch([np.arange(16, dtype=np.uint8).reshape(4, 4, 1)], [0], [n], seed=0, size=4,
                                          random_flip=True)[0, 0, :, 0], [3, 2, 1, 0]) for n in range(200)]
    assert 70 < sum(flips) < 130
    # no crops and no flips: the images themselves, unchanged
    stack = rng.integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    assert np.array_equal(augment_batch(stack, idx, numbers, seed=7, size=8), stack[idx])


def write(folder, name, image):
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / name)


def test_image_folder_converts_and_resizes_mixed_modes_and_sizes(tmp_path):
    rng = np.random.default_rng(3)
    write(tmp_path / "cat", "a.png", Image.fromarray(rng.integers(0, 256, (10, 14, 4), dtype=np.uint8), "RGBA"))
    write(tmp_path / "cat", "b.png", Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).convert("P"))
    write(tmp_path / "dog", "c.jpg", Image.fromarray(rng.integers(0, 256, (16, 8), dtype=np.uint8)))
    write(tmp_path / "dog", "d.JPEG", Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)))
    folder = ImageFolder(tmp_path, channels=3, convert=True, resolution=8, labels="folders")
    assert folder.images.shape == (4, 8, 8, 3) and folder.labels.tolist() == [0, 0, 1, 1]
    grey = ImageFolder(tmp_path, channels=1, convert=True, resolution=6, center_crop=False)
    assert [a.shape for a in grey.images] == [(6, 8, 1), (6, 6, 1), (12, 6, 1), (6, 6, 1)]
    # without convert the modes are checked as before, but resolution still allows mixed sizes
    with pytest.raises(ValueError, match=r"a\.png: image mode 'RGBA'"):
        ImageFolder(tmp_path, channels=3, resolution=8)
    with pytest.raises(ValueError, match="convert=True needs channels"):
        ImageFolder(tmp_path, convert=True)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken\.png: cannot read the image"):
        ImageFolder(tmp_path, channels=3, convert=True, resolution=8)
    with pytest.raises(ValueError, match=r"broken\.png: cannot read the image"):
        ImageFolder(tmp_path / "dog")
