"""Each asset's work is a plain step (no Dagster), its defaults are defined once, and one policy
resource serves every asset."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

import clinical_mlops
from clinical_mlops.core.steps import StepError, escalation, report_path
from clinical_mlops.defs import resources
from clinical_mlops.defs.evaluation.assets import EvaluationConfig
from clinical_mlops.defs.failures import step_failures
from clinical_mlops.defs.training.assets import BaselineModelConfig, CandidateModelConfig
from clinical_mlops.defs.validation.assets import ValidationConfig
from clinical_mlops.evaluation.steps import EvaluationSettings
from clinical_mlops.governance.policy import POLICY_ENV, SHIPPED_POLICY_PATH, load_policy
from clinical_mlops.training import modelling
from clinical_mlops.validation import rules, steps as validation_steps

STEP_MODULES = sorted(m.name for m in pkgutil.walk_packages(clinical_mlops.__path__, "clinical_mlops.")
                      if m.name.endswith(".steps"))


def _imports(module: str) -> set[str]:
    tree = ast.parse(Path(importlib.import_module(module).__file__).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_every_domain_with_assets_has_steps_and_none_imports_dagster():
    domains = {p.name for p in Path(clinical_mlops.__file__).parent.joinpath("defs").iterdir()
               if (p / "assets.py").exists()}
    assert {f"clinical_mlops.{d}.steps" for d in domains} <= set(STEP_MODULES)
    for module in STEP_MODULES:
        assert not any(name == "dagster" or name.startswith("dagster.") for name in _imports(module)), module


def test_the_benchmark_calls_the_steps_not_the_domain_functions_behind_them():
    for module in ("clinical_mlops.bench.plain", "clinical_mlops.bench.scale"):
        source = Path(importlib.import_module(module).__file__).read_text()
        assert any(isinstance(node, ast.ImportFrom) and any(a.name == "steps" for a in node.names)
                   for node in ast.walk(ast.parse(source))), module
        for bypass in ("land_extract(", "validate_extract(", "train_and_register(", "evaluate_model(",
                       "audit_model(", "score_extract(", "drift.compare("):
            assert bypass not in source, (module, bypass)


def test_a_step_error_is_the_run_failure_with_its_description_metadata_and_retry_policy():
    with pytest.raises(dg.Failure) as raised, step_failures():
        raise StepError("extract refused", allow_retries=False, metadata={"extract_id": "a.csv"})
    assert raised.value.description == "extract refused" and raised.value.allow_retries is False
    assert raised.value.metadata["extract_id"].value == "a.csv"
    with pytest.raises(ValueError), step_failures():  # anything else propagates as it is
        raise ValueError("not a step error")


def test_report_path_creates_the_folder(tmp_path):
    target = report_path(tmp_path, "cohort", "drift", "x.html")
    assert target == tmp_path / "cohort" / "drift" / "x.html" and target.parent.is_dir()
    assert resources.ReportsResource(directory=str(tmp_path)).path("a", "b.md") == tmp_path / "a" / "b.md"


def test_escalation_names_the_policy_owners():
    policy = load_policy()
    rule = policy.escalation.for_severity("block_promotion")
    assert escalation(policy, "block_promotion") == {
        "severity": rule.severity, "notify": [policy.owners.contact(r) for r in rule.notify],
        "within_hours": rule.within_hours, "action": rule.action}


def test_dagster_configs_take_their_defaults_from_the_domain():
    assert BaselineModelConfig().params() == modelling.LogisticRegressionParams()
    assert CandidateModelConfig().params() == modelling.GradientBoostingParams()
    assert EvaluationConfig().settings() == EvaluationSettings()
    config = ValidationConfig()
    assert config.engine == rules.DEFAULT_ENGINE
    assert config.max_quarantine_fraction == validation_steps.DEFAULT_MAX_QUARANTINE_FRACTION


def test_one_policy_resource_loads_the_default_or_the_given_file(tmp_path, monkeypatch):
    default = load_policy(SHIPPED_POLICY_PATH)
    assert resources.PolicyResource().load().sha256 == default.sha256
    raw = yaml.safe_load(SHIPPED_POLICY_PATH.read_text())
    raw["version"] = f"{raw['version']}-test"
    other = tmp_path / "policy.yaml"
    other.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert resources.PolicyResource(path=str(other)).load().sha256 == load_policy(other).sha256 != default.sha256
    assert resources.PolicyResource().load(str(other)).sha256 == load_policy(other).sha256  # a config override
    monkeypatch.setenv(POLICY_ENV, str(other))
    assert resources.default_resources()["policy"].load().sha256 == load_policy(other).sha256
    # An unconfigured resource reads the variable when it loads, not when the module was imported.
    assert resources.PolicyResource().load().sha256 == load_policy(other).sha256
