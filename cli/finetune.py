"""``accel finetune``: fine-tuning command group; ``TOP_LEVEL`` lists commands that sit at the top level."""

from __future__ import annotations

from typing import Any, Callable

import typer

from .adjoint import finetune_adjoint
from .idm import finetune_idm, reconstruct

app = typer.Typer(no_args_is_help=True)
app.command("adjoint", help="AdjointDPM fine-tuning tasks on the shipped model: embedding, LoRA style, noise audit.")(finetune_adjoint)
app.command("idm", help="Fine-tune an invertible diffusion model for compressed sensing at one sampling ratio.")(finetune_idm)

# (name, help, function) of commands mounted directly under ``accel``.
TOP_LEVEL: list[tuple[str, str, Callable[..., Any]]] = [
    ("reconstruct", "Measure an image with the CS operator and reconstruct it with IDM; prints PSNR/SSIM.", reconstruct),
]
