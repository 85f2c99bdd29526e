"""DeepCache's uniform policy (Ma et al. 2023) at block granularity, as diffusers hooks: the shallow path CG-Taylor's
U-Net policy keeps with ``unet_split=1`` (conv_in, down block 0, the last up block and the head live), the deep
part's output reused unchanged between full steps. A peer in the benchmark beside the DeepCache package."""

from __future__ import annotations

from typing import Any

import torch


class DeepCacheBlock:
    """DeepCache's uniform policy (Ma et al. 2023) re-implemented at block granularity as diffusers hooks:
    every ``interval``-th call runs in full, the others run only the shallow path (conv_in, down block 0, the
    last up block, the head) and reuse the deep part's output (the input of the last up block) unchanged."""

    def __init__(self, unet: torch.nn.Module, interval: int) -> None:
        from diffusers.hooks.hooks import HookRegistry, ModelHook

        from ..caching.unet import deep_split_blocks

        self.interval, self.calls, self.cached = interval, 0, None
        specs = deep_split_blocks(unet, 1)[1:]
        owner = self

        class Count(ModelHook):
            def new_forward(self, module: torch.nn.Module, *a: Any, **k: Any) -> Any:
                owner.full = owner.calls % owner.interval == 0 or owner.cached is None
                owner.calls += 1
                return self.fn_ref.original_forward(*a, **k)

        class Deep(ModelHook):
            def __init__(self, spec: Any, last: bool) -> None:
                super().__init__()
                self.spec, self.last = spec, last

            def new_forward(self, module: torch.nn.Module, *a: Any, **k: Any) -> Any:
                if owner.full:
                    out = self.fn_ref.original_forward(*a, **k)
                    if self.last:
                        owner.cached = out
                    return out
                return self.spec.passthrough(a, k, hidden=owner.cached if self.last else None)

        HookRegistry.check_if_exists_or_initialize(unet).register_hook(Count(), "deepcache_block")
        for i, s in enumerate(specs):
            HookRegistry.check_if_exists_or_initialize(s.module).register_hook(Deep(s, i == len(specs) - 1), "deepcache_block")

    def reset(self) -> None:
        self.calls, self.cached = 0, None
