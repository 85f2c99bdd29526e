"""The photographs unet-natural and IDM train on, and the checks that keep every test image out of them.

The training set is BSD400 (kept in the repository, not in the wheel) plus the photographs shipped inside
scikit-image, scikit-learn and PyWavelets.  BSD400 is the 400-image grey training set of DnCNN (Zhang et al.,
TIP 2017): 180x180 crops of the Berkeley Segmentation Dataset's training images, disjoint by construction from
BSD68 (taken from BSDS300's test half); ``data/train/bsd400/SOURCE.md`` names the repository, commit and terms.

Content is checked anyway: :func:`check_disjoint` compares whole images (copies, crops-to-size), and
:func:`check_no_test_crops` searches every training image, at several scales and in its 8 dihedral variants,
for a normalised cross-correlation match inside every test image (resized crops).  Every ``camera`` image (a
re-shoot of Set11's cameraman) and the synthetic pictures are left out by name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import AccelError

# Photographs shipped in the wheels (file names inside each package). Left out on purpose: skimage's and
# PyWavelets' ``camera`` (the Set11 cameraman scene), motorcycle_right (a second view of motorcycle_left)
# and the synthetic or binary pictures (chessboard, clock_motion, color, horse, logo, phantom, text, page).
SKIMAGE_FILES = ("astronaut.png", "brick.png", "cell.png", "chelsea.png", "coffee.png", "coins.png", "grass.png", "gravel.png",
                 "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg")
SKLEARN_FILES = ("china.jpg", "flower.jpg")
PYWT_FILES = ("aero", "ascent")
EXCLUDED = ("camera",)


def gray(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W[, C]) -> float32 luminance (ITU-R BT.601 Y of the [0, 1] RGB, as for Set11) in [0, 1]."""
    x = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else max(1.0, float(img.max())))
    if x.ndim == 3:
        x = x[..., :3]
        x = (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2] + 16.0) / 255.0
        x = (x - 16 / 255) * (255 / 219)  # full range, like a grayscale photograph
    return np.clip(x, 0.0, 1.0)


def natural_images() -> dict[str, np.ndarray]:
    """The training photographs as float32 grayscale arrays in [0, 1] (name -> (H, W)); nothing downloaded."""
    import skimage.data
    import skimage.io
    import sklearn.datasets

    try:
        import pywt.data
    except ImportError:
        raise AccelError("the training photographs include PyWavelets' images: pip install PyWavelets") from None
    out: dict[str, np.ndarray] = {}
    sk_dir = Path(skimage.data.__file__).parent
    for f in SKIMAGE_FILES:
        out[f"skimage/{f.split('.')[0]}"] = gray(skimage.io.imread(sk_dir / f))
    sample = sklearn.datasets.load_sample_images()
    for f, img in zip(sample.filenames, sample.images):
        name = Path(f).name
        if name in SKLEARN_FILES:
            out[f"sklearn/{name.split('.')[0]}"] = gray(img)
    for f in PYWT_FILES:
        out[f"pywt/{f}"] = gray(np.asarray(getattr(pywt.data, f)()).astype(np.uint8))
    for name in out:
        if any(name.endswith("/" + e) for e in EXCLUDED):
            raise AccelError(f"internal error: excluded image {name} in the training set")
    return out


def check_disjoint(images: dict[str, np.ndarray], test_dir: str | Path, size: int = 64, limit: float = 0.9) -> dict[str, tuple[str, float]]:
    """Highest normalised correlation of every training image with the test images in ``test_dir`` (both
    resized to ``size``; ``accel.invertible.data.default_set11()`` is the Set11 copy shipped with the package).

    Raises :class:`AccelError` when a pair exceeds ``limit``: this catches copies and crops-to-size of a
    test image.  It cannot tell a re-shoot of a scene (scikit-image's camera scores 0.61 against Set11's
    cameraman, while the unrelated sklearn china scores 0.57), which is why those are excluded by name.
    """
    from PIL import Image

    def small(a: np.ndarray) -> np.ndarray:
        v = np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR), np.float64).ravel()
        v = v - v.mean()
        return v / (np.linalg.norm(v) + 1e-12)

    tests = {p.stem: small(gray(np.asarray(Image.open(p)))) for p in sorted(Path(test_dir).iterdir()) if p.suffix.lower() in (".tif", ".png", ".bmp", ".jpg")}
    worst: dict[str, tuple[str, float]] = {}
    for name, img in images.items():
        s = small(img)
        cands = [(t, abs(float(s @ v))) for t, v in tests.items()]
        cands += [(t + " (mirrored)", abs(float(small(img[:, ::-1].copy()) @ v))) for t, v in tests.items()]
        worst[name] = max(cands, key=lambda c: c[1])
        if worst[name][1] > limit:
            raise AccelError(f"training image {name} resembles test image {worst[name][0]} (correlation {worst[name][1]:.2f} > {limit})")
    return worst


