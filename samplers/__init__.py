"""ODE samplers for diffusion models in the exponential-integrator variables of AdjointDPM (Pan et al. 2023).

One model contract (:class:`Denoiser`), time grids from diffusers schedulers, first-order (= DDIM /
FlowMatchEuler) and second-order multistep samplers, and a generic torchdiffeq path.
"""

from ._models import (
    Denoiser,
    Prediction,
    class_embeddings,
    denoiser_from_pipeline,
    flux_image_ids,
    pack_flux_latents,
    unpack_flux_latents,
)
from ._schedules import (
    FlowSchedule,
    Grid,
    VPSchedule,
    grid_from_scheduler,
    make_grid,
    schedule_from_scheduler,
)
from ._solvers import (
    SAMPLERS,
    ODEFunc,
    flow_shift_mu,
    get_step,
    prepare,
    sample,
    sample_deis2m,
    sample_euler,
    sample_odeint,
)

__all__ = [
    "SAMPLERS",
    "Denoiser",
    "FlowSchedule",
    "Grid",
    "ODEFunc",
    "Prediction",
    "VPSchedule",
    "class_embeddings",
    "denoiser_from_pipeline",
    "flow_shift_mu",
    "flux_image_ids",
    "get_step",
    "grid_from_scheduler",
    "make_grid",
    "pack_flux_latents",
    "prepare",
    "sample",
    "sample_deis2m",
    "sample_euler",
    "sample_odeint",
    "schedule_from_scheduler",
    "unpack_flux_latents",
]
