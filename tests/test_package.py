"""The installed package: subpackage mapping, no stray top-level modules, light imports."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True)
    return next(out.glob("accel_diffusion-*.whl"))


def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"accel"}, f"unexpected top-level entries: {tops}"
    for sub in ("samplers", "adjoint", "invertible", "kernels", "cli", "caching", "zoo"):
        assert f"accel/{sub}/__init__.py" in names
    assert not any(n.startswith("tests/") for n in names)
    # The shipped weights (fp32 safetensors) are most of it: dit-digits 4.5 MB, unet-natural 10.4 MB, three
    # IDM models of 11.4 MB (each a fine-tuned copy of the U-Net) and flux-shapes 16.6 MB (transformer 13.9, VAE
    # 2.5, text encoders 0.6); code and data files stay well under 2 MB.
    assert wheel.stat().st_size < 64 * 2**20, "keep the wheel small"
    code = sum(i.file_size for i in zipfile.ZipFile(wheel).infolist() if not i.filename.endswith(".safetensors"))
    assert code < 2 * 2**20, f"non-weight files take {code / 2**20:.1f} MB"


def test_installed_copy_imports_subpackages(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    assert not (target / "kernels").exists() and not (target / "cli").exists()
    code = (
        "import accel, accel.samplers, accel.kernels, accel.cli, accel.adjoint, accel.invertible, accel.zoo;"
        "import pathlib; p = pathlib.Path(accel.__file__).resolve();"
        f"assert str(p).startswith({str(target.resolve())!r}), p;"
        "print('ok')"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_import_accel_is_light():
    code = (
        "import sys, accel;"
        "bad = [m for m in ('triton', 'matplotlib', 'cache_dit', 'accel.kernels.triton_ops', 'torchdiffeq', 'sklearn', 'diffusers') if m in sys.modules];"
        "print(bad)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


def test_public_api():
    import accel

    for name in accel.__all__:
        assert hasattr(accel, name)
    assert {"enable", "disable", "stats", "cached", "CGTaylorConfig"} <= set(accel.__all__)
