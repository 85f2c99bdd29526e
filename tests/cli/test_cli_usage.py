"""The installed ``accel`` command: every usage error is one line (exit 2, no traceback), in every command; reruns
say where they resume."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from accel.cli.main import leaf_commands

# (arguments, what the error must name): at least one per command, plus malformed values that once gave tracebacks.
BAD_USAGE: list[tuple[list[str], str]] = [
    (["nothing"], "nothing"),
    (["sample", "--steps", "abc"], "--steps"),
    (["sample", "--bogus"], "--bogus"),
    (["zoo", "list", "--bogus"], "--bogus"),
    (["zoo", "train"], "name"),
    (["calibrate", "--min-psnr", "high"], "--min-psnr"),
    (["reconstruct", "--ratio", "tenth"], "--ratio"),
    (["bench", "nothing"], "nothing"),
    (["bench", "cache", "--steps", "1.5"], "--steps"),
    (["bench", "cache-merge"], "reports"),
    (["bench", "cache-overhead", "--tokens", "many"], "--tokens"),
    (["bench", "gate", "--json", "out.json"], "--json"),
    (["bench", "kernels", "--order", "two"], "--order"),
    (["bench", "adjoint", "--batch", "many"], "--batch"),
    (["bench", "idm", "--size"], "--size"),
    (["bench", "adjoint-exactness", "--steps", "many"], "--steps"),
    (["bench", "adjoint-race"], "--out-dir"),
    (["bench", "adjoint-speed", "--rounds", "x"], "--rounds"),
    (["finetune", "adjoint"], "task"),
    (["finetune", "idm", "--iters", "lots"], "--iters"),
    (["coverage", "--bogus"], "--bogus"),
]


def installed_accel() -> str:
    """The console script of the environment running the tests (else the one on PATH)."""
    here = Path(sys.executable).parent / ("accel.exe" if os.name == "nt" else "accel")
    exe = str(here) if here.is_file() else shutil.which("accel")
    assert exe, "the `accel` command is not installed: pip install -e ."
    return exe


def run_accel(*args: str, debug: bool = False, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ACCEL_DEBUG"} | {"OMP_NUM_THREADS": "1"}
    if debug:
        env["ACCEL_DEBUG"] = "1"
    return subprocess.run([installed_accel(), *args], capture_output=True, text=True, env=env, timeout=600, **kw)


def test_bad_usage_table_covers_every_command():
    """A new command has to come with a bad invocation in BAD_USAGE."""
    covered = {" ".join(args[: len(path.split())]) for args, _ in BAD_USAGE for path in leaf_commands()}
    missing = sorted(set(leaf_commands()) - covered)
    assert not missing, f"add a bad invocation of {missing} to BAD_USAGE"


@pytest.mark.parametrize("args, named", BAD_USAGE, ids=[" ".join(a) for a, _ in BAD_USAGE])
def test_usage_error_is_one_line(args, named):
    r = run_accel(*args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout and r.stdout == ""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and named.lower() in errors[0].lower(), r.stderr
    hints = lines[:-1]  # "Usage: accel ...", "Try 'accel ... --help' for help." (absent when click has no context)
    assert lines[-1] == errors[0] and all(h.startswith(("Usage: accel ", "Try 'accel ")) for h in hints), r.stderr


def test_usage_error_traceback_with_accel_debug():
    r = run_accel("sample", "--steps", "abc", debug=True)
    assert r.returncode != 0 and "Traceback" in r.stderr and "BadParameter" in r.stderr


def test_usage_errors_import_no_torch():
    """Parsing fails before any heavy import, so a typo costs a fraction of a second."""
    code = ("import sys\nfrom accel.cli.main import main\ntry:\n    main(['bench', 'kernels', '--order', 'two'])\n"
            "except SystemExit as e:\n    print(e.code, sorted(m for m in ('torch', 'diffusers') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.stdout.split() == ["2", "[]"], r.stdout + r.stderr


def test_rerun_says_first_where_it_resumes(tiny_dit_folder, tmp_path):
    """Interrupted after 1 of 2 iterations (--stop-after), the rerun's first line names the step and the checkpoint."""
    out = tmp_path / "run"
    args = ["finetune", "adjoint", "attack", "--model", str(tiny_dit_folder), "--out", str(out), "--iters", "2", "--batch", "2",
            "--steps", "2", "--checkpoint-every", "1", "--no-progress"]
    first = run_accel(*args, "--stop-after", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "resuming" not in first.stderr + first.stdout
    rerun = run_accel(*args)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    ckpt = out / "checkpoints" / "rank0.safetensors"
    assert rerun.stderr.splitlines()[0] == f"resuming from step 1 of 2 ({ckpt})", rerun.stderr
    assert '"iterations": 2' in rerun.stdout
