"""The shape the package holds to (issue 21): small modules and functions, no import cycle
(function-level imports included), no private name imported from another module.

Read from the source with `ast`, nothing imported: fast, and a failure lists every offender.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGE = "importer"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


@cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its `__init__`)."""
    found: dict[str, Path] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


@cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(), filename=str(modules()[name]))


def is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def absolute(module: str | None, level: int, importer: str) -> str:
    """The dotted name a (possibly relative) `from ... import` names."""
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package(importer) else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports(name: str) -> Iterator[tuple[int, str, str | None]]:
    """(line, module imported, name imported from it or None) for every import statement in
    the module, wherever it is: top level, in a function, under `if TYPE_CHECKING`."""
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            source = absolute(node.module, node.level, name)
            for alias in node.names:
                yield node.lineno, source, alias.name


def internal_edges(name: str) -> Iterator[tuple[int, str]]:
    """(line, importer module it depends on): `from importer.x import y` is importer.x.y
    when y is a submodule, else importer.x."""
    known = modules()
    for line, source, imported in imports(name):
        if imported is not None and f"{source}.{imported}" in known:
            yield line, f"{source}.{imported}"
        elif source in known:
            yield line, source


def where(name: str, line: int | None = None) -> str:
    path = modules()[name].relative_to(ROOT)
    return f"{path}:{line}" if line is not None else str(path)


def test_no_module_is_over_400_lines() -> None:
    long = {
        name: len(path.read_text().splitlines())
        for name, path in modules().items()
        if len(path.read_text().splitlines()) > MAX_MODULE_LINES
    }
    if long:
        pytest.fail(
            f"modules over {MAX_MODULE_LINES} lines:\n"
            + "\n".join(
                f"  {where(name)}: {lines} lines"
                for name, lines in sorted(long.items(), key=lambda kv: -kv[1])
            ),
            pytrace=False,
        )


@pytest.mark.slow  # about half a second or more: not in make test-fast
def test_no_function_is_over_60_lines() -> None:
    long: list[tuple[int, str]] = []
    for name in modules():
        for node in ast.walk(tree(name)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append((lines, f"{where(name, node.lineno)} {node.name}"))
    if long:
        pytest.fail(
            f"functions over {MAX_FUNCTION_LINES} lines (def to last line):\n"
            + "\n".join(f"  {label}: {lines} lines" for lines, label in sorted(long, reverse=True)),
            pytrace=False,
        )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a self-import), each
    sorted: Tarjan's algorithm, iterative so a deep graph cannot overflow the stack."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_among_importer_modules() -> None:
    """A package's `__init__` importing its own submodules is how a package re-exports; only
    an edge back from a submodule into its package (or anywhere else) can close a cycle."""
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    lines: dict[tuple[str, str], int] = {}
    for name in modules():
        for line, target in internal_edges(name):
            if target != name:
                graph[name].add(target)
                lines.setdefault((name, target), line)
    found = cycles(graph)
    report = []
    for component in found:
        members = set(component)
        edges = [
            f"    {where(source, lines[(source, target)])} imports {target}"
            for source in component
            for target in sorted(graph[source] & members)
        ]
        report.append(f"  cycle among {', '.join(component)}:\n" + "\n".join(edges))
    if found:
        pytest.fail(
            "import cycles (deferred imports included):\n" + "\n".join(report),
            pytrace=False,
        )


def test_no_private_name_is_imported_from_another_module() -> None:
    offenders = [
        f"  {where(name, line)}: from {source} import {imported}"
        for name in modules()
        for line, source, imported in imports(name)
        if imported is not None
        and imported.startswith("_")
        and not imported.startswith("__")
        and source.split(".")[0] == PACKAGE
        and source != name
    ]
    if offenders:
        pytest.fail(
            "private names imported from another module:\n" + "\n".join(offenders),
            pytrace=False,
        )
