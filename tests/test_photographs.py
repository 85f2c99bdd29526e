"""The training photographs (BSD400 in the repository, the wheels' photographs) and the content checks that keep
every test image out of them."""

import numpy as np
import pytest
import torch
from PIL import Image

from accel import photographs
from accel.errors import AccelError


def _photo(seed: int, h: int, w: int) -> np.ndarray:
    """A textured test picture: smoothed noise plus edges (float32 in [0, 1])."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((1, 1, h, w)).astype(np.float32))
    x = 30 * torch.nn.functional.avg_pool2d(x, 31, 1, 15)[0, 0].numpy()
    x += (np.arange(w)[None, :] > w * rng.uniform(0.3, 0.7)) * 0.5
    return ((x - x.min()) / (x.max() - x.min())).astype(np.float32)


def _save(folder, name, a):
    folder.mkdir(exist_ok=True)
    Image.fromarray((a * 255).round().astype(np.uint8)).save(folder / f"{name}.png")


def test_bsd400_is_in_the_repository_not_the_package():
    folder = photographs.repo_data()
    assert folder.name == "bsd400" and (folder / "SOURCE.md").is_file()
    import tomllib

    root = folder.parents[2]  # data/train/bsd400 at the top of the repository
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not any(d.startswith("data") for d in setup["package-dir"].values())  # no package ships it
    ims = photographs.bsd400_images()
    assert len(ims) == 400
    a = ims["bsd400/test_001"]
    assert a.shape == (180, 180) and a.dtype == np.float32 and 0 <= a.min() < a.max() <= 1
    with pytest.raises(AccelError, match="not in the wheel"):
        photographs.repo_data("data/train/no-such-set")


def test_crop_search_finds_resized_rotated_crops_and_passes_other_pictures(tmp_path):
    tests = tmp_path / "tests"
    big = _photo(0, 240, 320)
    _save(tests, "big", big)
    _save(tests, "other", _photo(1, 200, 200))
    crop = big[54:198, 99:243]  # 144x144: 60% of the shorter side, then resized and rotated
    crop = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize((90, 90), Image.BILINEAR), np.float32) / 255
    train = {"crop": np.rot90(crop).copy(), "unrelated": _photo(2, 120, 150)}
    scores = photographs.crop_match_scores(train, photographs.test_images([tests]))
    assert scores["crop"][0].startswith("tests/big") and scores["crop"][1] > 0.93
    assert scores["unrelated"][1] < 0.9
    with pytest.raises(AccelError, match="crop of test image tests/big"):
        photographs.check_no_test_crops(train, [tests])
    found = photographs.check_no_test_crops({"unrelated": train["unrelated"]}, [tests])
    assert set(found) == {"whole", "crops"} and found["crops"]["unrelated"][1] < 0.9
