"""Replay: rebuild a registered model from its recorded inputs and prove it is the same model.

For ``model_name`` version N, :func:`replay`

1. reads what was recorded at training time (``ml.model_versions``: algorithm and
   hyperparameters, input extracts with sha256, cohort spec hash, split id-set hashes, git
   commit, lock hash; the MLflow run's package versions when the registry is reachable);
2. checks the inputs still are what was recorded: each extract's sha256 in ``raw.extracts``,
   the cohort spec's hash;
3. rebuilds the cohort's feature rows from the validated rows of *only those extracts*, with the
   same feature SQL, and re-assigns the seeded patient split — so later extracts do not leak
   in (:mod:`clinical_mlops.audit.recorded_inputs`) — then checks the train and test patient
   id-set hashes against the recorded ones;
4. refits the pipeline with the recorded hyperparameters (``clinical_mlops.training.modelling``),
   re-derives the operating threshold, scores the recorded evaluation (test) set and compares
   the scores bit for bit with ``ml.predictions``;
5. compares the refitted model's canonical parameters (a sha256 per fitted array: coefficients,
   scaler statistics, encoder categories, every tree's node table) with the registered
   artifact's, and scores the test set with the registered artifact too.

The report says "identical" only if every comparison holds; otherwise it lists what differs,
and why when the cause is visible (a changed extract, a changed spec, a different package
version, commit or lock file than the recorded one).

Everything happens in temporary DuckDB tables, so a read-only connection is enough.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import numpy as np

from clinical_mlops.audit import lineage
from clinical_mlops.audit.recorded_inputs import RecordedInputs, rebuild_recorded_inputs
from clinical_mlops.evaluation import metrics as evaluation
from clinical_mlops.training import modelling
from clinical_mlops.core import provenance
from clinical_mlops.features.cohort import CohortSpec, CohortSpecError, load_cohort

__all__ = [
    "RecordedInputs",
    "ReplayCheck",
    "ReplayReport",
    "canonical_parameters",
    "rebuild_recorded_inputs",
    "replay",
]

# ---------------------------------------------------------------------------------------------
# canonical parameters of a fitted pipeline
# ---------------------------------------------------------------------------------------------


def _encode(value: Any) -> bytes | None:
    """Deterministic bytes of a fitted value; None for objects that are walked instead."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return b"object" + repr(value.tolist()).encode()
        array = np.ascontiguousarray(value)
        return f"{array.dtype.str}{array.shape}".encode() + array.tobytes()
    if isinstance(value, (list, tuple)):
        parts = [_encode(v) for v in value]
        if any(p is None for p in parts):
            return None
        return b"[" + b",".join(parts) + b"]"  # type: ignore[arg-type]
    if isinstance(value, dict):
        parts = [(_encode(k), _encode(v)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))]
        if any(k is None or v is None for k, v in parts):
            return None
        return b"{" + b",".join(k + b":" + v for k, v in parts) + b"}"  # type: ignore[operator]
    if value is None or isinstance(value, (str, bool, int, float, np.generic)):
        return repr(value.item() if isinstance(value, np.generic) else value).encode()
    return None


def _estimators(obj: Any, prefix: str):
    yield prefix, obj
    steps = getattr(obj, "steps", None)
    if isinstance(steps, list):
        for name, step in steps:
            yield from _estimators(step, f"{prefix}.{name}")
    transformers = getattr(obj, "transformers_", None)
    if isinstance(transformers, list):
        for name, transformer, _columns in transformers:
            if hasattr(transformer, "get_params"):
                yield from _estimators(transformer, f"{prefix}.{name}")


def canonical_parameters(model: Any) -> dict[str, str]:
    """sha256 of every fitted attribute (``name_``) of every estimator, plus boosted trees."""
    digests: dict[str, str] = {}
    for prefix, estimator in _estimators(model, "model"):
        for attribute in sorted(vars(estimator)):
            if not attribute.endswith("_") or attribute.startswith("_"):
                continue
            encoded = _encode(getattr(estimator, attribute))
            if encoded is not None:
                digests[f"{prefix}.{attribute}"] = hashlib.sha256(encoded).hexdigest()
        predictors = getattr(estimator, "_predictors", None)
        if predictors:
            digest = hashlib.sha256()
            for iteration in predictors:
                for tree in iteration:
                    digest.update(np.ascontiguousarray(tree.nodes).tobytes())
                    digest.update(np.ascontiguousarray(tree.binned_left_cat_bitsets).tobytes())
                    digest.update(np.ascontiguousarray(tree.raw_left_cat_bitsets).tobytes())
            digests[f"{prefix}.trees"] = digest.hexdigest()
            baseline = getattr(estimator, "_baseline_prediction", None)
            if baseline is not None:
                digests[f"{prefix}.baseline_prediction"] = hashlib.sha256(_encode(np.asarray(baseline)) or b"").hexdigest()
            mapper = getattr(estimator, "_bin_mapper", None)
            if mapper is not None:
                digests[f"{prefix}.bin_thresholds"] = hashlib.sha256(_encode(list(mapper.bin_thresholds_)) or b"").hexdigest()
    return digests


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayCheck:
    name: str
    ok: bool | None
    """True / False, or None when the comparison could not be made (e.g. no registry)."""
    detail: str


