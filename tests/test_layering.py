"""The import order of DESIGN.md's "Layout", read from the source with ``ast``.

Imports run one way: camera → kernels → inference → station → appliance_api /
platform; training sits beside, reading inference (to check an exported model the
way the station runs it) and the station's store (to export datasets from the
line). The runtime never imports torch, torchvision or Ultralytics. And no two
modules import each other, directly or round a longer loop, even where one side
defers its import into a function (a deferred import hides a cycle from
``import`` at start-up, not from the design).

Every ``import``, ``from ... import`` (module level, in functions, under
``if TYPE_CHECKING``) and ``importlib.import_module("...")`` with a literal name
counts. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module,
else to ``pkg``. Importing ``pkg.mod`` also runs ``pkg/__init__.py``; that implicit
edge is left out (every package's ``__init__`` re-exports its own modules, which
would make each package one big loop); an explicit ``from pkg import X`` is an
edge to ``pkg`` and so follows what that ``__init__`` imports.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: folder -> import name, as [tool.setuptools.package-dir] in pyproject.toml maps them
FOLDERS = ("camera", "kernels", "inference", "station", "appliance_api", "platform", "training")
ROOT = "kanjian"
HEAVY = ("torch", "torchvision", "ultralytics")

#: Who may import across layers (a layer is ``kanjian.<folder>``; every module may import
#: its own layer): (importing module prefix, imported layer, imported module prefixes).
#: The first rule whose prefix and layer match an edge decides it; no rule, no edge.
#: The camera hands on ``Frame`` and the kernels arrays, and neither knows the other:
#: inference reads both (``Frame`` is what it judges, the kernels make its input). Of
#: the appliance's faces only the CLI mounts the training and platform commands.
#: Training reads the station's store and its record types, nothing that runs a station.
RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("kanjian.inference", "camera", ("kanjian.camera",)),
    ("kanjian.inference", "kernels", ("kanjian.kernels",)),
    *(("kanjian.station", lay, (f"kanjian.{lay}",)) for lay in ("camera", "kernels", "inference")),
    ("kanjian.appliance_api.cli", "training", ("kanjian.training",)),
    ("kanjian.appliance_api.cli", "platform", ("kanjian.platform",)),
    *(
        ("kanjian.appliance_api", lay, (f"kanjian.{lay}",))
        for lay in ("camera", "kernels", "inference", "station")
    ),
    # the fleet page is a web face like the station's: it reuses the station's Host and
    # failed-login guards and its p-chart formula (and serves its page files, read as
    # package data), nothing that runs a station
    (
        "kanjian.platform.web",
        "appliance_api",
        ("kanjian.appliance_api.http.guard", "kanjian.appliance_api.http.trends"),
    ),
    ("kanjian.platform", "inference", ("kanjian.inference",)),
    ("kanjian.platform", "station", ("kanjian.station",)),
    *(("kanjian.training", lay, (f"kanjian.{lay}",)) for lay in ("camera", "kernels", "inference")),
    (
        "kanjian.training",
        "station",
        (
            "kanjian.station.store",
            "kanjian.station.schema",
            "kanjian.station.records",
        ),
    ),
)


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@dataclass(frozen=True)
class Edge:
    """``src`` imports ``dst`` at ``path:line`` (``deferred``: inside a function)."""

    src: str
    dst: str
    path: str
    line: int
    deferred: bool
    type_only: bool

    def __str__(self) -> str:
        how = " (type-only)" if self.type_only else " (deferred)" if self.deferred else ""
        return f"{self.src} -> {self.dst}  [{self.path}:{self.line}]{how}"


def module_files() -> dict[str, Path]:
    """Every module of the seven folders: ``kanjian.<folder>.<...>`` -> its file."""
    out: dict[str, Path] = {}
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join((ROOT, folder, *parts))] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_import_module(node: ast.AST) -> bool:
    """``importlib.import_module("literal")`` or a bare ``import_module("literal")``."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func, arg = node.func, node.args[0]
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module"
    )
    return named and isinstance(arg, ast.Constant) and isinstance(arg.value, str)


def _imports(tree: ast.Module) -> list[tuple[ast.AST, bool, bool]]:
    """Each import node with (deferred: inside a function, type_only: under TYPE_CHECKING)."""
    found: list[tuple[ast.AST, bool, bool]] = []

    def visit(node: ast.AST, deferred: bool, type_only: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom) or _is_import_module(node):
            found.append((node, deferred, type_only))
        inner = deferred or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, inner, True)
            for child in node.orelse:
                visit(child, inner, type_only)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, inner, type_only)

    visit(tree, False, False)
    return found


