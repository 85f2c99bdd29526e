"""Find the blocks of a diffusers denoiser and how to read and fake their outputs.

Blocks are found by structure, not by name: every ModuleList child of the denoiser (or inside a ModuleDict
child) whose entries are transformer blocks (modules containing an attention module, not attention modules
themselves). Their order is first taken from the source
of the model's ``forward`` (where each list is first used) and then fixed by the first real call, which
records the order in which the blocks actually run (double- then single-stream, interleaved spatial and
temporal blocks). Lists named ``*refiner*`` (token refiners before the main blocks) or ``txt_*`` / ``text_*`` /
``context_*`` / ``caption_*`` (blocks on the text stream alone) always run and are not part of the cached
chain: the gate must see the noisy stream. A registry maps known block classes to
which output is the hidden states and which the encoder (text) states; unknown classes are read at run
time (the hidden output is shaped like the hidden input; each further output, text states or LTX-2's audio
stream, is matched to the input argument of its shape, which a skipped block passes through). U-Nets are handled as an ordered list ``down_blocks + [mid_block] + up_blocks``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import AccelError

# (hidden index, encoder index) of a block's tuple output; (None, None) for a block returning one tensor. Mechanism,
# not a list of families (those are in accel/coverage/families/): a block class missing here is read from its first
# call; pin one here when its outputs cannot be told apart by shape (e.g. text and image streams of equal length).
_BLOCK_OUTPUTS: dict[str, tuple[int | None, int | None]] = {
    "BasicTransformerBlock": (None, None),
    "SanaTransformerBlock": (None, None),
    "WanTransformerBlock": (None, None),
    "LTXVideoTransformerBlock": (None, None),
    "CogVideoXBlock": (0, 1),
    "CogView4TransformerBlock": (0, 1),
    "FluxTransformerBlock": (1, 0),
    "FluxSingleTransformerBlock": (1, 0),
    "JointTransformerBlock": (1, 0),
    "QwenImageTransformerBlock": (1, 0),
    "HunyuanVideoTransformerBlock": (0, 1),
    "HunyuanVideoSingleTransformerBlock": (0, 1),
    "MochiTransformerBlock": (0, 1),
    "AuraFlowJointTransformerBlock": (1, 0),
    "AuraFlowSingleTransformerBlock": (None, None),
    "LuminaNextDiTBlock": (None, None),
    "ChromaTransformerBlock": (1, 0),
    "ChromaSingleTransformerBlock": (None, None),
}

UNET_CLASSES = ("UNet2DConditionModel", "UNet2DModel", "UNet3DConditionModel", "UNetSpatioTemporalConditionModel")


@dataclass
class BlockSpec:
    """How one block's inputs and outputs look.

    kind: "transformer" (hidden [+ encoder] states in and out), "unet_down" (returns (hidden, residuals)),
    "unet_plain" (returns a hidden tensor), "unet_layer" (a resnet, attention or resampler inside a U-Net block:
    returns a tensor, or a 1-tuple as Transformer2DModel does with ``return_dict=False``).
    keep_shape: a skipped block returns a tensor of its last output's shape (zeros) where its input's shape
    differs, because a live consumer concatenates it (the layer split of ``accel.caching.unet``).
    """

    name: str
    module: torch.nn.Module
    kind: str
    hidden_index: int | None = None
    encoder_index: int | None = None
    tuple_len: int | None = None
    known: bool = True
    params: list[str] = field(default_factory=list)
    n_res: int | None = None  # residuals a U-Net down block returns (learned from a real call)
    streams: dict[int, str] | None = None  # output index -> input argument it updates (learned for unknown blocks)
    keep_shape: bool = False
    out_shape: tuple[int, ...] | None = None  # the hidden output's shape at the last full call (keep_shape, unet_layer)
    _zeros: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def arg(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The value of a forward argument given by name, positionally or by keyword."""
        if name in kwargs:
            return kwargs[name]
        if name in self.params:
            i = self.params.index(name)
            if i < len(args):
                return args[i]
        return None

    def hidden_in(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        h = self.arg("hidden_states", args, kwargs)
        return h if h is not None else args[0]

    def learn(self, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        """Read an unknown block's output layout from a real call: the hidden output matches the hidden input."""
        if self.kind != "transformer" or self.known:
            if self.keep_shape or self.kind == "unet_layer":
                self.out_shape = tuple(self.hidden_out(output).shape)
            if isinstance(output, tuple):
                self.tuple_len = len(output)
                if self.kind == "unet_down":
                    self.n_res = len(output[1])  # UNet1D's blocks return one residual whatever their resnets
                if self.encoder_index is not None and output[self.encoder_index] is None:
                    self.encoder_index = None  # e.g. SD3's last block (context_pre_only) returns (None, hidden)
            return
        if isinstance(output, torch.Tensor):
            self.hidden_index = None
        else:
            h = self.hidden_in(args, kwargs)
            shapes = [getattr(o, "shape", None) for o in output]
            if h.shape not in shapes:
                raise AccelError(f"cannot tell which output of block {self.name} ({type(self.module).__name__}) is the hidden states")
            self.hidden_index = shapes.index(h.shape)
            self.streams = self._match_streams(args, kwargs, output)
            enc = [i for i, n in self.streams.items() if n == "encoder_hidden_states"]
            self.encoder_index = enc[0] if enc else None
            self.tuple_len = len(output)
        self.known = True

    def _shaped(self, h: torch.Tensor) -> torch.Tensor:
        """``h`` if it has the shape of this block's output (the batch taken from ``h``), else zeros of that shape:
        what a skipped block whose output a live block concatenates must return (its value is never used)."""
        shape = (h.shape[0], *self.out_shape[1:])
        if tuple(h.shape) == shape:
            return h
        z = self._zeros
        if z is None or tuple(z.shape) != shape or z.dtype != h.dtype or z.device != h.device:
            z = self._zeros = torch.zeros(shape, dtype=h.dtype, device=h.device)
        return z

    def _match_streams(self, args: tuple[Any, ...], kwargs: dict[str, Any], output: tuple[Any, ...]) -> dict[int, str]:
        """Which input argument each further tensor output updates (text states, LTX-2's audio stream...): the
        first argument, in signature order, of the same shape; ``encoder_hidden_states`` when it matches."""
        h = self.hidden_in(args, kwargs)
        named = [(n, self.arg(n, args, kwargs)) for n in self.params]
        named = [(n, v) for n, v in named if isinstance(v, torch.Tensor) and v is not h]
        streams = {}
        for i, o in enumerate(output):
            if i == self.hidden_index or not isinstance(o, torch.Tensor):
                continue
            match = [n for n, v in named if v.shape == o.shape and n not in streams.values()]
            if match:
                streams[i] = "encoder_hidden_states" if "encoder_hidden_states" in match else match[0]
        return streams

    def hidden_out(self, output: Any) -> torch.Tensor:
        if self.kind == "unet_down":
            return output[0]
        if self.kind == "unet_layer" and not isinstance(output, (torch.Tensor, tuple)):
            return output.sample  # a Transformer2DModel called with return_dict=True
        if isinstance(output, torch.Tensor):
            return output
        return output[self.hidden_index if self.hidden_index is not None else 0]

    def passthrough(self, args: tuple[Any, ...], kwargs: dict[str, Any], hidden: torch.Tensor | None = None) -> Any:
        """What a skipped block returns: its inputs unchanged (``hidden`` replaces the hidden states if given)."""
        h = hidden if hidden is not None else self.hidden_in(args, kwargs)
        if hidden is None and self.out_shape is not None and (self.keep_shape or self.kind == "unet_layer"):
            h = self._shaped(h)
        if self.kind == "unet_layer":
            return (h,) if self.tuple_len else h
        if self.kind == "unet_down":
            n = self.n_res
            if n is None:  # not seen run yet: what a 2D/3D down block returns
                n = len(self.module.resnets) + (1 if getattr(self.module, "downsamplers", None) else 0)
            return h, tuple(h for _ in range(n))
        if self.kind == "unet_plain" or self.hidden_index is None or self.tuple_len is None:
            return h
        out: list[Any] = [None] * self.tuple_len
        out[self.hidden_index] = h
        streams = self.streams if self.streams is not None else (
            {self.encoder_index: "encoder_hidden_states"} if self.encoder_index is not None else {})
        for i, name in streams.items():
            out[i] = self.arg(name, args, kwargs)
        return tuple(out)


def _params(module: torch.nn.Module) -> list[str]:
    try:
        return list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return []


def _transformer_spec(name: str, block: torch.nn.Module) -> BlockSpec:
    cls = type(block).__name__
    known = cls in _BLOCK_OUTPUTS
    h, e = _BLOCK_OUTPUTS.get(cls, (None, None))
    return BlockSpec(name, block, "transformer", h, e, 2 if h is not None else None, known, _params(block))


def _is_attention(m: torch.nn.Module) -> bool:
    from diffusers.models.attention import AttentionModuleMixin

    name = type(m).__name__
    return isinstance(m, (AttentionModuleMixin, torch.nn.MultiheadAttention)) or "Attention" in name or "Attn" in name


# Lists of blocks that run on the text stream alone (token refiners, FLUX.3's text-mode blocks) are not part of
# the cached chain: the gate must see the noisy stream.
_TEXT_ONLY = ("refiner", "txt_", "text_", "context_", "caption_")


def _is_block_list(name: str, child: torch.nn.Module) -> bool:
    """A ModuleList of transformer blocks: non-empty, every entry a composite module that contains attention.

    An entry that is itself an attention module (ConsisID's face cross-attention, whose output is added to the
    stream as a residual) is a side branch, not a block of the chain."""
    if not isinstance(child, torch.nn.ModuleList) or len(child) == 0 or any(t in name for t in _TEXT_ONLY):
        return False
    return all(
        any(True for _ in b.children()) and not _is_attention(b) and any(_is_attention(m) for m in b.modules()) for b in child
    )


def _source_rank(model: torch.nn.Module, names: list[str]) -> dict[str, int]:
    """Where ``self.<name>`` is first used in the model's forward (definition order where it is not found)."""
    try:
        src = inspect.getsource(type(model).forward)
    except (OSError, TypeError):
        src = ""
    big = len(src) + 1
    return {n: (src.find(f"self.{n}") if f"self.{n}" in src else big + i) for i, n in enumerate(names)}


def block_lists(model: torch.nn.Module) -> list[str]:
    """Names of the denoiser's ModuleLists of transformer blocks, in the order its forward uses them."""
    children = [(n, c) for n, c in model.named_children()]
    children += [(f"{n}.{k}", v) for n, c in model.named_children() if isinstance(c, torch.nn.ModuleDict) for k, v in c.items()]
    names = [n for n, c in children if _is_block_list(n, c)]  # a ModuleDict's lists too (FLUX.3's per-mode blocks)
    rank = _source_rank(model, [n.split(".")[0] for n in names])
    rank = {n: rank[n.split(".")[0]] for n in names}
    return sorted(names, key=lambda n: rank[n])


def find_blocks(model: torch.nn.Module) -> list[BlockSpec]:
    """The denoiser's blocks in (provisional) execution order; raises AccelError for a model with no blocks."""
    model = unwrap(model)
    cls = type(model).__name__
    if cls in UNET_CLASSES or (hasattr(model, "down_blocks") and hasattr(model, "up_blocks")):
        specs = [BlockSpec(f"down_blocks.{i}", b, "unet_down", params=_params(b)) for i, b in enumerate(model.down_blocks)]
        if getattr(model, "mid_block", None) is not None:
            specs.append(BlockSpec("mid_block", model.mid_block, "unet_plain", params=_params(model.mid_block)))
        specs += [BlockSpec(f"up_blocks.{i}", b, "unet_plain", params=_params(b)) for i, b in enumerate(model.up_blocks)]
    else:
        specs = [_transformer_spec(f"{n}.{i}", b) for n in block_lists(model) for i, b in enumerate(model.get_submodule(n))]
    if len(specs) < 2:
        found = f"{len(specs)} block" if specs else "no ModuleList of transformer blocks (modules with attention)"
        raise AccelError(
            f"cannot cache {cls}: {found} among its children, and it is not a U-Net; CG-Taylor needs at least two blocks "
            f"run in sequence. Pass the denoiser (transformer / unet) itself; `accel coverage` lists every supported class"
        )
    return specs


def unwrap(model: Any) -> Any:
    """The module under torch.compile's OptimizedModule (``_orig_mod``) and anything diffusers' unwrap_module
    unwraps: hooks go on the real module, which the compiled wrapper calls."""
    from diffusers.utils.torch_utils import unwrap_module

    for _ in range(8):
        inner = unwrap_module(model) if isinstance(model, torch.nn.Module) else model
        inner = getattr(inner, "_orig_mod", inner)
        if inner is model:
            return model
        model = inner
    return model


def find_denoisers(obj: Any) -> list[torch.nn.Module]:
    """Every denoiser of a pipeline: the main one and a second one that takes over mid-trajectory
    (``transformer_2``: Wan 2.2's low-noise expert), or the module itself."""
    first = find_denoiser(obj)
    if isinstance(obj, torch.nn.Module):
        return [first]
    second = getattr(obj, "transformer_2", None)
    return [first, unwrap(second)] if isinstance(second, torch.nn.Module) and unwrap(second) is not first else [first]


def find_denoiser(obj: Any) -> torch.nn.Module:
    """The denoiser of a pipeline (``transformer``, ``unet`` or ``prior``), or the module itself."""
    if isinstance(obj, torch.nn.Module):
        return unwrap(obj)
    for attr in ("transformer", "unet", "prior"):
        m = getattr(obj, attr, None)
        if isinstance(m, torch.nn.Module):
            return unwrap(m)
    raise AccelError(f"{type(obj).__name__} has no transformer or unet to cache; pass a diffusers pipeline or the denoiser module")
