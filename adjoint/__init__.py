"""Gradients through diffusion sampling (AdjointDPM, Pan et al. ICLR 2024; AdjointDEIS, Blasingame and Liu 2024).

``x0 = sample_with_grad(pipe, noise, cond, steps=20); loss(x0).backward()`` gives gradients for the initial
noise, the conditioning and the network weights. ``method`` names a row of :data:`METHODS` and ``options`` its
settings: the default ``"discrete"`` is the exact adjoint of the sampler (equal to autograd, with the memory of
one network call; ``options={"cache": "shipped"}`` differentiates through the CG-Taylor-cached sampler);
``"continuous"`` is the paper's adjoint ODE, ``"torchdiffeq"`` the paper code's ``odeint_adjoint`` baseline.
"""

from ._api import (METHODS, AutogradOptions, CheckpointOptions, ContinuousOptions, DiscreteOptions, TorchDiffEqOptions,
                   sample_with_grad)

__all__ = ["METHODS", "AutogradOptions", "CheckpointOptions", "ContinuousOptions", "DiscreteOptions", "TorchDiffEqOptions",
           "sample_with_grad"]