@dataclass
class ReplayReport:
    model_name: str
    model_version: str
    identical: bool
    checks: list[ReplayCheck] = field(default_factory=list)
    predictions_compared: int = 0
    predictions_differing: int = 0
    max_abs_difference: float | None = None
    parameters_sha256: str | None = None
    environment: list[dict[str, str]] = field(default_factory=list)
    explanation: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [asdict(c) for c in self.checks]
        return data

    def to_markdown(self) -> str:
        verdict = "IDENTICAL" if self.identical else "DIFFERS"
        lines = [
            f"# Replay of {self.model_name} v{self.model_version}: {verdict}",
            "",
            self.explanation,
            "",
            "| check | result | detail |",
            "|---|---|---|",
        ]
        for check in self.checks:
            mark = {True: "ok", False: "DIFFERS", None: "not checked"}[check.ok]
            lines.append(f"| {check.name} | {mark} | {check.detail.replace('|', '/')} |")
        if self.environment:
            lines += ["", "| package | recorded | now |", "|---|---|---|"]
            lines += [f"| {e['package']} | {e['recorded']} | {e['current']} |" for e in self.environment]
        return "\n".join(lines) + "\n"


def _recorded_run(tracking_uri: str | None, artifact_root, run_id: str) -> dict[str, Any] | None:
    if tracking_uri is None:
        return None
    try:
        run = lineage.mlflow_client(tracking_uri, artifact_root).get_run(run_id)
        return {"tags": dict(run.data.tags), "params": dict(run.data.params)}
    except Exception:  # noqa: BLE001 - the registry is optional for a replay
        return None


def _environment_differences(recorded_tags: dict[str, str] | None, row: lineage.ModelLineage) -> list[dict[str, str]]:
    differences: list[dict[str, str]] = []
    if recorded_tags:
        for package, version in provenance.package_versions().items():
            before = recorded_tags.get(f"version.{package}")
            if before is not None and before != version:
                differences.append({"package": package, "recorded": before, "current": version})
    commit = provenance.git_commit()
    if row.git_commit != commit:
        differences.append({"package": "git commit", "recorded": row.git_commit, "current": commit})
    lock = provenance.lock_file_sha256()
    if row.lock_sha256 != lock:
        differences.append({"package": "uv.lock sha256", "recorded": row.lock_sha256, "current": lock})
    return differences


def _build_pipeline(spec: CohortSpec, params: dict[str, Any]):
    params = dict(params)
    algorithm = params.pop("algorithm", None)
    if algorithm == "logistic_regression":
        return modelling.build_logistic_regression(spec, modelling.LogisticRegressionParams(**params))
    if algorithm == "hist_gradient_boosting":
        return modelling.build_gradient_boosting(spec, modelling.GradientBoostingParams(**params))
    raise ValueError(f"algorithm '{algorithm}' has no replay recipe")


