"""The layout is the architecture: stages import one way, with no import circles.

Every import counts, including those placed inside functions and the lazy
re-exports of package ``__init__`` files (``_EXPORTS``). See ARCHITECTURE.md.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import types
from pathlib import Path

import pytest

import featcache

PKG = Path(featcache.__file__).parent

# Lowest first: a module may import its own stage and the stages before it, never one after.
STAGES = [
    ("utilities", ("featcache._version", "featcache.errors", "featcache.threads", "featcache.files")),
    ("cache", ("featcache.cache",)),
    ("embedding", ("featcache.embedding",)),
    ("heads", ("featcache.heads",)),
    ("report", ("featcache.report",)),
    ("evaluate", ("featcache.evaluate",)),
    ("model", ("featcache.model",)),
    ("cluster", ("featcache.cluster",)),
    ("cli", ("featcache.cli",)),
    ("public face", ("featcache",)),
]


def modules() -> dict:
    """Dotted name -> source file of every module of the package."""
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def stage_of(name: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(STAGES):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    assert best is not None, f"{name} belongs to no stage: add it to STAGES and ARCHITECTURE.md"
    return best[0]


def _resolve(name: str, mods: dict) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports(mods: dict) -> dict:
    """Module -> set of featcache modules it imports (anywhere in its body)."""
    edges = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                # ``from pkg import mod`` imports mod (pkg's __init__ runs for any sub-module)
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [base, *subs]
            else:
                continue
            for t in targets:
                if t.startswith("featcache") and t in mods:
                    found.add(t)
                elif t.startswith("featcache"):
                    found.add(_resolve(t, mods))
        lazy = (getattr(importlib.import_module(name), "_EXPORTS", None)
                if path.name == "__init__.py" else None)
        for target in (lazy or {}).values():
            found.add(_resolve(target if target.startswith("featcache") else f"{name}.{target}", mods))
        found.discard(name)
        found.discard(None)
        edges[name] = found
    return edges


def cycles(edges: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert cycles(imports(modules())) == []


def test_no_import_runs_back_up_a_stage():
    back = [f"{a} ({STAGES[stage_of(a)][0]}) imports {b} ({STAGES[stage_of(b)][0]})"
            for a, targets in imports(modules()).items() for b in sorted(targets)
            if stage_of(b) > stage_of(a)]
    assert back == []


def test_the_checks_can_fail():
    """A planted circle and a planted back-import are found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert stage_of("featcache.cache.read") < stage_of("featcache.embedding.run")


def test_few_modules_at_the_top():
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= 6, top


def _public(module) -> list:
    return [(module.__name__, n) for n in getattr(module, "__all__", [])]


@pytest.mark.parametrize("package", ["featcache", "featcache.cache", "featcache.evaluate",
                                     "featcache.model", "featcache.heads", "featcache.embedding",
                                     "featcache.report", "featcache.cluster"])
def test_a_public_name_never_resolves_to_a_module(package):
    # every sub-module imported first: importing one binds its name on its package
    for m in pkgutil.walk_packages(featcache.__path__, "featcache."):
        importlib.import_module(m.name)
    pkg = importlib.import_module(package)
    wrong = [f"{mod}.{n}" for mod, n in _public(pkg)
             if isinstance(getattr(pkg, n), types.ModuleType)]
    assert wrong == []


def test_named_public_functions_are_functions():
    from featcache.model import train
    assert inspect.isfunction(train)
    assert inspect.isfunction(featcache.audit) and inspect.isfunction(featcache.embed)
    importlib.import_module("featcache.cache._merge")
    assert inspect.isfunction(importlib.import_module("featcache.cache").merge)
