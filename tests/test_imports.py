"""No import circles in the package: not between files, nor between its folders (subpackages).

The package is what ``pyproject.toml`` installs: ``accel/`` and the root folders mapped into it
(``[tool.setuptools.package-dir]``: ``samplers/`` is ``accel.samplers`` and so on). Every import statement
counts, at module level or inside a function, so a lazy import does not hide a circle. A package's
``__init__`` importing its own submodules (its public surface) is not a circle of ownership.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_files(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` file the package installs (mapped folders included)."""
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    files: dict[str, Path] = {}
    for package, folder in sorted(mapping.items(), key=lambda kv: kv[0].count(".")):
        for path in (root / folder).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join([package, *parts])] = path  # deeper mappings (accel.samplers) override accel's walk
    return files


def _is_init(files: dict[str, Path], name: str) -> bool:
    return files[name].name == "__init__.py"


def imports_of(name: str, files: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports (every statement, relative ones resolved)."""
    package = name if _is_init(files, name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(files[name].read_text(), str(files[name]))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: package.count(".") + 2 - node.level]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in files:  # an attribute of a module: the module itself
                target = target.rpartition(".")[0]
            if not target or target == name or name.startswith(target + "."):
                continue  # itself, or its own package's __init__
            found.add(target)
    return found


def strong_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one member: the circles of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, without a package's ``__init__`` re-exporting its own submodules."""
    graph = {}
    for name in files:
        targets = imports_of(name, files)
        if _is_init(files, name):
            targets = {t for t in targets if not t.startswith(name + ".")}
        graph[name] = targets
    return graph


def folder_graph(graph: dict[str, set[str]], top: str = "accel") -> dict[str, set[str]]:
    """The same graph between the package's direct members (``accel.caching``, ``accel.samplers``, ``accel.sampling``):
    an edge where some file of one imports some file of the other. The top package itself is left out."""
    def folder(m: str) -> str | None:
        parts = m.split(".")
        return ".".join(parts[:2]) if len(parts) >= 2 and parts[0] == top else None

    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        fa = folder(a)
        if fa is None:
            continue
        out.setdefault(fa, set())
        out[fa] |= {fb for b in targets if (fb := folder(b)) is not None and fb != fa}
    return out


def test_the_walk_covers_the_mapped_folders():
    files = package_files()
    for name in ("accel.samplers", "accel.adjoint", "accel.invertible", "accel.kernels", "accel.cli", "accel.caching.api"):
        assert name in files, name
    assert files["accel.adjoint"] == ROOT / "adjoint" / "__init__.py"
    assert "accel.samplers" in imports_of("accel.adjoint._api", files)


def test_no_import_circle_between_files():
    circles = strong_components(import_graph(package_files()))
    assert not circles, "import circles between files:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_no_import_circle_between_folders():
    graph = import_graph(package_files())
    circles = strong_components(folder_graph(graph))
    why = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets for circle in circles
                 if any(m.startswith(a) for a in circle) and any(t.startswith(b) for b in circle) and m.split(".")[:2] != t.split(".")[:2])
    assert not circles, f"import circles between folders: {circles}; for example:\n" + "\n".join(why)


def test_the_checker_finds_circles(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.setuptools.package-dir]\n"accel" = "accel"\n"accel.extra" = "extra"\n')
    for rel, text in {"accel/__init__.py": "from .a import f\n", "accel/a.py": "def f():\n    from accel.extra.h import g\n",
                      "accel/b/__init__.py": "", "accel/b/c.py": "from ..a import f\n", "extra/__init__.py": "from .h import g\n",
                      "extra/h.py": "from accel.b.c import f as g\n"}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    files = package_files(tmp_path)
    assert set(files) == {"accel", "accel.a", "accel.b", "accel.b.c", "accel.extra", "accel.extra.h"}
    graph = import_graph(files)
    assert strong_components(graph) == [["accel.a", "accel.b.c", "accel.extra.h"]]  # lazy imports count
    assert strong_components(folder_graph(graph)) == [["accel.a", "accel.b", "accel.extra"]]
