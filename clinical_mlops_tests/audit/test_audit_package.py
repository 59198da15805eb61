"""The audit package's public face: lazy, curated, and without import cycles hidden in functions."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import clinical_mlops.audit as audit

PACKAGE = Path(audit.__file__).parent


def test_importing_the_package_loads_none_of_its_modules():
    code = ("import sys, clinical_mlops.audit as a; "
            "print(sorted(m for m in sys.modules if m.startswith('clinical_mlops.audit.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_listed_module_and_name_exists():
    assert sorted(audit.__all__) == sorted(
        p.stem if p.suffix == ".py" else p.name
        for p in PACKAGE.iterdir()
        if not p.name.startswith("_") and (p.suffix == ".py" or (p / "__init__.py").exists()))
    for name in audit.__all__:
        module = importlib.import_module(f"clinical_mlops.audit.{name}")
        assert module.__all__, name
        for public in module.__all__:
            assert hasattr(module, public), f"{name}.{public}"


def test_no_module_imports_the_audit_package_inside_a_function():
    """A function-level import of a sibling is how a cycle hides (model_card <-> replay was one)."""
    hidden = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("clinical_mlops.audit"):
                        hidden.append(f"{path.relative_to(PACKAGE)}:{inner.lineno}")
    assert hidden == []


def test_no_private_name_of_another_module_is_used():
    used = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        modules = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                   and (n.module or "").startswith("clinical_mlops") for a in n.names}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in modules):
                used.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value.id}.{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clinical_mlops"):
                package = ".".join(path.relative_to(PACKAGE.parent.parent).with_suffix("").parts[:-1])
                for alias in node.names:
                    foreign = not (node.module or "").startswith(package)
                    if alias.name.startswith("_") or (foreign and "._" in (node.module or "")):
                        used.append(f"{path.relative_to(PACKAGE)}:{node.lineno} from {node.module} import {alias.name}")
    assert used == []
