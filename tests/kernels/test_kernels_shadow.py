"""From a checkout's root, ``import kernels`` must reach Hugging Face's ``kernels`` distribution (which
transformers and diffusers import when it is installed), not this repository's ``kernels/`` folder (``accel.kernels``)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, extra_path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_top_level_kernels_is_the_installed_distribution(tmp_path):
    fake = tmp_path / "site" / "kernels"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("MARKER = 'hub-kernels'\nfrom kernels.sub import VALUE\n")
    (fake / "sub.py").write_text("VALUE = 7\n")
    r = _run("import kernels, accel.kernels as ak; print(kernels.MARKER, kernels.VALUE, ak.backend.__name__)", str(tmp_path / "site"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["hub-kernels", "7", "backend"]


def test_without_the_distribution_the_import_stays_as_before():
    """No Hugging Face ``kernels`` on the path: ``import kernels`` from the root is this folder, as it always was
    (transformers' availability probe imports it; raising there broke ``python -m pytest`` from the root)."""
    r = _run("import importlib.metadata as m\n"
             "try:\n    m.version('kernels'); print('installed')\nexcept m.PackageNotFoundError:\n"
             "    import kernels, accel.kernels as ak; print(kernels.backend.__name__, ak.backend.__name__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() in (["installed"], ["backend", "backend"])
