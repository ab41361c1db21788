"""The dependency rule of docs/architecture.md, enforced.

The contracts are written once, in pyproject.toml's ``[tool.importlinter]``; this test runs
them with import-linter on the package's import graph less its test modules (tests may reach
across layers: a data test drives the CLI). It also proves the check can fail, on a planted
upward import and a planted cycle, and keeps function-level imports of the package's own
modules to the documented lazy ones.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import grimp
import pytest
import tomllib
from importlinter.configuration import configure
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
from importlinter.contracts.layers import LayersContract

PACKAGE = Path(__file__).resolve().parent
CONTRACT_TYPES = {"layers": LayersContract, "acyclic_siblings": AcyclicSiblingsContract}


def _is_test_module(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return leaf.endswith("_test") or leaf == "conftest"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    g = grimp.build_graph("imageclf", cache_dir=None)
    for module in [m for m in g.modules if _is_test_module(m)]:
        g.remove_module(module)
    return g


def _contracts() -> list:
    configure()  # import-linter's settings (its timer), as its own command line sets them
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["importlinter"]
    session = {"root_packages": [config["root_package"]]}
    return [CONTRACT_TYPES[c["type"]](name=c["name"], session_options=session, contract_options=dict(c))
            for c in config["contracts"]]


def _broken(graph: grimp.ImportGraph) -> dict[str, list[str]]:
    """Contract name -> the offending imports ("importer -> imported"), for each broken contract."""
    out = {}
    for contract in _contracts():
        check = contract.check(copy.deepcopy(graph), verbose=False)
        if not check.kept:
            out[contract.name] = _offences(check.metadata)
    return out


def _offences(metadata: dict) -> list[str]:
    found = []
    for dependency in metadata.get("invalid_dependencies", []):  # layers
        for route in dependency["routes"]:
            found += [f"{link['importer']} -> {link['imported']} (line {link['line_numbers'][0]})"
                      for link in route["chain"]]
    for breakers in metadata.get("cycle_breakers_by_package", {}).values():  # acyclic_siblings
        found += [f"{importer} -> {imported} (in a cycle)" for importer, imported in sorted(breakers)]
    return sorted(set(found))


def test_the_package_keeps_every_contract(graph):
    assert _broken(graph) == {}


def test_an_upward_import_is_caught(graph):
    planted = copy.deepcopy(graph)
    planted.add_import(importer="imageclf.data.images", imported="imageclf.training.loop")
    broken = _broken(planted)
    assert any(name.startswith("layers") for name in broken), broken


def test_a_cycle_inside_a_layer_is_caught(graph):
    planted = copy.deepcopy(graph)
    planted.add_import(importer="imageclf.core.errors", imported="imageclf.core.io")  # io imports errors
    broken = _broken(planted)
    assert list(broken) == ["no import cycles between sibling modules or packages"], broken


def _comment_above(lines: list[str], lineno: int) -> str:
    """The line above the block of import lines that holds line ``lineno`` (1-based)."""
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith(("import ", "from ")):
        i -= 1
    return lines[i].strip() if i >= 0 else ""


def _function_level_own_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of each import of an imageclf module inside a function, unless the comment
    above it (or above the block of imports it is part of) documents it as lazy."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for sub in ast.walk(node):
            modules = ([sub.module or ""] if isinstance(sub, ast.ImportFrom) and sub.level == 0
                       else [a.name for a in sub.names] if isinstance(sub, ast.Import) else [])
            for module in modules:
                above = _comment_above(lines, sub.lineno)
                documented = above.startswith("#") and "lazy" in above.lower()
                if (module == "imageclf" or module.startswith("imageclf.")) and not documented:
                    found.append((sub.lineno, module))
    return found


def test_no_undocumented_function_level_import_of_the_package():
    offenders = {str(p.relative_to(PACKAGE)): hits for p in sorted(PACKAGE.rglob("*.py"))
                 if not _is_test_module(p.stem) and (hits := _function_level_own_imports(p))}
    assert offenders == {}


def test_one_lazy_comment_documents_the_block_of_imports_below_it(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "def documented():\n"
        "    # lazy: torch loads only when the command runs\n"
        "    from imageclf.api import load\n"
        "    from imageclf.training.loop import fit\n"
        "\n"
        "def undocumented():\n"
        "    x = 1\n"
        "    from imageclf.api import load\n"
        "\n"
        "def broken_block():\n"
        "    # lazy: only the first block\n"
        "    import json\n"
        "    y = 2\n"
        "    import imageclf.api\n")
    assert _function_level_own_imports(module) == [(8, "imageclf.api"), (14, "imageclf.api")]
