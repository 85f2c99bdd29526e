"""Entry point of the ``accel`` command: composes the command groups and turns known errors into one line."""

from __future__ import annotations

import os
import sys

import typer

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
app.command("calibrate", help="Recommend a CG-Taylor threshold for a model from a measured sweep.")(calibrate)
app.command("coverage", help="Which diffusers denoisers CG-Taylor supports (tiny random models; writes docs/coverage.md).")(coverage)


def _mount_optional() -> None:
    """Mount command groups whose modules exist (each issue adds its own)."""
    from . import bench, finetune

    app.add_typer(bench.app, name="bench", help="Speed/quality benchmarks (JSON, Markdown, PNG).")
    app.add_typer(finetune.app, name="finetune", help="Fine-tune models from a differentiable metric.")
    for extra in finetune.TOP_LEVEL:
        app.command(extra[0], help=extra[1])(extra[2])


_mount_optional()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; known errors (AccelError, bad files) print one line on stderr and exit 1.

    Set ``ACCEL_DEBUG=1`` to see the full traceback instead.
    """
    from accel.errors import AccelError

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own rich bars report progress
    if len(sys.argv if argv is None else argv) > 1 and "--help" not in (sys.argv if argv is None else argv):
        from diffusers.utils import logging as dlogging

        dlogging.disable_progress_bar()  # "Loading pipeline components" bars
    try:
        app(args=argv, standalone_mode=False)
    except (AccelError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        if os.environ.get("ACCEL_DEBUG") == "1":
            raise
        msg = str(e) if isinstance(e, AccelError) else f"{type(e).__name__}: {e}"
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors come through here in standalone_mode=False
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
