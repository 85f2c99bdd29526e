"""Blocks found by structure and run order (not by list names), and refusals that leave nothing hooked."""

from __future__ import annotations

import pytest
import torch

import accel
from accel import AccelError, CGTaylorConfig

pytestmark = pytest.mark.usefixtures("one_thread")



class Blk(torch.nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(d, 2, batch_first=True)
        self.mod = torch.nn.Linear(1, d)

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = hidden_states + self.attn(hidden_states, hidden_states, hidden_states, need_weights=False)[0]
        return h * (1 + 0.1 * torch.tanh(self.mod(temb)))[:, None]


class TwoStream(torch.nn.Module):
    """Lists with names no registry knows; the forward runs the list defined (and mentioned) last first."""

    def __init__(self, run_only_first: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj_in = torch.nn.Linear(4, 8)
        self.double_stream_blocks = torch.nn.ModuleList([Blk(), Blk()])
        self.single_stream_blocks = torch.nn.ModuleList([Blk(), Blk()])
        self.proj_out = torch.nn.Linear(8, 4)
        self.run_only_first = run_only_first

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        temb = timestep.float().reshape(-1, 1) / 1000
        h = self.proj_in(hidden_states)
        lists = {"d": self.double_stream_blocks, "s": self.single_stream_blocks}
        blocks = [b for key in ("s", "d") for b in lists[key]]
        for b in blocks[:1] if self.run_only_first else blocks:
            h = b(h, temb)
        return self.proj_out(h)


def _loop(model: torch.nn.Module, steps: int = 6) -> list[torch.Tensor]:
    x = torch.randn(1, 5, 4, generator=torch.Generator().manual_seed(0))
    outs = []
    with torch.no_grad():
        for k in range(steps):
            t = torch.tensor([1000.0 * (1 - k / steps)])
            ys = [model(x, t), model(x + 0.5, t)]  # two calls per step (cond, uncond), no cache context
            outs += ys
            x = x - 0.1 * (ys[0] + 0.5 * (ys[0] - ys[1]))
    return outs


def test_blocks_found_by_structure_in_run_order() -> None:
    model = TwoStream().eval()
    ref = _loop(model)
    with accel.cached(model, CGTaylorConfig(threshold=0.0)):
        assert all(torch.equal(a, b) for a, b in zip(_loop(model), ref))
        ctrl = model._diffusers_hook.get_hook("accel_cg_taylor")
        names = [s.name for s in ctrl.blocks]
    assert names == ["single_stream_blocks.0", "single_stream_blocks.1", "double_stream_blocks.0", "double_stream_blocks.1"]
    with accel.cached(model, CGTaylorConfig(threshold=1e3, warmup_steps=1)):
        out = _loop(model)
        st = accel.stats(model)
    assert set(st.steps) == {"default", "default/1"} and all(f > 0 for f in st.fractions().values())
    assert all(torch.isfinite(o).all() for o in out) and not all(torch.equal(a, b) for a, b in zip(out, ref))
    assert all(torch.equal(a, b) for a, b in zip(_loop(model), ref))
    assert not any("_diffusers_hook" in m.__dict__ or "forward" in m.__dict__ for m in model.modules())


def _snapshot(model: torch.nn.Module) -> dict[str, tuple[bool, bool, bool]]:
    return {n: ("_diffusers_hook" in m.__dict__, "forward" in m.__dict__, "_accel_pristine" in m.__dict__) for n, m in model.named_modules()}


def test_refused_at_first_call_leaves_nothing_hooked() -> None:
    """Only one block runs: the first call says so in one line and removes every hook."""
    model = TwoStream(run_only_first=True).eval()
    before = _snapshot(model)
    accel.enable(model, CGTaylorConfig(threshold=1e3))
    with pytest.raises(AccelError, match=r"cannot cache TwoStream: only 1 of its blocks ran .*disabled"):
        _loop(model, steps=1)
    assert not accel.is_enabled(model) and _snapshot(model) == before


@pytest.mark.parametrize("make, match", [
    (lambda: torch.nn.Linear(4, 4), r"cannot cache Linear: no ModuleList of transformer blocks .* Pass the denoiser"),
    (lambda: torch.nn.ModuleList([Blk()]), r"cannot cache ModuleList"),
])
def test_refused_enable_says_why_and_hooks_nothing(make, match) -> None:
    model = make()
    before = _snapshot(model)
    with pytest.raises(AccelError, match=match) as err:
        accel.enable(model)
    assert "\n" not in str(err.value)
    assert _snapshot(model) == before and not accel.is_enabled(model)


def test_refused_when_another_cache_is_enabled() -> None:
    model = TwoStream().eval()
    model.is_cache_enabled = True  # what diffusers' CacheMixin reports when one of its caches is on
    before = _snapshot(model)
    with pytest.raises(AccelError, match="another diffusers cache is enabled on TwoStream"):
        accel.enable(model)
    assert _snapshot(model) == before


def test_compiled_module_is_unwrapped() -> None:
    model = TwoStream().eval()
    compiled = torch.compile(model, backend="eager")
    accel.enable(compiled, CGTaylorConfig(threshold=0.0))
    assert accel.is_enabled(model) and accel.is_enabled(compiled)
    assert accel.disable(compiled) and not accel.is_enabled(model)


def _internal_imports(package_dir) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (anywhere in the file, deferred imports too)."""
    import ast

    mods = {p.stem: p for p in package_dir.glob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level == 1):
                continue
            if node.module:  # from .hooks import X
                targets = {node.module.split(".")[0]}
            else:  # from . import hooks, or from . import enable (a name of the package)
                targets = {a.name if a.name in mods else "__init__" for a in node.names}
            graph[name] |= targets & set(mods)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    def walk(node: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            found = walk(nxt, path + [nxt])
            if found:
                return found
        return None

    return next((c for m in sorted(graph) if (c := walk(m, [m]))), None)


def test_caching_modules_import_no_circle():
    """The caching controller is split by concern (api -> hooks -> trajectory -> state), with no import circle."""
    from pathlib import Path

    import accel.caching

    graph = _internal_imports(Path(accel.caching.__file__).parent)
    assert "api" not in graph["hooks"] and "hooks" not in graph["trajectory"]
    assert _cycle(graph) is None, _cycle(graph)
