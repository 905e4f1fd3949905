"""The import graph of src/srpkd is visible and one-way: no module-level import circle, and every import
left inside a function says why on its line or the line above (a real cycle, or a heavy dependency that
most commands never need). Static (ast only, nothing is imported), so it takes milliseconds."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "srpkd"


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def imported(name: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The srpkd modules an import statement in module ``name`` loads."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target not in known:
        return set()
    # ``from pkg import sub`` loads pkg.sub; ``from mod import name`` loads mod
    return {f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names}


def module_level_graph() -> dict[str, set[str]]:
    """What importing each module executes: its top-level imports (outside functions and classes, and outside
    ``if TYPE_CHECKING``), plus the packages of what it imports, which Python initialises first."""
    mods = modules()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in mods.items():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}  # already initialised
        deps: set[str] = set()
        stack = list(ast.parse(path.read_text()).body)
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                stack.extend(node.orelse)
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(name, is_package, node, known):
                    parts = target.split(".")
                    deps.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
                continue
            stack.extend(ast.iter_child_nodes(node))
        graph[name] = {d for d in deps if d in known and d != name and d not in own}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_graph_is_read():
    graph = module_level_graph()
    assert "srpkd.runtime" in graph["srpkd.export.onnx"] and "srpkd.export.onnx" in graph["srpkd.inference"]
    assert "srpkd.export" in graph["srpkd.metrics.latency"]  # importing export.onnx initialises the package first


def test_no_import_cycle():
    assert find_cycle(module_level_graph()) is None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_function_local_imports_say_why():
    unexplained = []
    for name, (path, _) in modules().items():
        relative = path.relative_to(PACKAGE).as_posix()
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    line, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
                    if "#" not in line and not above.startswith("#"):
                        unexplained.append(f"{relative}:{node.lineno}: {line.strip()}")
    assert not unexplained, "function-local imports without a reason:\n" + "\n".join(unexplained)