def replay(
    con: duckdb.DuckDBPyConnection,
    model_name: str,
    version: str | int,
    *,
    tracking_uri: str | None = None,
    artifact_root=None,
) -> ReplayReport:
    """Rebuild ``model_name`` version ``version`` and compare it with the recorded one."""
    recorded = lineage.model_lineage(con, model_name, version)
    report = ReplayReport(recorded.model_name, recorded.model_version, identical=False)
    checks = report.checks
    run = _recorded_run(tracking_uri, artifact_root, recorded.mlflow_run_id)
    report.environment = _environment_differences(run["tags"] if run else None, recorded)

    # inputs as recorded
    changed = [e.extract_id for e in recorded.extracts if not e.unchanged]
    checks.append(ReplayCheck(
        "input_extracts", not changed,
        f"{len(recorded.extracts)} extracts, sha256 as recorded" if not changed
        else f"changed or missing since training: {', '.join(changed)}",
    ))
    try:
        spec = load_cohort(recorded.cohort)
    except CohortSpecError as exc:
        checks.append(ReplayCheck("cohort_spec", False, str(exc)))
        report.explanation = "The cohort specification is gone; the model cannot be rebuilt."
        return report
    spec_same = spec.spec_hash == recorded.cohort_spec_sha256
    checks.append(ReplayCheck("cohort_spec", spec_same, "spec sha256 as recorded" if spec_same else
                              f"spec changed since training (recorded {recorded.cohort_spec_sha256[:12]}, "
                              f"now {spec.spec_hash[:12]})"))

    inputs = rebuild_recorded_inputs(con, spec, [e.extract_id for e in recorded.extracts])
    for side in ("train", "test"):
        same = getattr(inputs, f"{side}_ids_sha256") == getattr(recorded, f"{side}_ids_sha256")
        rows = len(getattr(inputs, side))
        expected_rows = getattr(recorded, f"{side}_rows")
        checks.append(ReplayCheck(
            f"{side}_ids", same and rows == expected_rows,
            f"{rows} rows, patient id-set sha256 as recorded" if same and rows == expected_rows
            else f"{rows} rows (recorded {expected_rows}); id-set sha256 "
                 f"{'matches' if same else 'differs'}",
        ))

    # refit with the recorded hyperparameters
    try:
        pipeline = _build_pipeline(spec, recorded.params)
    except (TypeError, ValueError) as exc:
        checks.append(ReplayCheck("refit", False, str(exc)))
        report.explanation = "The recorded configuration cannot be rebuilt with this code."
        return report
    fitted = modelling.fit(pipeline, inputs.train, spec)
    train_scores = modelling.predict_risk(fitted, inputs.train, spec)
    threshold = evaluation.operating_threshold(
        inputs.train["label"].to_numpy(), train_scores, strategy=spec.threshold_strategy, value=spec.threshold_value
    )
    checks.append(ReplayCheck(
        "operating_threshold", float(threshold) == recorded.operating_threshold,
        f"{float(threshold)!r} (recorded {recorded.operating_threshold!r})",
    ))
    scores = modelling.predict_risk(fitted, inputs.test, spec)

    stored = con.execute(
        """SELECT encounter_id, score FROM ml.predictions
           WHERE model_name = ? AND model_version = ? AND split = 'test' ORDER BY encounter_id""",
        [recorded.model_name, recorded.model_version],
    ).df()
    same_set = len(stored) == len(inputs.test) and np.array_equal(
        stored["encounter_id"].to_numpy(), inputs.test["encounter_id"].to_numpy()
    )
    checks.append(ReplayCheck(
        "evaluation_set", same_set,
        f"{len(stored)} recorded test predictions, same encounters" if same_set
        else f"{len(stored)} recorded vs {len(inputs.test)} rebuilt test rows; the encounter sets differ",
    ))
    if same_set:
        recorded_scores = stored["score"].to_numpy()
        differing = int(np.count_nonzero(recorded_scores != scores))
        report.predictions_compared = len(scores)
        report.predictions_differing = differing
        report.max_abs_difference = float(np.max(np.abs(recorded_scores - scores))) if len(scores) else 0.0
        checks.append(ReplayCheck(
            "predictions", differing == 0,
            f"all {len(scores)} test scores bit-identical" if differing == 0
            else f"{differing} of {len(scores)} scores differ (max |diff| {report.max_abs_difference:.3g})",
        ))
    else:
        checks.append(ReplayCheck("predictions", False, "not comparable: the evaluation set differs"))

    replayed = canonical_parameters(fitted)
    report.parameters_sha256 = hashlib.sha256(json.dumps(replayed, sort_keys=True).encode()).hexdigest()
    registered = None
    if tracking_uri is not None:
        try:
            from clinical_mlops.core import tracking

            registered = tracking.load_model(f"models:/{recorded.model_name}/{recorded.model_version}")
        except Exception as exc:  # noqa: BLE001 - report, do not crash
            checks.append(ReplayCheck("canonical_parameters", None, f"registered model not loadable: {type(exc).__name__}"))
    if registered is not None:
        theirs = canonical_parameters(registered)
        differing_params = sorted(k for k in set(replayed) | set(theirs) if replayed.get(k) != theirs.get(k))
        checks.append(ReplayCheck(
            "canonical_parameters", not differing_params,
            f"{len(replayed)} fitted parameter arrays identical to the registered artifact" if not differing_params
            else f"differ from the registered artifact: {', '.join(differing_params[:8])}",
        ))
        artifact_scores = modelling.predict_risk(registered, inputs.test, spec)
        artifact_same = same_set and np.array_equal(artifact_scores, stored["score"].to_numpy())
        checks.append(ReplayCheck(
            "registered_artifact", artifact_same,
            "the registered artifact reproduces the recorded test scores" if artifact_same
            else "the registered artifact's scores differ from the recorded ones",
        ))
    elif tracking_uri is None:
        checks.append(ReplayCheck("canonical_parameters", None, "no registry given: compared predictions only"))

    failed = [c for c in checks if c.ok is False]
    report.identical = not failed
    if report.identical:
        note = ""
        if report.environment:
            note = (" The environment differs from the recorded one ("
                    + ", ".join(f"{e['package']} {e['recorded']} → {e['current']}" for e in report.environment)
                    + ") without changing the result.")
        report.explanation = (
            f"Rebuilt from {len(recorded.extracts)} recorded extracts with the recorded hyperparameters: "
            f"identical predictions on the {report.predictions_compared} recorded evaluation rows"
            + (" and identical canonical parameters." if registered is not None else ".") + note
        )
    else:
        causes = []
        if changed:
            causes.append("input extracts changed since training")
        if not spec_same:
            causes.append("the cohort specification changed since training")
        if report.environment:
            causes.append("the environment differs from the recorded one: " + ", ".join(
                f"{e['package']} {e['recorded']} → {e['current']}" for e in report.environment))
        if not causes:
            causes.append("inputs and environment match the record, so the code path differs (see failed checks)")
        report.explanation = "Not identical: " + ", ".join(c.name for c in failed) + ". Likely cause: " + "; ".join(causes) + "."
    return report
