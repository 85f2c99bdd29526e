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


def test_without_the_distribution_top_level_kernels_is_absent():
    r = _run("import importlib.util, sys\n"
             "try:\n    import kernels\nexcept ModuleNotFoundError as e:\n    print('absent', e.name, 'kernels' in sys.modules)\n"
             "import accel.kernels; print(accel.kernels.backend.__name__)")
    if "hub-kernels" in r.stdout or (r.returncode == 0 and "absent" not in r.stdout):
        import importlib.util

        assert importlib.util.find_spec("kernels") is not None  # Hugging Face's kernels is installed here: nothing to check
        return
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["absent", "kernels", "False", "backend"]