def sample_patches(images: list[torch.Tensor], n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """n random ``size``-square crops (B, 1, size, size) in [0, 1], images chosen by area, 8 dihedral variants."""
    areas = torch.tensor([float(im.shape[-2] * im.shape[-1]) for im in images])
    idx = torch.multinomial(areas, n, replacement=True, generator=gen)
    out = []
    for i in idx.tolist():
        im = images[i]
        h, w = im.shape[-2:]
        top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - size + 1, (1,), generator=gen))
        p = im[..., top : top + size, left : left + size]
        k, flip = int(torch.randint(0, 4, (1,), generator=gen)), bool(torch.randint(0, 2, (1,), generator=gen))
        p = torch.rot90(p, k, dims=(-2, -1))
        out.append(p.flip(-1) if flip else p)
    return torch.stack(out).unsqueeze(1) if out[0].dim() == 2 else torch.stack(out)


BSD400 = "data/train/bsd400"  # relative to the repository root
IMAGE_SUFFIXES = (".png", ".tif", ".bmp", ".jpg", ".jpeg")



def repo_data(rel: str = BSD400) -> Path:
    """The folder ``rel`` of the repository this package runs from (a clone or an editable install).

    The training photographs are not in the wheel: raises :class:`AccelError` saying so when not found.
    """
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / rel
        if cand.is_dir():
            return cand
    raise AccelError(f"training images {rel!r} not found above {here.parent}: they live in the git repository, not in the "
                     "wheel; train from a clone (pip install -e .) or pass your own folder (--images)")


def read_grey(path: str | Path) -> np.ndarray:
    """One training photograph as float32 grey in [0, 1] (colour: Y of BT.601 at full range, as unet-natural's other photographs)."""
    from PIL import Image

    with Image.open(path) as im:
        return gray(np.asarray(im.convert("L") if im.mode not in ("L", "RGB") else im))


def bsd400_images(folder: str | Path | None = None) -> dict[str, np.ndarray]:
    """BSD400 as ``{"bsd400/test_001": (180, 180) float32 in [0, 1], ...}`` (400 images)."""
    folder = Path(folder) if folder is not None else repo_data()
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise AccelError(f"no training images in {str(folder)!r}")
    return {f"bsd400/{p.stem}": read_grey(p) for p in files}


def training_photographs() -> dict[str, np.ndarray]:
    """Everything unet-natural and IDM train on: BSD400 and the photographs shipped in the wheels."""
    return bsd400_images() | natural_images()


def test_images(folders: list[str | Path]) -> dict[str, np.ndarray]:
    """Test images from several folders as grey float32 (``folder-name/stem`` -> (H, W))."""
    out = {}
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise AccelError(f"test image folder {str(folder)!r} does not exist")
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                out[f"{folder.name}/{p.stem}"] = read_grey(p)
    return out


def _dihedral(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, k, k) -> (8N, 1, k, k): the 4 rotations of x and of its mirror image (variant v = 4 * mirrored + turns)."""
    return torch.cat([torch.rot90(y, r, (-2, -1)) for y in (x, x.flip(-1)) for r in range(4)])


def _resize(a: np.ndarray, h: int, w: int) -> torch.Tensor:
    """[0, 1] image -> (h, w) float32 tensor of grey levels 0-255 (bilinear, as PIL)."""
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR), np.float32))


def _ncc(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Normalised cross-correlation of zero-mean unit-norm templates t (M, 1, k, k) at every position of
    x (1, 1, H, W): (M, H-k+1, W-k+1); windows flatter than one grey level score -1."""
    k = t.shape[-1]
    ones = torch.ones(1, 1, k, k)
    num = F.conv2d(x, t)
    mean = F.conv2d(x, ones) / k**2
    var = F.conv2d(x * x, ones) - k**2 * mean**2  # k^2 x the window's variance
    return (num / var.clamp_min(1e-6).sqrt()).where(var > k**2, torch.tensor(-1.0))[0]


def _highpass(x: torch.Tensor) -> torch.Tensor:
    """(..., H, W) minus its 5x5 local mean: the detail that a look-alike scene does not share."""
    y = x.reshape(-1, 1, *x.shape[-2:])
    return (y - F.avg_pool2d(y, 5, 1, 2, count_include_pad=False)).reshape(x.shape)


