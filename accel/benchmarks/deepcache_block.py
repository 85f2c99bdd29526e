"""DeepCache's uniform policy (Ma et al. 2023) as diffusers hooks, on the shallow paths CG-Taylor's U-Net policies
keep: ``split="block"`` (``unet_policy="shallow"``: conv_in, down block 0, the last up block and
the head live) or ``split="layer"`` (``unet_policy="layer"``: the path of the DeepCache package's branch 1: the first layer of down block 0
and the last two layers of the last up block live). The deep part's output is reused unchanged between full
steps. A peer in the benchmark beside the DeepCache package, on U-Nets the package does not take."""

from __future__ import annotations

from typing import Any

import torch

SPLITS = ("block", "layer")


class DeepCacheBlock:
    """DeepCache's uniform policy (Ma et al. 2023) re-implemented as diffusers hooks: every ``interval``-th call
    runs in full, the others run only the shallow path and reuse the deep part's output (the input of the
    first live up block or up layer) unchanged."""

    def __init__(self, unet: torch.nn.Module, interval: int, split: str = "block") -> None:
        from diffusers.hooks.hooks import HookRegistry, ModelHook

        from ..caching.unet import deep_split_blocks, layer_split_blocks
        from ..errors import AccelError

        if split not in SPLITS:
            raise AccelError(f"deepcache-block split must be one of {SPLITS}, got {split!r}")
        self.interval, self.calls, self.cached = interval, 0, None
        specs = (layer_split_blocks(unet, 1) if split == "layer" else deep_split_blocks(unet, 1))[1:]
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
                    self.spec.learn(a, k, out)  # output layout and shape (what a skipped call must return)
                    if self.last:
                        owner.cached = self.spec.hidden_out(out)
                    return out
                return self.spec.passthrough(a, k, hidden=owner.cached if self.last else None)

        HookRegistry.check_if_exists_or_initialize(unet).register_hook(Count(), "deepcache_block")
        for i, s in enumerate(specs):
            HookRegistry.check_if_exists_or_initialize(s.module).register_hook(Deep(s, i == len(specs) - 1), "deepcache_block")

    def reset(self) -> None:
        self.calls, self.cached = 0, None
