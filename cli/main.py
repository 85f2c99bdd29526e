"""Entry point of the ``accel`` command: composes the command groups and turns known errors into one line."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from typing import Any, Callable

import typer
import typer.main

from ._progress import show_notes
from .calibrate import calibrate
from .coverage import coverage
from .sample import sample
from .zoo import app as zoo_app

app = typer.Typer(
    name="accel",
    help="Acceleration for Hugging Face diffusers: gated Taylor caching, adjoint gradients, invertible CS models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("sample", help="Generate images with a shipped model or a local diffusers pipeline folder.")(sample)
app.add_typer(zoo_app, name="zoo", help="Shipped models: list them, train them.")
app.command("calibrate", help="CG-Taylor settings for a model, chosen by the benchmark rule on a selection split (--save writes accel_cache.json).")(calibrate)
app.command("coverage", help="Which diffusers denoisers CG-Taylor supports (tiny random models; writes docs/coverage.md).")(coverage)


def _mount_optional() -> None:
    """Mount command groups whose modules exist (each capability adds its own)."""
    from . import bench, finetune

    app.add_typer(bench.app, name="bench", help="Speed/quality benchmarks (JSON, Markdown, PNG).")
    app.add_typer(finetune.app, name="finetune", help="Fine-tune models from a differentiable metric.")
    for extra in finetune.TOP_LEVEL:
        app.command(extra[0], help=extra[1])(extra[2])


_mount_optional()


def _classes(name: str) -> tuple[type[BaseException], ...]:
    """Exception class ``name`` (ClickException, Exit, Abort) from typer and from every click it may use.

    typer >= 0.2x vendors click as ``typer._click`` with classes of its own, older typer uses plain ``click``:
    catching only ``click.exceptions.ClickException`` let every usage error through as a traceback.
    """
    found = {getattr(typer, name, None)}
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.add(getattr(importlib.import_module(module), name, None))
        except ImportError:
            continue
    return tuple(c for c in found if isinstance(c, type) and issubclass(c, BaseException))


def leaf_commands(command: Any = None, path: str = "") -> dict[str, Any]:
    """Every runnable command of ``accel`` by its path (``"bench cache"``, ``"sample"``), as the click command."""
    command = typer.main.get_command(app) if command is None else command
    subs = getattr(command, "commands", None)
    if not subs:
        return {path: command}
    return {k: v for name, sub in subs.items() for k, v in leaf_commands(sub, f"{path} {name}".strip()).items()}


def _quiet_diffusers(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``callback`` with diffusers' own progress bars off; importing diffusers only once the arguments
    parsed keeps usage errors and ``--help`` fast."""

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        from diffusers.utils import logging as dlogging

        dlogging.disable_progress_bar()  # "Loading pipeline components" bars; our own rich bars report progress
        return callback(*args, **kwargs)

    return run


_IMPORT_NOISE = ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao")


def _one_line_errors() -> tuple[type[BaseException], ...]:
    """Errors printed as one line: AccelError, bad files, and ``accel.kernels``' own KernelError (kernels is a leaf
    of the package and cannot raise AccelError). Looked up when an error propagates: a KernelError can only come
    once the kernels are imported, and importing them here (torch) would slow every command down."""
    from accel.errors import AccelError

    dispatch = sys.modules.get("accel.kernels.dispatch")
    kernel = (dispatch.KernelError,) if dispatch is not None else ()
    return (AccelError, *kernel, FileNotFoundError, PermissionError, IsADirectoryError)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Known errors (AccelError, the kernels' KernelError, bad files) print one line on stderr and exit 1;
    usage errors (unknown option or command, missing or malformed value) print the usage hint and one error line and
    exit 2.

    Set ``ACCEL_DEBUG=1`` to see the full traceback instead.
    """
    # torchao, where installed, logs on import that its CUDA-only kernels do not load (and torch and diffusers
    # add notes about it): nothing about the command run, and it would break the one-line error contract.
    for name in _IMPORT_NOISE:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    show_notes()  # "resuming from step ..." and other notes of the library, on stderr
    debug = os.environ.get("ACCEL_DEBUG") == "1"
    cli = typer.main.get_command(app)
    for command in leaf_commands(cli).values():
        if command.callback is not None:
            command.callback = _quiet_diffusers(command.callback)
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 2 and args[1] == "adjoint":  # `accel bench|finetune adjoint ... --cache [THRESHOLD]`
        from .adjoint import bare_cache_flags

        args = bare_cache_flags(args)
    try:
        rc = cli.main(args=args, standalone_mode=False)
    except _one_line_errors() as e:
        if debug:
            raise
        msg = f"{type(e).__name__}: {e}" if isinstance(e, OSError) else str(e)
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)
    except _classes("Exit") as e:
        sys.exit(e.exit_code)
    except _classes("Abort"):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except _classes("ClickException") as e:  # usage errors: standalone_mode=False hands them to us
        if debug:
            raise
        e.show()  # formatted by the click that raised it: "Usage: ...", "Try ... --help", "Error: ..."
        sys.exit(e.exit_code)
    if isinstance(rc, int) and rc:  # an Exit(code) or Ctrl-C comes back as a return value without standalone_mode
        sys.exit(rc)


if __name__ == "__main__":
    main()
