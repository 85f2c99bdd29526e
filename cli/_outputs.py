"""Where benchmark and calibration commands write: one ``--out-dir/-o`` folder in every one of them.

Older per-file spellings (``--json``, ``--md`` / ``--markdown``, ``--png``, ``--plots``) stay as hidden options of
the commands that had them; a file given that way wins over the folder's default name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

OutDir = Annotated[Optional[Path], typer.Option("--out-dir", "-o", help="Folder for the JSON, Markdown and PNG outputs.")]
JsonFile = Annotated[Optional[Path], typer.Option("--json", hidden=True, help="JSON file (older spelling; see --out-dir).")]
MdFile = Annotated[Optional[Path], typer.Option("--markdown", "--md", hidden=True, help="Markdown file (older spelling; see --out-dir).")]
PngFile = Annotated[Optional[Path], typer.Option("--png", hidden=True, help="PNG file (older spelling; see --out-dir).")]


def output_files(out_dir: Optional[Path], stem: str, **given: Optional[Path]) -> dict[str, Optional[Path]]:
    """``{"json": ..., "md": ..., "png": ...}``: each file given explicitly, else ``out_dir / f"{stem}.{ext}"``
    (the folder is created), else None (not written)."""
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            from accel.errors import AccelError

            raise AccelError(f"--out-dir {str(out_dir)!r} is a file; give a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
    return {ext: given.get(ext) or (out_dir / f"{stem}.{ext}" if out_dir is not None else None) for ext in ("json", "md", "png")}
