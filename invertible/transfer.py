"""Warm starts across architectures: copy what two networks share, by name (the U-Net) or by role (IDM).

Used when a prior changes architecture (unet-natural without its attention blocks): the convolutional parts of
the earlier prior, and of the IDM weights fine-tuned from it, carry over; what has no counterpart starts fresh (IDM's
injectors are the identity at initialisation, so a fresh injector changes nothing until trained).
"""

from __future__ import annotations

import torch
from torch import nn

from accel.errors import AccelError
from accel.training import copy_matching


def _unit_roles(idm: nn.Module) -> tuple[dict[str, str], list[str]]:
    """IDM -> ({coupling key: U-Net module name of its body}, [role of each run, in call order]).

    A run's role is the U-Net name of its first body, so a run of an attention-free U-Net and the run of the
    same resnet in a U-Net with attention share a role."""
    names = {id(m): n for n, m in idm.net.unet.named_modules()}
    body = {k: names[id(getattr(c.body, "resnet", None) or getattr(c.body, "attn"))] for k, c in idm.net.couplings.items()}
    runs = [body[op.units[0]] for op in idm.net.plan if op.kind == "run"]
    return body, runs


def transfer_idm(source: nn.Module, target: nn.Module) -> dict[str, int]:
    """Copy an IDM's fine-tuned state into another IDM with the same T whose U-Net drops or adds blocks.

    U-Net tensors go by name and shape; coupling weights ``v`` by the U-Net module their body wraps; the two
    injectors of each reversible run by the run's role; step-level parameters (schedule, time embeddings,
    step couplings, start scale, beta) as they are.  Returns counts of what was copied and left fresh.
    """
    if source.steps != target.steps:
        raise AccelError(f"cannot transfer IDM weights across T ({source.steps} -> {target.steps})")
    n_unet, fresh = copy_matching(target.net.unet, source.net.unet.state_dict())
    src_body, src_runs = _unit_roles(source)
    dst_body, dst_runs = _unit_roles(target)
    by_module = {m: k for k, m in src_body.items()}
    n_coup = 0
    with torch.no_grad():
        for k, m in dst_body.items():
            if m in by_module:
                target.net.couplings[k].load_state_dict(source.net.couplings[by_module[m]].state_dict())
                n_coup += 1
        n_inj = 0
        for t in range(target.steps):
            for j, role in enumerate(dst_runs):
                if role in src_runs:
                    i = src_runs.index(role)
                    for s in range(2):
                        target.injectors[t][2 * j + s].load_state_dict(source.injectors[t][2 * i + s].state_dict())
                        n_inj += 1
        for name in ("s_logit", "start_scale", "beta", "temb"):
            getattr(target, name).copy_(getattr(source, name))
        target.step_units.load_state_dict(source.step_units.state_dict())
    total_inj = sum(len(x) for x in target.injectors)
    return {"unet_tensors": n_unet, "unet_fresh": len(fresh), "couplings": n_coup, "couplings_fresh": len(dst_body) - n_coup,
            "injectors": n_inj, "injectors_fresh": total_inj - n_inj}
