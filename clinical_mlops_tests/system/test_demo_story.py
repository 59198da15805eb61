"""The demo's bias story at the default settings, for seeds 1, 7 and 42: a reduced graph.

The demo's own extracts (``cli.demo.prepare_extracts``: 30,000 encounters, bias 1, cut into three
training extracts) go through the step functions the assets call — land, validate, features, split,
candidate, fairness audit, root cause — and the candidate must fail the blocking recall gate for
AfricanAmerican as a real ``fail`` (the whole interval below the bound), not insufficient evidence,
and the root cause must name the injected mechanism (prior visits recorded lower for the group).
The defaults include the pseudonymisation key (the development key), which fixes the patient split: on
other splits the gap's interval can straddle the bound (one in twelve tried), which the gate then reports
as insufficient evidence, not a pass.
"""

from __future__ import annotations

import contextlib

import pytest

from clinical_mlops.cli import demo
from clinical_mlops.core import warehouse
from clinical_mlops.fairness import steps as fairness_steps
from clinical_mlops.features import steps as feature_steps
from clinical_mlops.features.cohort import load_cohort
from clinical_mlops.governance.policy import load_policy
from clinical_mlops.ingestion import deid, steps as ingestion_steps
from clinical_mlops.training import steps as training_steps
from clinical_mlops.validation import steps as validation_steps
from clinical_mlops_tests.conftest import synthetic_source  # noqa: E402

pytestmark = pytest.mark.e2e

SYNTHETIC_SOURCE = synthetic_source()

COHORT = "synthetic_diabetes130_readmission_30d"


@pytest.mark.parametrize("seed", [1, 7, 42])
def test_injected_bias_fails_the_recall_gate_at_the_default_size(workspace, seed, monkeypatch):
    # the demo's defaults include its pseudonymisation key (the development key), which fixes the patient split
    monkeypatch.delenv("CLINICAL_MLOPS_PSEUDONYM_KEY", raising=False)
    extracts = demo.prepare_extracts(None, seed, 30_000, 4, workspace.landing, bias=1.0, shift=1.0)
    assert len(extracts.training) == 3 and len(extracts.later) == 3  # clean, shifted, recording gap
    spec, policy = load_cohort(COHORT), load_policy()
    key, _ = deid.pseudonym_key_from_env()
    with contextlib.closing(warehouse.connect(workspace.warehouse)) as con:
        for path in extracts.training:
            landed = ingestion_steps.land(con, path, SYNTHETIC_SOURCE)
            validation_steps.validate(con, SYNTHETIC_SOURCE, landed.extract_id, pseudonym_key=key)
        feature_steps.build_features(con, spec)
        training_steps.split(con, spec)
        training_steps.train_candidate(con, spec, tracking_uri=workspace.tracking_uri,
                                       artifact_root=workspace.artifacts)
        step = fairness_steps.audit_candidate(con, spec, policy=policy, n_bootstrap=None,
                                              reports_dir=workspace.root / "reports", run_id=None)
        cause = fairness_steps.analyse_root_cause(con, spec, policy=policy, tracking_uri=workspace.tracking_uri,
                                                  artifact_root=workspace.artifacts,
                                                  reports_dir=workspace.root / "reports")
    verdicts = step.audit.verdicts
    row = verdicts[(verdicts["rule"] == "recall_gap") & (verdicts["slice"] == "race")
                   & (verdicts["group"] == "AfricanAmerican")].iloc[0]
    bound = policy.fairness.metric("recall_gap").bound
    assert row["verdict"] == "fail", (seed, row["estimate"], row["lower"], row["upper"])
    assert row["upper"] < -bound
    assert step.audit.outcome("recall_gap").status == "fail"
    # root cause names the injected mechanism: prior visits recorded lower for the group
    conclusion = next(c.conclusion for c in cause.causes if c.slice == "race" and c.group == "AfricanAmerican")
    assert any(f"{feature} recorded lower for the group" in conclusion
               for feature in ("prior_visits_total", "number_inpatient", "number_emergency", "number_outpatient",
                               "prior_encounters_seen")), conclusion
