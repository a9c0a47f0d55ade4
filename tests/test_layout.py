"""The package's shape: imports only point down the layers, no module imports itself back, the app stays thin."""

from __future__ import annotations

import ast

from tests.helpers import REPO

#: kdcore's layers, lowest first: a module may import its own layer and the ones below, never one above.
LAYERS = {"errors": 0, "paths": 0, "data": 1, "models": 2, "explain": 3, "engine": 4, "distill": 5, "rank": 5,
          "service": 6, "reproduce": 6, "cli": 7,
          "__main__": 8}
UI = ("gradio", "kdcore_app", "bench", "scripts")


def _imports() -> dict[str, set[str]]:
    """Module name -> the modules it imports at run time (``if TYPE_CHECKING:`` blocks left out)."""
    out = {}
    for package in ("kdcore", "kdcore_app"):
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            tree = ast.parse(path.read_text())
            typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                           and ast.unparse(node.test).endswith("TYPE_CHECKING") for n in ast.walk(node)}
            found = set()
            for node in ast.walk(tree):
                if id(node) in typing_only:
                    continue
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module)
                elif isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
            out[name] = found
    return out


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[1]] if module.count(".") else 0


def test_kdcore_imports_point_down_and_never_at_the_ui():
    bad = []
    for module, imports in _imports().items():
        if not module.startswith("kdcore."):
            continue
        for imp in imports:
            if imp.split(".")[0] in UI:
                if not (module == "kdcore.cli" and imp == "kdcore_app.space"):  # the CLI's `space` command
                    bad.append(f"{module} -> {imp}")
            elif imp.startswith("kdcore.") and _layer(imp) > _layer(module):
                bad.append(f"{module} -> {imp}")
    assert not bad, bad


def test_no_import_cycles():
    imports = _imports()
    graph = {m: {i for i in imp if i in imports and i != m and not i.startswith(m + ".")} for m, imp in imports.items()}
    cycles, seen = [], set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in seen:
                seen.add(nxt)
                walk(nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    assert not cycles, cycles[:5]


def test_app_entry_point_and_ui_modules_are_small():
    assert len((REPO / "app.py").read_text().splitlines()) < 40
    for path in (REPO / "kdcore_app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{path.name}:{node.name} is {length} lines"


def test_product_files_speak_only_of_the_product():
    import re

    pattern = re.compile(r"session [0-9]|lent (for|to|an?)|device tool|64 MiB|/work/|issue [0-9]", re.I)
    skip = {".git", "tests", "__pycache__", ".ruff_cache", "build", "runs"}
    hits = []
    for path in REPO.rglob("*"):
        if path.is_file() and not skip & set(path.relative_to(REPO).parts) and path.suffix in (
                ".py", ".md", ".json", ".txt", ".toml", ".html", ""):
            text = path.read_text(errors="ignore")
            hits += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in pattern.finditer(text)]
    assert not hits, hits[:10]