def _targets(node: ast.AST, module: str, is_pkg: bool, known: set[str]) -> list[str]:
    """The modules ``node`` imports (absolute dotted names, any distribution's)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.Call):
        arg = node.args[0]
        assert isinstance(arg, ast.Constant)
        return [str(arg.value)]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        package = module if is_pkg else module.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            package = package.rsplit(".", 1)[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in known else base)
    return out


def _resolve(name: str, known: set[str]) -> str | None:
    """``name`` or its nearest parent that is one of our modules; None if not ours."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def import_edges() -> tuple[list[Edge], list[Edge]]:
    """(edges between our modules, imports of torch/torchvision/Ultralytics)."""
    files = module_files()
    known = set(files)
    edges: list[Edge] = []
    heavy: list[Edge] = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        rel = str(path.relative_to(REPO))
        for node, deferred, type_only in _imports(tree):
            line = getattr(node, "lineno", 0)
            for target in _targets(node, module, path.name == "__init__.py", known):
                if target.split(".")[0] in HEAVY:
                    heavy.append(Edge(module, target, rel, line, deferred, type_only))
                    continue
                dst = _resolve(target, known)
                if dst is not None and dst != module:
                    edges.append(Edge(module, dst, rel, line, deferred, type_only))
    # one edge per import statement, however many names it takes
    return list(dict.fromkeys(edges)), list(dict.fromkeys(heavy))


def layer(module: str) -> str:
    return module.split(".")[1]


def against_the_flow(edges: list[Edge]) -> list[Edge]:
    """Edges across layers that no rule of :data:`RULES` allows."""
    bad = []
    for e in edges:
        if layer(e.src) == layer(e.dst):
            continue
        rule = next(
            (dsts for src, lay, dsts in RULES if _under(e.src, src) and lay == layer(e.dst)),
            None,
        )
        if rule is None or not any(_under(e.dst, d) for d in rule):
            bad.append(e)
    return bad


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), sorted."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.src, set()).add(e.dst)
        graph.setdefault(e.dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        # iterative Tarjan: (node, iterator over its successors)
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, succ = work[-1]
            for nxt in succ:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        comp.append(top)
                        if top == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return sorted(out)


def _describe(comp: list[str], edges: list[Edge]) -> str:
    inside = set(comp)
    lines = [" <-> ".join(comp)]
    lines += [f"    {e}" for e in edges if e.src in inside and e.dst in inside]
    return "\n".join(lines)


def test_the_scan_sees_every_kind_of_import() -> None:
    """The reader itself: deferred, relative, TYPE_CHECKING and import_module forms."""
    src = (
        "from __future__ import annotations\n"
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "from kanjian.inference import verdict\n"
        "from . import files\n"
        "if TYPE_CHECKING:\n"
        "    from kanjian.station.store import ResultStore\n"
        "def f():\n"
        "    import torch\n"
        "    importlib.import_module('kanjian.kernels.threads')\n"
    )
    known = {
        "kanjian.inference",
        "kanjian.inference.verdict",
        "kanjian.camera",
        "kanjian.camera.files",
        "kanjian.station.store",
        "kanjian.kernels.threads",
    }
    got = [
        (t, d, tc)
        for n, d, tc in _imports(ast.parse(src))
        for t in _targets(n, "kanjian.camera.x", False, known)
    ]
    assert ("kanjian.inference.verdict", False, False) in got
    assert ("kanjian.camera.files", False, False) in got
    assert ("kanjian.station.store", False, True) in got
    assert ("torch", True, False) in got
    assert ("kanjian.kernels.threads", True, False) in got
    edges = [
        Edge("kanjian.camera.x", "kanjian.station.store", "x.py", 1, False, True),
        Edge("kanjian.a.b", "kanjian.a.c", "b.py", 1, False, False),
        Edge("kanjian.a.c", "kanjian.a.d", "c.py", 1, True, False),
        Edge("kanjian.a.d", "kanjian.a.b", "d.py", 1, False, False),
    ]
    assert [e.dst for e in against_the_flow(edges[:1])] == ["kanjian.station.store"]
    assert cycles(edges) == [["kanjian.a.b", "kanjian.a.c", "kanjian.a.d"]]


def test_every_folder_is_scanned() -> None:
    files = module_files()
    for folder in FOLDERS:
        assert any(m.startswith(f"{ROOT}.{folder}.") for m in files), folder
    assert "kanjian.station.pipeline" in files and "kanjian.platform.receiver" in files


def test_imports_follow_the_layers() -> None:
    edges, _ = import_edges()
    bad = against_the_flow(edges)
    assert not bad, "imports against the flow:\n" + "\n".join(str(e) for e in bad)


def test_the_runtime_never_imports_torch_or_ultralytics() -> None:
    _, heavy = import_edges()
    bad = [e for e in heavy if layer(e.src) != "training"]
    assert not bad, "torch/Ultralytics outside training:\n" + "\n".join(str(e) for e in bad)


def test_no_import_cycles() -> None:
    edges, _ = import_edges()
    found = cycles(edges)
    assert not found, f"{len(found)} import cycles:\n" + "\n".join(
        _describe(c, edges) for c in found
    )
