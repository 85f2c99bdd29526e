"""accel.invertible.data: images read as people have them (grey at full range, colour as RGB or Y), written back."""

import numpy as np
import pytest
from PIL import Image

from accel.errors import AccelError


def grey_levels(h: int = 40, w: int = 48) -> np.ndarray:
    """uint8 (h, w) grey image using the full range 0..255."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = 127.5 + 127.5 * np.sin(xx / 4.0) * np.cos(yy / 6.0)
    img[0, 0], img[0, 1] = 0, 255
    return np.round(img).astype(np.uint8)


def grey_storages(folder, levels):
    """The same grey levels stored as L, as a palette of grey entries (like Set11's Parrots), as RGB with
    equal channels, and as LA (with an alpha channel)."""
    folder.mkdir(exist_ok=True)
    files = {}
    files["L"] = folder / "grey_L.png"
    Image.fromarray(levels).save(files["L"])
    pal = Image.fromarray(levels).convert("P")  # a grey palette: entries (k, k, k)
    pal.putpalette([v for k in range(256) for v in (k, k, k)])
    pal.putdata(levels.ravel().tolist())
    files["P"] = folder / "grey_P.tif"
    pal.save(files["P"])
    files["RGB"] = folder / "grey_RGB.png"
    Image.fromarray(np.stack([levels] * 3, -1)).save(files["RGB"])
    files["LA"] = folder / "grey_LA.png"
    Image.fromarray(np.stack([levels, np.full_like(levels, 200)], -1), mode="LA").save(files["LA"])
    return files


def test_grey_is_read_at_full_range_whatever_its_storage(tmp_path):
    from accel.invertible.data import load_image

    levels = grey_levels()
    files = grey_storages(tmp_path, levels)
    assert Image.open(files["P"]).mode == "P" and Image.open(files["LA"]).mode == "LA"
    for mode, f in files.items():
        warned = []
        for channel in ("auto", "y"):
            pixels, space = load_image(f, channel, warn=warned.append)
            assert space == "grey" and pixels.shape == levels.shape and pixels.dtype == np.float32, mode
            assert np.array_equal(pixels * 255, levels.astype(np.float32)), mode  # 0..255, not BT.601's 16..235
        assert len(warned) == (2 if mode == "LA" else 0) and all("alpha" in m for m in warned)


def test_l_images_read_as_before(tmp_path):
    """Mode L was read right before: the same float32 array as ``asarray(im) / 255`` (the old reading)."""
    from accel.invertible.data import read_image

    f = tmp_path / "l.png"
    Image.fromarray(grey_levels()).save(f)
    assert np.array_equal(read_image(f), np.asarray(Image.open(f), dtype=np.float32) / 255.0)


def test_set11_ships_inside_the_package_as_listed_in_its_source_note():
    """Set11 is package data of accel.invertible (not looked up beside the repository); the files are the ones
    whose SHA-256 the SOURCE.md beside them lists."""
    import hashlib
    import re
    from pathlib import Path

    import accel.invertible
    from accel.invertible.data import default_set11, list_images

    folder = default_set11()
    assert folder.parent == Path(accel.invertible.__file__).resolve().parent
    listed = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", (folder / "SOURCE.md").read_text(), re.M))
    files = list_images(folder)
    assert len(files) == 11 and sorted(listed) == sorted(p.name for p in files)
    for p in files:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == listed[p.name], p.name


def test_set11_palette_images_are_grey_at_full_range():
    from accel.invertible.data import default_set11, load_image

    folder = default_set11()
    for name, lo, hi in (("Parrots", 15, 255), ("foreman", 37, 237)):
        assert Image.open(folder / f"{name}.tif").mode == "P"
        pixels, space = load_image(folder / f"{name}.tif", "y")
        assert space == "grey" and (pixels.min() * 255, pixels.max() * 255) == (lo, hi)


def test_colour_is_rgb_or_y(tmp_path):
    from accel.invertible.data import load_image, rgb_to_y

    rgb = np.stack([grey_levels(), grey_levels()[::-1], np.full((40, 48), 30, np.uint8)], -1)
    f = tmp_path / "c.png"
    Image.fromarray(rgb).save(f)
    pixels, space = load_image(f, "auto")
    assert space == "rgb" and np.array_equal(pixels * 255, rgb.astype(np.float32))
    y, space = load_image(f, "y")
    assert space == "y" and np.allclose(y, rgb_to_y(rgb / 255.0), atol=1e-6) and 16 / 255 - 1e-6 <= y.min() and y.max() <= 235 / 255 + 1e-6
    with pytest.raises(AccelError, match="channel must be one of auto, y"):
        load_image(f, "rgb")


def test_rgba_drops_alpha_with_one_warning(tmp_path):
    from accel.invertible.data import load_image

    rgb = np.stack([grey_levels(), grey_levels()[::-1], np.zeros((40, 48), np.uint8)], -1)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(np.concatenate([rgb, np.full((40, 48, 1), 7, np.uint8)], -1), mode="RGBA").save(tmp_path / "ca.png")
    warned = []
    with_alpha, space = load_image(tmp_path / "ca.png", "auto", warn=warned.append)
    assert space == "rgb" and np.array_equal(with_alpha, load_image(tmp_path / "c.png", "auto")[0])
    assert len(warned) == 1 and "alpha" in warned[0] and "ca.png" in warned[0]
    with pytest.warns(UserWarning, match="alpha channel"):  # library default: warnings.warn
        load_image(tmp_path / "ca.png", "auto")


def test_16_bit_keeps_its_levels(tmp_path):
    from accel.invertible.data import bit_depth, load_image, write_image

    rng = np.random.default_rng(0)
    levels = rng.integers(0, 65536, (40, 48)).astype(np.uint16)
    levels[0, 0], levels[0, 1] = 1, 300  # below 256 too: not mistaken for an 8-bit image
    for suffix in (".png", ".tif"):
        f = tmp_path / f"s{suffix}"
        Image.fromarray(levels).save(f)
        pixels, space = load_image(f)
        assert space == "grey" and bit_depth(f) == 16
        assert np.array_equal(np.round(pixels.astype(np.float64) * 65535), levels)  # every 16-bit level survives
        write_image(tmp_path / f"back{suffix}", pixels, bits=16)
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"back{suffix}")), levels)
    dark = np.full((8, 8), 200, np.uint16)  # a dark 16-bit image is 200/65535, not 200/255
    Image.fromarray(dark).save(tmp_path / "dark.png")
    assert np.allclose(load_image(tmp_path / "dark.png")[0], 200 / 65535)


@pytest.mark.parametrize("shape", [(40, 48), (40, 48, 3)])
def test_write_read_round_trip_changes_no_level(tmp_path, shape):
    """A reconstruction written to PNG and read back is itself rounded to 8 bits; writing it again changes nothing."""
    from accel.invertible.data import load_image, write_image

    rec = np.random.default_rng(1).random(shape).astype(np.float32)
    write_image(tmp_path / "r.png", rec)
    assert Image.open(tmp_path / "r.png").mode == ("L" if len(shape) == 2 else "RGB")
    back, space = load_image(tmp_path / "r.png", "auto")
    assert space == ("grey" if len(shape) == 2 else "rgb")
    assert np.array_equal(back * 255, np.round(rec.astype(np.float64) * 255))
    write_image(tmp_path / "r2.png", back)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r2.png")), np.asarray(Image.open(tmp_path / "r.png")))


def test_psnr_ssim_on_rgb_pool_the_channels():
    from accel.invertible.data import psnr, ssim

    rng = np.random.default_rng(2)
    ref = rng.random((40, 48, 3))
    x = np.clip(ref + 0.05 * rng.standard_normal(ref.shape), 0, 1)
    mses = [np.mean(((x[..., c] - ref[..., c]) * 255) ** 2) for c in range(3)]
    assert psnr(x, ref) == pytest.approx(10 * np.log10(255**2 / np.mean(mses)))
    assert ssim(x, ref) == pytest.approx(np.mean([ssim(x[..., c], ref[..., c]) for c in range(3)]), rel=1e-6)
