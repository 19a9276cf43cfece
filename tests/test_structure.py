"""The package's shape: stages over kernels, no import cycles, short functions."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, version
from pathlib import Path

import bigquant

PACKAGE = Path(bigquant.__file__).parent


def modules() -> dict[str, ast.Module]:
    """Every module of bigquant by dotted name, parsed."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), filename=str(path))
    return out


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """bigquant modules that ``name`` imports anywhere, function bodies included."""
    package = name if name in ("bigquant", "bigquant.kernels") else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known and m != name}


def test_no_import_cycles_counting_function_level_imports():
    trees = modules()
    graph = {name: imports(name, tree, set(trees)) - {"bigquant"} for name, tree in trees.items()}
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != "open", " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    # The kernels import no stage, and no dask.
    for name, tree in trees.items():
        if name.startswith("bigquant.kernels."):
            allowed = {m for m in trees if m.startswith("bigquant.kernels")}
            assert graph[name] <= allowed | {"bigquant.defaults", "bigquant.errors"}, name
            assert "dask" not in top_level_imports(tree), name


def top_level_imports(tree: ast.Module) -> set[str]:
    """First names of the absolute imports anywhere in a module: ``numpy``, ``dask``, ..."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_no_function_body_over_60_lines():
    long = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) else node.body
                lines = body[-1].end_lineno - body[0].lineno + 1 if body else 0
                if lines > 60:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long


def declared(requirements: list[str]) -> set[str]:
    """Normalised distribution names of requirement strings ("dask[array]>=2024.8" -> "dask")."""
    return {re.sub(r"[-_.]+", "-", re.match(r"[\w.-]+", r)[0]).lower() for r in requirements}


def test_every_imported_library_is_declared():
    """What the package imports is in ``dependencies``; what its tests import, there or in
    the ``test`` extra. CI installs into a new venv, where a missing line fails a test
    somewhere; this names the line."""
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    runtime = declared(project["dependencies"])
    for_tests = runtime | declared(project["optional-dependencies"]["test"])
    owners = packages_distributions()
    tests = PACKAGE.parent / "tests"
    local = {"bigquant"} | {p.stem for p in tests.glob("*.py")}
    needed = [(runtime, tree) for tree in modules().values()]
    needed += [(for_tests, ast.parse(p.read_text())) for p in sorted(tests.glob("*.py"))]
    missing = set()
    for allowed, tree in needed:
        for name in top_level_imports(tree) - local - set(sys.stdlib_module_names):
            dists = declared(owners.get(name, [name]))
            if not dists & allowed:
                missing.add(f"{name} ({', '.join(sorted(dists))})")
    assert not missing


def test_every_public_name_loads_from_the_package():
    """The stub ``__init__.pyi`` that IDEs read is what ``bigquant`` serves, lazily."""
    for name in bigquant.__all__:
        assert getattr(bigquant, name).__name__ == name
    assert bigquant.__version__ == version("bigquant")


def test_the_api_reference_lists_every_public_name():
    reference = (PACKAGE.parent / "docs" / "api" / "index.rst").read_text()
    listed = set(re.findall(r"^   (\w+)$", reference, re.MULTILINE))
    assert listed == set(bigquant.__all__)


def test_every_setting_is_a_compress_parameter_and_a_command_option():
    # One source for a run's parameters: each field of Settings is a keyword of `compress`
    # with the same default, is passed on by `compress_many`, and is an option of the command.
    import dataclasses
    import inspect

    from bigquant.cli import compress as command
    from bigquant.settings import Settings

    fields = {f.name: f.default for f in dataclasses.fields(Settings)}
    signature = inspect.signature(bigquant.compress).parameters
    assert {name: signature[name].default for name in fields} == fields
    many = inspect.signature(bigquant.compress_many).parameters
    assert "settings" in many and many["settings"].kind is inspect.Parameter.VAR_KEYWORD
    options = {p.name for p in command.params}
    assert set(fields) <= options
    # The resume identity names every field, under the key the store records.
    assert len(Settings.identity_names()) == len(fields) + 2


def test_a_store_records_every_field_of_the_image_it_shares():
    # SourceInfo takes each field of the same name from the Image: none is copied by hand.
    import dataclasses

    from bigquant.read import Image
    from bigquant.store import SourceInfo

    image_fields = {f.name for f in dataclasses.fields(Image)}
    source_fields = {f.name for f in dataclasses.fields(SourceInfo)}
    assert source_fields - image_fields == {"shape", "dtype"}