def _templates(images: list[np.ndarray], k: int, highpass: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(8N, 1, k, k) zero-mean unit-norm dihedral templates and whether each is textured (std > 1 grey level)."""
    raw = torch.stack([_resize(a, k, k) for a in images])[:, None]
    raw = _highpass(raw) if highpass else raw
    t = _dihedral(raw)
    textured = t.flatten(1).std(1) > 1.0  # a flat template matches nothing meaningfully
    t = t - t.mean((-2, -1), keepdim=True)
    return t / (t.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-6), textured


def crop_match_scores(train: dict[str, np.ndarray], tests: dict[str, np.ndarray], k: int = 16,
                      fractions: tuple[float, ...] = (1.0, 0.8, 0.6, 0.45, 0.35), fine: int = 64,
                      verify_above: float = 0.8) -> dict[str, tuple[str, float]]:
    """Does any training image look like a resized crop of a test image?  name -> (where, score in [-1, 1]).

    Coarse search: each training image at ``k`` x ``k`` in its 8 dihedral variants, normalised
    cross-correlation at every position of every test image, resized so that a square of ``fraction`` of its
    shorter side spans ``k`` pixels.  At 16 pixels smooth pictures (a horizon, water) also correlate above
    0.95 somewhere, so every coarse match above ``verify_above`` is verified at ``fine`` x ``fine`` pixels
    (the same variant, the region found, a few pixels of slack), on detail only (each image minus its 5x5
    local mean, so that shared smooth gradients do not count), and that score is reported.  A resized crop
    of a test image scores about 1.0; unrelated photographs well below (see :func:`check_no_test_crops`).
    """
    names = list(train)
    n = len(names)
    t, textured = _templates([train[m] for m in names], k)
    best = torch.full((n,), -1.0)
    found: list[tuple] = [()] * n
    for tname, img in tests.items():
        h, w = img.shape
        for f in fractions:
            s = k / (f * min(h, w))
            ncc = _ncc(_resize(img, max(k, round(h * s)), max(k, round(w * s)))[None, None], t)
            score, pos = ncc.flatten(1).max(1)
            score = score.where(textured, torch.tensor(-1.0)).view(8, n)
            top, variant = score.max(0)
            for i in (top > best).nonzero().flatten().tolist():
                v = int(variant[i])
                y, x = divmod(int(pos[v * n + i]), ncc.shape[-1])
                best[i], found[i] = top[i], (tname, f, v, y / s, x / s, k / s)
    out = {}
    for i, m in enumerate(names):
        if not found[i]:
            out[m] = ("", -1.0)
            continue
        tname, f, v, y, x, side = found[i]
        score = float(best[i])
        if score > verify_above:
            img = tests[tname]
            z = fine / side  # the test image at the scale where the matched region spans `fine` pixels
            big = _resize(img, max(fine, round(img.shape[0] * z)), max(fine, round(img.shape[1] * z)))
            pad = max(2, round(z * side / k))  # one coarse pixel of slack each way
            y0, x0 = max(0, round(y * z) - pad), max(0, round(x * z) - pad)
            region = big[y0 : round(y * z) + fine + pad, x0 : round(x * z) + fine + pad]
            tf, _ = _templates([train[m]], fine, highpass=True)
            if min(region.shape) >= fine:
                score = float(_ncc(_highpass(region)[None, None], tf[v : v + 1]).max())
        out[m] = (f"{tname} (fraction {f:g})", score)
    return out


def check_no_test_crops(train: dict[str, np.ndarray], test_folders: list[str | Path], limit: float = 0.9) -> dict[str, dict[str, tuple[str, float]]]:
    """:func:`check_disjoint` (whole images, limit 0.9) and :func:`crop_match_scores`
    (resized crops, ``limit``) against every test folder; raises :class:`AccelError` naming the pair when
    either finds a match.  Returns ``{"whole": name -> (test image, score), "crops": name -> (...)}``."""
    whole: dict[str, tuple[str, float]] = {}
    for folder in map(Path, test_folders):
        for name, (t, s) in check_disjoint(train, folder).items():
            if s > whole.get(name, ("", -1.0))[1]:
                whole[name] = (f"{folder.name}/{t}", s)
    crops = crop_match_scores(train, test_images(test_folders))
    bad = {n: s for n, s in crops.items() if s[1] > limit}
    if bad:
        n, (t, s) = max(bad.items(), key=lambda kv: kv[1][1])
        raise AccelError(f"training image {n} matches a crop of test image {t} (correlation {s:.3f} > {limit}); "
                         f"{len(bad)} training image(s) match a test image: remove them")
    return {"whole": whole, "crops": crops}


def training_images(patch: int) -> list[torch.Tensor]:
    """All photographs (BSD400 and the wheels', :func:`training_photographs`) at least ``patch`` pixels on a side,
    plus a half-resolution copy of each (coarser textures), as (H, W) tensors."""
    ims = [torch.from_numpy(a) for a in training_photographs().values()]
    halves = [F.avg_pool2d(a[None, None], 2)[0, 0] for a in ims]
    return [a for a in ims + halves if min(a.shape) >= patch]
