"""Every package's public face: lazy, curated, complete; every module declares ``__all__``; small modules; no
import cycle."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import clinical_mlops

ROOT = Path(clinical_mlops.__file__).parent
DOMAINS = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name != "defs")


def _public_children(package: Path) -> list[str]:
    return sorted(p.stem if p.suffix == ".py" else p.name for p in package.iterdir()
                  if not p.name.startswith("_") and (p.suffix == ".py" or (p / "__init__.py").exists()))


def test_the_root_holds_only_the_entry_points():
    assert sorted(p.name for p in ROOT.glob("*.py")) == ["__init__.py", "definitions.py"]


def test_every_domain_has_its_defs_folder_or_is_a_library():
    wired = {p.name for p in (ROOT / "defs").iterdir() if (p / "__init__.py").exists()}
    assert wired - set(DOMAINS) == {"automation"}, "defs/<domain> wires clinical_mlops/<domain>"
    # entry points (bench, cli) and libraries the wired domains read (core; governance: the policy, a
    # resource; sources: the contracts, wired per source by defs/ingestion and defs/validation)
    assert set(DOMAINS) - wired == {"bench", "cli", "core", "governance", "sources"}


@pytest.mark.parametrize("domain", DOMAINS)
def test_each_package_lists_exactly_its_public_modules_and_each_declares_all(domain):
    package = importlib.import_module(f"clinical_mlops.{domain}")
    assert package.__doc__, domain
    assert sorted(package.__all__) == _public_children(ROOT / domain)
    for name in package.__all__:
        module = importlib.import_module(f"clinical_mlops.{domain}.{name}")
        if name == "__main__":
            continue
        assert getattr(module, "__all__", None), f"{domain}.{name} declares no __all__"
        missing = [public for public in module.__all__ if not hasattr(module, public)]
        assert not missing, f"{domain}.{name}: {missing}"


def _literal_all(path: Path) -> list[str] | None:
    """The module's top-level ``__all__`` as written (a list or tuple of strings), or None if it has none."""
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return list(ast.literal_eval(node.value))
    return None


def test_every_module_declares_an_all_whose_names_exist():
    checked, undeclared, missing = [], [], []
    for path in sorted(ROOT.rglob("*.py")):
        checked.append(path)
        names = _literal_all(path)
        if names is None:
            undeclared.append(str(path.relative_to(ROOT)))
            continue
        assert len(names) == len(set(names)), f"{path.relative_to(ROOT)}: __all__ repeats a name"
        if path.name == "__main__.py":  # importing it runs the command: its names are its top-level bindings
            tree = ast.parse(path.read_text())
            bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            bound |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree)
                      if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
            missing += [f"{path.relative_to(ROOT)}: {n}" for n in names if n not in bound]
            continue
        name = _module_name(path)
        module = importlib.import_module(name)
        for public in names:
            if hasattr(module, public):
                continue
            if path.name == "__init__.py" and importlib.util.find_spec(f"{name}.{public}") is not None:
                continue  # a package lists its modules without importing them
            missing.append(f"{name}: {public}")
    assert undeclared == [], "modules without __all__"
    assert missing == [], "names in __all__ that the module does not define"
    assert len(checked) > 50, "the walk found too few modules: the check would pass on nothing"
    assert sum(p.is_relative_to(ROOT / "defs") for p in checked) > 20, "the Dagster wiring was not checked"


def test_every_defs_package_lists_exactly_its_public_modules():
    packages = [p.parent for p in sorted((ROOT / "defs").rglob("__init__.py"))]
    assert len(packages) > 10
    for package in packages:
        module = importlib.import_module(_module_name(package / "__init__.py"))
        assert module.__doc__, package
        assert sorted(module.__all__) == _public_children(package), package.relative_to(ROOT)


def test_importing_a_package_loads_none_of_its_modules():
    code = ("import sys, importlib; "
            f"[importlib.import_module('clinical_mlops.' + d) for d in {DOMAINS!r}]; "
            "print(sorted(m for m in sys.modules if m.count('.') >= 2 and m.startswith('clinical_mlops.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_private_name_crosses_a_package_boundary():
    offenders = []
    for path in ROOT.rglob("*.py"):
        here = _module_name(path)
        package = here if path.name == "__init__.py" else here.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clinical_mlops"):
                segments = node.module.split(".")
                for i, segment in enumerate(segments):
                    owner = ".".join(segments[:i])
                    if segment.startswith("_") and not (package == owner or package.startswith(owner + ".")):
                        offenders.append(f"{here} imports {node.module}")
                for alias in node.names:
                    if alias.name.startswith("_") and not (package + ".").startswith(node.module + "."):
                        offenders.append(f"{here} imports {node.module}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    segments = alias.name.split(".")
                    for i, segment in enumerate(segments):
                        owner = ".".join(segments[:i])
                        if segment.startswith("_") and not (package == owner or package.startswith(owner + ".")):
                            offenders.append(f"{here} imports {alias.name}")
        offenders += _private_attributes(path, here, package)
    assert offenders == []


def _private_attributes(path: Path, here: str, package: str) -> list[str]:
    """``module._name`` where ``module`` is one of our modules imported under a name, from outside its package."""
    tree = ast.parse(path.read_text())
    modules = {_module_name(p) for p in ROOT.rglob("*.py")}
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clinical_mlops"):
            for alias in node.names:
                if f"{node.module}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in modules:
                    bound[alias.asname] = alias.name
    return [f"{here} uses {bound[node.value.id]}.{node.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
            and node.attr.startswith("_") and not node.attr.startswith("__")
            and not (package + ".").startswith(bound[node.value.id] + ".")]


def test_no_import_cycle_even_through_function_level_imports():
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}

    def target(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clinical_mlops"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    edges.add(target(full) if full in modules else target(node.module))
            elif isinstance(node, ast.Import):
                edges.update(target(a.name) for a in node.names if a.name.startswith("clinical_mlops"))
        graph[name] = {e for e in edges if e and e != name}

    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    sys.setrecursionlimit(10_000)
    for start in graph:
        if start not in state:
            visit(start, [start])
    assert cycles == []
