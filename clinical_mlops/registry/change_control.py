"""Change control: a challenger against the champion on the same held-out data, under the policy.

The FDA's predetermined change control plan pattern (REFERENCE.md §1), made checkable:

* **What changed.** The two registered versions are diffed — features and their types (from the
  MLflow signatures), algorithm and hyperparameters (``ml.model_versions.params_json``), training
  data versions (extract sha256s), cohort spec hash, code commit and lock file — and each
  difference is classified as a *modification kind*: ``retrain_on_new_data``, ``recalibration``,
  ``hyperparameter_change``, ``algorithm_change``, ``feature_set_change``,
  ``cohort_spec_change`` (target, exclusions, split or threshold policy may differ; the recorded
  hash cannot say which). The change is **inside the envelope** when every kind is in the
  policy's ``allowed_modifications``; anything else "requires new review" (unknown kinds too:
  the envelope fails closed).
* **Impact.** Both models score the *current* test split (patient-grouped, so neither saw those
  patients in training) — stored test predictions are reused when they cover it, otherwise the
  registered model is loaded and scored. Metric deltas (challenger − champion) get paired
  bootstrap CIs: each replicate resamples rows once and evaluates both models on the same
  resample, overall and per sensitive-attribute group (groups under the policy's minimum size
  get point estimates only: insufficient evidence).
* **Fairness.** Verdicts are read from ``monitoring.fairness_verdicts`` when the fairness report
  has run; otherwise the policy's blocking gap rules that can be computed from the same
  replicates (recall and FPR gaps to the reference group) are evaluated here, a gap failing only
  when its whole interval lies outside the bound. A *new* failure is one the challenger has and
  the champion has not.
* **Drift context.** The latest drift verdict of each extract, and whether the challenger was
  trained on the drifted data.

:func:`decide` turns a report into the promotion decision under the policy's acceptance
criteria (or its absolute criteria when there is no champion yet); :func:`render_markdown`
renders both for people; :func:`store_report` and :func:`record_decision` keep them in the
``audit`` schema with the policy hash. Everything is aggregate: metrics, counts, hashes.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from clinical_mlops.drift import statistics as drift_lib
from clinical_mlops.features.cohort import CohortSpec
from clinical_mlops.governance.policy import BLOCKING_SEVERITIES, Policy
from clinical_mlops.core.warehouse import table_exists, transaction

__all__ = [
    "ChangeControlReport",
    "Criterion",
    "Decision",
    "Envelope",
    "FairnessComparison",
    "Modification",
    "ModelDescription",
    "PairedResult",
    "build_report",
    "check_envelope",
    "compare_fairness",
    "classify_modifications",
    "decide",
    "describe_model",
    "drift_context",
    "ensure_tables",
    "latest_report",
    "paired_bootstrap",
    "record_decision",
    "render_markdown",
    "store_report",
]

NO_MODIFICATION = "no_modification"
PAIRED_METRICS: tuple[str, ...] = ("auroc", "auprc", "brier", "recall", "fpr", "alert_rate")
LOWER_IS_BETTER = frozenset({"brier", "fpr"})
CALIBRATION_PREFIXES = ("calibration", "calibrator")
NON_HYPERPARAMETERS = frozenset({"algorithm"})
_MAX_BLOCK_CELLS = 8_000_000  # replicates x rows per bootstrap block (64 MB of float64)


# ---------------------------------------------------------------------------------------------
# what changed
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDescription:
    """A registered version as change control sees it (from ml.model_versions and MLflow)."""

    name: str
    version: str
    run_id: str
    algorithm: str
    params: Mapping[str, object]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    input_extracts: tuple[tuple[str, str], ...]  # (extract_id, sha256)
    cohort_spec_sha256: str
    operating_threshold: float
    git_commit: str = "unknown"
    lock_sha256: str = "unknown"
    registered_at: str = ""
    train_rows: int = 0

    @property
    def features(self) -> dict[str, str]:
        return {**{c: "numeric" for c in self.numeric}, **{c: "categorical" for c in self.categorical}}

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def as_dict(self) -> dict:
        return {**self.__dict__, "params": dict(self.params), "input_extracts": [list(e) for e in self.input_extracts]}

    @classmethod
    def from_dict(cls, raw: Mapping) -> ModelDescription:
        return cls(**{**raw, "numeric": tuple(raw["numeric"]), "categorical": tuple(raw["categorical"]),
                      "input_extracts": tuple(tuple(e) for e in raw["input_extracts"])})


def describe_model(con: duckdb.DuckDBPyConnection, name: str, version: str,
                   signature: Callable[[str, str], tuple[tuple[str, ...], tuple[str, ...]]] | None = None
                   ) -> ModelDescription:
    """A registered version's description; features come from its MLflow signature."""
    cursor = con.execute("SELECT * FROM ml.model_versions WHERE model_name = ? AND model_version = ?",
                         [name, str(version)])
    row = cursor.fetchall()
    if not row:
        raise ValueError(f"{name} v{version} is not in ml.model_versions")
    record = dict(zip([d[0] for d in cursor.description], row[0]))
    if signature is None:
        from clinical_mlops.registry.aliases import model_signature_columns as signature
    numeric, categorical = signature(name, str(version))
    return ModelDescription(
        name=name,
        version=str(version),
        run_id=record["mlflow_run_id"],
        algorithm=record["algorithm"],
        params=json.loads(record["params_json"]),
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        input_extracts=tuple((e["extract_id"], e["sha256"]) for e in json.loads(record["input_extracts_json"])),
        cohort_spec_sha256=record["cohort_spec_sha256"],
        operating_threshold=float(record["operating_threshold"]),
        git_commit=record["git_commit"],
        lock_sha256=record["lock_sha256"],
        registered_at=str(record["registered_at"]),
        train_rows=int(record["train_rows"]),
    )


@dataclass(frozen=True)
class Modification:
    kind: str
    detail: str


def _is_calibration(key: str) -> bool:
    return key.startswith(CALIBRATION_PREFIXES)


def classify_modifications(champion: ModelDescription, challenger: ModelDescription) -> list[Modification]:
    """Every kind of modification between two versions ([no_modification] when nothing differs)."""
    mods: list[Modification] = []
    old, new = champion.features, challenger.features
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    retyped = sorted(c for c in set(old) & set(new) if old[c] != new[c])
    if added or removed or retyped:
        parts = [f"added {', '.join(added)}" if added else "", f"removed {', '.join(removed)}" if removed else "",
                 f"type changed {', '.join(retyped)}" if retyped else ""]
        mods.append(Modification("feature_set_change", "; ".join(p for p in parts if p)))
    old_algorithm = str(champion.params.get("algorithm", champion.algorithm))
    new_algorithm = str(challenger.params.get("algorithm", challenger.algorithm))
    if old_algorithm != new_algorithm:
        mods.append(Modification("algorithm_change", f"{old_algorithm} → {new_algorithm}"))
    else:  # hyperparameters are only comparable within one algorithm
        keys = sorted((set(champion.params) | set(challenger.params)) - NON_HYPERPARAMETERS)
        changed = [k for k in keys if champion.params.get(k) != challenger.params.get(k)]
        calibration = [k for k in changed if _is_calibration(k)]
        hyper = [k for k in changed if not _is_calibration(k)]
        if hyper:
            mods.append(Modification("hyperparameter_change", "; ".join(
                f"{k}: {champion.params.get(k, '—')} → {challenger.params.get(k, '—')}" for k in hyper)))
        if calibration:
            mods.append(Modification("recalibration", "; ".join(
                f"{k}: {champion.params.get(k, '—')} → {challenger.params.get(k, '—')}" for k in calibration)))
    if champion.cohort_spec_sha256 != challenger.cohort_spec_sha256:
        mods.append(Modification(
            "cohort_spec_change",
            f"cohort spec {champion.cohort_spec_sha256[:12]} → {challenger.cohort_spec_sha256[:12]}: target, "
            "exclusions, split or threshold policy may differ",
        ))
    old_data, new_data = dict(champion.input_extracts), dict(challenger.input_extracts)
    if old_data != new_data:
        added_x = sorted(set(new_data) - set(old_data))
        removed_x = sorted(set(old_data) - set(new_data))
        changed_x = sorted(e for e in set(old_data) & set(new_data) if old_data[e] != new_data[e])
        parts = [f"added extracts {', '.join(added_x)}" if added_x else "",
                 f"removed extracts {', '.join(removed_x)}" if removed_x else "",
                 f"changed content {', '.join(changed_x)}" if changed_x else ""]
        mods.append(Modification("retrain_on_new_data", "; ".join(p for p in parts if p)))
    return mods or [Modification(NO_MODIFICATION, "same features, algorithm, hyperparameters, spec and data")]


@dataclass(frozen=True)
class Envelope:
    inside: bool
    kinds: tuple[str, ...]
    allowed: tuple[str, ...]
    requires_new_review: tuple[str, ...]
    not_covered: tuple[str, ...]

    def describe(self) -> str:
        if self.inside:
            return f"inside the allowed envelope ({', '.join(self.kinds)})"
        outside = [*self.requires_new_review, *(f"{k} (not covered by the policy)" for k in self.not_covered)]
        return f"requires new review: {', '.join(outside)}"


def check_envelope(modifications: Sequence[Modification], allowed: Sequence[str], review: Sequence[str]) -> Envelope:
    """Inside when every modification kind is allowed; unknown kinds fail closed."""
    kinds = tuple(dict.fromkeys(m.kind for m in modifications))
    ok = set(allowed) | {NO_MODIFICATION}
    needs_review = tuple(k for k in kinds if k in set(review))
    not_covered = tuple(k for k in kinds if k not in ok and k not in set(review))
    return Envelope(
        inside=not needs_review and not not_covered,
        kinds=kinds,
        allowed=tuple(k for k in kinds if k in ok),
        requires_new_review=needs_review,
        not_covered=not_covered,
    )


# ---------------------------------------------------------------------------------------------
# impact: paired bootstrap on the same held-out rows
# ---------------------------------------------------------------------------------------------


@dataclass
class _Sorted:
    order: np.ndarray
    starts: np.ndarray
    y: np.ndarray
    s: np.ndarray
    flagged: np.ndarray


def _prepare(y: np.ndarray, s: np.ndarray, threshold: float) -> _Sorted:
    order = np.argsort(s, kind="stable")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]]) if ss.size else np.zeros(0, dtype=np.int64)
    return _Sorted(order, starts, y, s, (s >= threshold).astype(np.float64))


def _weighted(w: np.ndarray, p: _Sorted) -> np.ndarray:
    """Metrics (PAIRED_METRICS order) for each row of count weights ``w`` (replicates x rows)."""
    y = p.y
    ws = w[:, p.order]
    ys = y[p.order]
    pos = np.add.reduceat(ws * ys, p.starts, axis=1)  # tie groups, ascending score
    neg = np.add.reduceat(ws * (1.0 - ys), p.starts, axis=1)
    p_tot, n_tot = pos.sum(axis=1), neg.sum(axis=1)
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        below = np.cumsum(neg, axis=1) - neg
        auroc = (pos * (below + 0.5 * neg)).sum(axis=1) / (p_tot * n_tot)
        pos_d, neg_d = pos[:, ::-1], neg[:, ::-1]
        cum_pos = np.cumsum(pos_d, axis=1)
        cum_all = cum_pos + np.cumsum(neg_d, axis=1)
        precision = np.divide(cum_pos, cum_all, out=np.zeros_like(cum_pos), where=cum_all > 0)
        auprc = (pos_d * precision).sum(axis=1) / p_tot
        brier = w @ ((p.s - y) ** 2) / total
        recall = w @ (y * p.flagged) / p_tot
        fpr = w @ ((1.0 - y) * p.flagged) / n_tot
        alert = w @ p.flagged / total
    out = np.vstack([auroc, auprc, brier, recall, fpr, alert]).T
    out[p_tot == 0, :2] = np.nan
    out[p_tot == 0, 3] = np.nan
    out[n_tot == 0, 0] = np.nan
    out[n_tot == 0, 4] = np.nan
    return out


@dataclass(frozen=True)
class PairedResult:
    """Point estimates and bootstrap replicates of both models' metrics, per subset."""

    table: pd.DataFrame
    replicates: dict[tuple[str, str], np.ndarray]  # (attribute, group) -> (n_boot, 2, n_metrics)


def paired_bootstrap(
    y: np.ndarray,
    scores: Sequence[np.ndarray],
    thresholds: Sequence[float],
    groups: Mapping[str, np.ndarray] | None = None,
    *,
    n_boot: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
    min_group_size: int = 100,
) -> PairedResult:
    """Metrics of one or two models on the same rows, with paired bootstrap CIs of the difference.

    ``scores``/``thresholds`` hold the champion first and the challenger second (or only the
    challenger). Each replicate draws multinomial row counts once (seeded) and evaluates every
    model on that same resample, overall and within each group; the delta's interval is the
    percentile interval of the per-replicate differences. Groups smaller than
    ``min_group_size`` get point estimates only. Table columns: attribute, group, n, n_positive,
    metric, champion, challenger, delta, lower, upper, challenger_lower, challenger_upper.
    """
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[0]
    if n == 0:
        raise ValueError("no rows to evaluate")
    models = [np.asarray(s, dtype=np.float64) for s in scores]
    if len(models) not in (1, 2) or len(thresholds) != len(models):
        raise ValueError("give one or two score arrays with one threshold each")
    subsets: list[tuple[str, str, np.ndarray]] = [("overall", "all", np.arange(n))]
    for attribute, values in (groups or {}).items():
        values = pd.Series(np.asarray(values, dtype=object)).fillna("missing").astype(str).to_numpy()
        for group in sorted(set(values)):
            subsets.append((attribute, group, np.flatnonzero(values == group)))
    prepared = [[_prepare(y[idx], m[idx], t) for m, t in zip(models, thresholds)] for _, _, idx in subsets]
    points = [np.stack([_weighted(np.ones((1, idx.size)), p)[0] for p in preps])
              for (_, _, idx), preps in zip(subsets, prepared)]
    boot = [n_boot > 0 and idx.size >= min_group_size for _, _, idx in subsets]
    reps = {k: np.empty((n_boot, len(models), len(PAIRED_METRICS))) for k, use in enumerate(boot) if use}
    rng = np.random.default_rng(seed)
    block = max(1, min(n_boot, _MAX_BLOCK_CELLS // max(n, 1)))
    done = 0
    while done < n_boot and reps:
        b = min(block, n_boot - done)
        w = np.empty((b, n))
        for i in range(b):
            w[i] = np.bincount(rng.integers(0, n, size=n), minlength=n)
        for k in reps:
            idx = subsets[k][2]
            sub = w[:, idx]
            for j, p in enumerate(prepared[k]):
                reps[k][done:done + b, j] = _weighted(sub, p)
        done += b
    alpha = (1.0 - confidence) / 2.0
    rows = []
    for k, (attribute, group, idx) in enumerate(subsets):
        est = points[k]
        n_pos = int(y[idx].sum())
        for m, metric in enumerate(PAIRED_METRICS):
            champion = float(est[0, m]) if len(models) == 2 else float("nan")
            challenger = float(est[-1, m])
            lo = hi = c_lo = c_hi = float("nan")
            if k in reps:
                with np.errstate(invalid="ignore"):
                    c = reps[k][:, -1, m]
                    if np.isfinite(c).any():
                        c_lo, c_hi = (float(v) for v in np.nanquantile(c, [alpha, 1 - alpha]))
                    if len(models) == 2:
                        d = reps[k][:, 1, m] - reps[k][:, 0, m]
                        if np.isfinite(d).any():
                            lo, hi = (float(v) for v in np.nanquantile(d, [alpha, 1 - alpha]))
            rows.append({
                "attribute": attribute, "group": group, "n": int(idx.size), "n_positive": n_pos, "metric": metric,
                "champion": champion, "challenger": challenger, "delta": challenger - champion,
                "lower": lo, "upper": hi, "challenger_lower": c_lo, "challenger_upper": c_hi,
            })
    replicates = {(subsets[k][0], subsets[k][1]): r for k, r in reps.items()}
    return PairedResult(pd.DataFrame(rows), replicates)


# ---------------------------------------------------------------------------------------------
# fairness verdicts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FairnessComparison:
    source: str  # fairness_verdicts | computed_gap_rules | not_assessed
    champion_failures: tuple[str, ...]
    challenger_failures: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def new_failures(self) -> tuple[str, ...]:
        return tuple(f for f in self.challenger_failures if f not in set(self.champion_failures))

    @property
    def resolved(self) -> tuple[str, ...]:
        return tuple(f for f in self.champion_failures if f not in set(self.challenger_failures))


def _first(columns: set[str], *candidates: str) -> str | None:
    return next((c for c in candidates if c in columns), None)


def _blocking_failures_from_table(con: duckdb.DuckDBPyConnection, policy: Policy, model: ModelDescription
                                  ) -> tuple[str, ...] | None:
    """Blocking-severity failures of one version in ``monitoring.fairness_verdicts`` (None: no verdicts)."""
    columns = {c for (c,) in con.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'monitoring' AND table_name = 'fairness_verdicts'").fetchall()}
    name_col = _first(columns, "model_name", "model")
    version_col = _first(columns, "model_version", "version")
    verdict_col = _first(columns, "verdict", "status", "passed")
    metric_col = _first(columns, "metric", "rule", "check_name")
    if not (name_col and version_col and verdict_col and metric_col):
        return None
    attribute_col = _first(columns, "attribute", "sensitive_attribute")
    severity_col = _first(columns, "severity")
    time_col = _first(columns, "evaluated_at", "computed_at", "created_at", "assessed_at")
    latest = (f"AND {time_col} = (SELECT max({time_col}) FROM monitoring.fairness_verdicts "
              f"WHERE {name_col} = ? AND CAST({version_col} AS VARCHAR) = ?)") if time_col else ""
    params = [model.name, model.version] * (2 if time_col else 1)
    selected = ", ".join(c for c in (metric_col, attribute_col, severity_col, verdict_col) if c)
    rows = con.execute(
        f"""SELECT {selected} FROM monitoring.fairness_verdicts
            WHERE {name_col} = ? AND CAST({version_col} AS VARCHAR) = ? {latest}""",
        params,
    ).fetchall()
    if not rows:
        return None
    severities = {rule.name: rule.severity for rule in policy.fairness.metrics}
    failures = set()
    for row in rows:
        values = dict(zip([c for c in (metric_col, attribute_col, severity_col, verdict_col) if c], row))
        verdict = values[verdict_col]
        failed = (verdict is False) if verdict_col == "passed" else str(verdict).lower() in ("fail", "failed", "failure")
        metric = str(values[metric_col]).removesuffix("_within_policy")
        severity = str(values.get(severity_col) or severities.get(metric, "block_promotion"))
        if failed and severity in BLOCKING_SEVERITIES:
            failures.add(f"{metric}:{values[attribute_col]}" if attribute_col else metric)
    return tuple(sorted(failures))


_GAP_METRICS = {"recall_gap": "recall", "fpr_gap": "fpr"}


def _computed_gap_failures(paired: PairedResult, policy: Policy, attributes: Sequence[str], model_index: int
                           ) -> tuple[str, ...]:
    """Blocking gap rules (recall/FPR gap to the reference group) failing for one model."""
    failures = set()
    table = paired.table
    for rule in policy.fairness.blocking_metrics:
        metric = _GAP_METRICS.get(rule.name)
        if metric is None or rule.max_difference is None:
            continue
        m = PAIRED_METRICS.index(metric)
        for attribute in attributes:
            try:
                reference = policy.fairness.attribute(attribute).reference
            except KeyError:
                continue
            ref_reps = paired.replicates.get((attribute, reference))
            if ref_reps is None:
                continue
            for group in table.loc[table["attribute"] == attribute, "group"].unique():
                reps = paired.replicates.get((attribute, group))
                if group == reference or reps is None:
                    continue
                gap = reps[:, model_index, m] - ref_reps[:, model_index, m]
                gap = gap[np.isfinite(gap)]
                if gap.size == 0:
                    continue
                alpha = (1 - policy.fairness.confidence) / 2
                lo, hi = np.quantile(gap, [alpha, 1 - alpha])
                if lo > rule.max_difference or hi < -rule.max_difference:
                    failures.add(f"{rule.name}:{attribute}={group}")
    return tuple(sorted(failures))


def compare_fairness(con: duckdb.DuckDBPyConnection, policy: Policy, champion: ModelDescription | None,
                     challenger: ModelDescription, paired: PairedResult, attributes: Sequence[str]
                     ) -> FairnessComparison:
    """Blocking fairness failures of each model, from the fairness report's table or computed here."""
    if table_exists(con, "monitoring.fairness_verdicts"):
        challenger_failures = _blocking_failures_from_table(con, policy, challenger)
        if challenger_failures is not None:
            champion_failures = _blocking_failures_from_table(con, policy, champion) if champion else ()
            notes = ()
            if champion is not None and champion_failures is None:
                notes = ("the champion has no recorded fairness verdicts: every challenger failure counts as new",)
            return FairnessComparison("fairness_verdicts", tuple(champion_failures or ()), challenger_failures, notes)
    computable = [r.name for r in policy.fairness.blocking_metrics if r.name in _GAP_METRICS]
    if not computable:
        return FairnessComparison("not_assessed", (), (), ("no fairness verdicts recorded and no computable "
                                                          "blocking rule in the policy",))
    two = champion is not None
    return FairnessComparison(
        "computed_gap_rules",
        _computed_gap_failures(paired, policy, attributes, 0) if two else (),
        _computed_gap_failures(paired, policy, attributes, 1 if two else 0),
        (f"fairness_report verdicts not found; evaluated {', '.join(computable)} on the paired "
         "bootstrap (fails only when the whole interval lies outside the bound)",),
    )


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeControlReport:
    cohort: str
    model_name: str
    created_at: str
    policy_sha256: str
    policy_version: str
    challenger: ModelDescription
    champion: ModelDescription | None
    evaluation_rows: int
    evaluation_positives: int
    evaluation_ids_sha256: str
    metrics: pd.DataFrame
    modifications: tuple[Modification, ...]
    envelope: Envelope | None
    fairness: FairnessComparison
    drift: tuple[dict, ...]
    caveats: tuple[str, ...]
    n_boot: int
    seed: int
    confidence: float
    min_group_size: int
    score_sources: dict = field(default_factory=dict)

    def overall(self, metric: str) -> dict:
        table = self.metrics
        row = table[(table["attribute"] == "overall") & (table["metric"] == metric)]
        return row.iloc[0].to_dict()

    def to_json(self) -> str:
        def clean(value):
            if isinstance(value, float) and math.isnan(value):
                return None
            return value

        payload = {
            **{k: v for k, v in self.__dict__.items() if k not in ("metrics", "challenger", "champion",
                                                                    "modifications", "envelope", "fairness")},
            "challenger": self.challenger.as_dict(),
            "champion": None if self.champion is None else self.champion.as_dict(),
            "modifications": [m.__dict__ for m in self.modifications],
            "envelope": None if self.envelope is None else self.envelope.__dict__,
            "fairness": {**self.fairness.__dict__, "new_failures": self.fairness.new_failures},
            "metrics": [{k: clean(v) for k, v in r.items()} for r in self.metrics.to_dict("records")],
        }
        return json.dumps(payload, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> ChangeControlReport:
        raw = json.loads(text)
        fairness = raw.pop("fairness")
        fairness.pop("new_failures", None)
        envelope = raw.pop("envelope")
        return cls(**{
            **raw,
            "challenger": ModelDescription.from_dict(raw["challenger"]),
            "champion": None if raw["champion"] is None else ModelDescription.from_dict(raw["champion"]),
            "metrics": pd.DataFrame(raw["metrics"]).astype({"champion": float, "challenger": float, "delta": float,
                                                           "lower": float, "upper": float,
                                                           "challenger_lower": float, "challenger_upper": float}),
            "modifications": tuple(Modification(**m) for m in raw["modifications"]),
            "envelope": None if envelope is None else Envelope(**{k: tuple(v) if isinstance(v, list) else v
                                                                 for k, v in envelope.items()}),
            "fairness": FairnessComparison(**{k: tuple(v) if isinstance(v, list) else v for k, v in fairness.items()}),
            "drift": tuple(raw["drift"]),
            "caveats": tuple(raw["caveats"]),
        })


Scorer = Callable[[str, str, pd.DataFrame], np.ndarray]


def _default_scorer(name: str, version: str, frame: pd.DataFrame) -> np.ndarray:
    from clinical_mlops.registry.aliases import load_scoring_model

    return load_scoring_model(name, version).predict_risk(frame)


def _scores(con: duckdb.DuckDBPyConnection, model: ModelDescription, frame: pd.DataFrame, scorer: Scorer
            ) -> tuple[np.ndarray, str]:
    """Stored test predictions when they cover every evaluation row, else a fresh scoring."""
    con.register("evaluation_ids", frame[["encounter_id"]])
    try:
        stored = con.execute(
            """SELECT e.encounter_id, p.score FROM evaluation_ids e
               LEFT JOIN (SELECT encounter_id, any_value(score) AS score FROM ml.predictions
                          WHERE model_name = ? AND model_version = ? AND split = 'test' GROUP BY encounter_id) p
               USING (encounter_id) ORDER BY e.encounter_id""",
            [model.name, model.version],
        ).df()
    finally:
        con.unregister("evaluation_ids")
    if len(stored) == len(frame) and stored["score"].notna().all():
        return stored["score"].to_numpy(dtype=np.float64), "stored test predictions"
    return np.asarray(scorer(model.name, model.version, frame), dtype=np.float64), "scored from the registry"


def _ids_hash(ids: np.ndarray) -> str:
    digest = hashlib.sha256()
    for value in np.sort(np.asarray(ids, dtype=np.int64)):
        digest.update(f"{value}\n".encode())
    return digest.hexdigest()


def drift_context(con: duckdb.DuckDBPyConnection, cohort: str, challenger: ModelDescription) -> tuple[dict, ...]:
    """The latest drift verdict of each extract, and whether the challenger trained on it."""
    trained_on = {e for e, _ in challenger.input_extracts}
    out = []
    for run in drift_lib.latest_runs(con, cohort):
        top = [f["feature"] for f in drift_lib.top_drifted(con, run["drift_run_id"], 5) if f["drifted"]]
        out.append({
            "extract_id": run["extract_id"],
            "computed_at": str(run["computed_at"]),
            "dataset_drift": bool(run["dataset_drift"]),
            "drift_share": float(run["drift_share"]),
            "features_drifted": int(run["features_drifted"]),
            "features_tested": int(run["features_tested"]),
            "prediction_drift": run["prediction_drift"],
            "target_drift": run["target_drift"],
            "top_drifted": top,
            "reference": f"{run['reference_kind']} {run['reference_model'] or ''} v{run['reference_version'] or '?'}",
            "challenger_trained_on_it": run["extract_id"] in trained_on,
        })
    return tuple(out)


def build_report(
    con: duckdb.DuckDBPyConnection,
    spec: CohortSpec,
    policy: Policy,
    *,
    challenger: ModelDescription,
    champion: ModelDescription | None,
    scorer: Scorer = _default_scorer,
    n_boot: int | None = None,
    seed: int | None = None,
) -> ChangeControlReport:
    """Compare ``challenger`` with ``champion`` (or assess it alone) on the current test split."""
    frame = con.execute(
        f"""SELECT f.* FROM {spec.features_table} f
            JOIN ml.splits s ON s.cohort = ? AND s.encounter_id = f.encounter_id
            WHERE s.split = 'test' ORDER BY f.encounter_id""",
        [spec.name],
    ).df()
    if frame.empty:
        raise ValueError(f"cohort {spec.name}: the test split is empty; materialize training_split first")
    caveats = []
    models = [m for m in (champion, challenger) if m is not None]
    sources = {}
    scores = []
    for model in models:
        s, source = _scores(con, model, frame, scorer)
        scores.append(s)
        sources[model.label] = source
        if model.cohort_spec_sha256 != spec.spec_hash:
            caveats.append(f"{model.label} was trained under a different cohort spec "
                           f"({model.cohort_spec_sha256[:12]}, now {spec.spec_hash[:12]}); the current test "
                           "split may overlap its training patients")
    y = frame["label"].to_numpy(dtype=np.float64)
    attributes = [a for a in spec.sensitive_attributes if a in frame.columns]
    n_boot = policy.fairness.n_bootstrap if n_boot is None else n_boot
    seed = policy.fairness.bootstrap_seed if seed is None else seed
    paired = paired_bootstrap(
        y, scores, [m.operating_threshold for m in models], {a: frame[a].to_numpy() for a in attributes},
        n_boot=n_boot, seed=seed, confidence=policy.fairness.confidence,
        min_group_size=policy.fairness.min_group_size,
    )
    modifications: tuple[Modification, ...] = ()
    envelope = None
    if champion is not None:
        modifications = tuple(classify_modifications(champion, challenger))
        envelope = check_envelope(modifications, policy.change_control.allowed_modifications,
                                  policy.change_control.requires_new_review)
    return ChangeControlReport(
        cohort=spec.name,
        model_name=challenger.name,
        created_at=datetime.now(UTC).replace(tzinfo=None).isoformat() + "Z",
        policy_sha256=policy.sha256,
        policy_version=policy.version,
        challenger=challenger,
        champion=champion,
        evaluation_rows=len(frame),
        evaluation_positives=int(y.sum()),
        evaluation_ids_sha256=_ids_hash(frame["encounter_id"].to_numpy()),
        metrics=paired.table,
        modifications=modifications,
        envelope=envelope,
        fairness=compare_fairness(con, policy, champion, challenger, paired, attributes),
        drift=drift_context(con, spec.name, challenger),
        caveats=tuple(caveats),
        n_boot=n_boot,
        seed=seed,
        confidence=policy.fairness.confidence,
        min_group_size=policy.fairness.min_group_size,
        score_sources=sources,
    )


# ---------------------------------------------------------------------------------------------
# the decision
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Criterion:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    passed: bool
    mode: str  # champion_comparison | absolute | already_champion
    criteria: tuple[Criterion, ...]
    modification_kinds: tuple[str, ...]
    policy_sha256: str
    policy_version: str

    @property
    def failed(self) -> tuple[Criterion, ...]:
        return tuple(c for c in self.criteria if not c.passed)

    @property
    def summary(self) -> str:
        if self.mode == "already_champion":
            return "the challenger is already the champion"
        if self.passed:
            return "acceptance criteria met: " + "; ".join(c.detail for c in self.criteria)
        return "blocked: " + "; ".join(f"{c.name} — {c.detail}" for c in self.failed)

    def criteria_json(self) -> str:
        return json.dumps([c.__dict__ for c in self.criteria], sort_keys=True)


def decide(report: ChangeControlReport, policy: Policy) -> Decision:
    """The promotion decision under the policy (absolute criteria when there is no champion)."""
    cc = policy.change_control
    criteria: list[Criterion] = []
    kinds = tuple(m.kind for m in report.modifications)
    auroc = report.overall("auroc")
    if report.champion is not None and report.champion.version == report.challenger.version:
        return Decision(True, "already_champion", (), kinds, policy.sha256, policy.version)
    if report.champion is None:
        mode = "absolute"
        brier = report.overall("brier")
        criteria.append(Criterion(
            "min_auroc", auroc["challenger"] >= cc.absolute_acceptance.min_auroc,
            f"AUROC {auroc['challenger']:.3f} (CI {auroc['challenger_lower']:.3f}–{auroc['challenger_upper']:.3f}) "
            f"vs minimum {cc.absolute_acceptance.min_auroc:.2f}",
        ))
        criteria.append(Criterion(
            "max_brier", brier["challenger"] <= cc.absolute_acceptance.max_brier,
            f"Brier {brier['challenger']:.4f} vs maximum {cc.absolute_acceptance.max_brier:.2f}",
        ))
    else:
        mode = "champion_comparison"
        lower = auroc["lower"]
        ok = lower == lower and lower > -cc.acceptance.max_auroc_drop
        criteria.append(Criterion(
            "no_significant_auroc_regression", bool(ok),
            f"ΔAUROC {auroc['delta']:+.3f} (paired {report.confidence:.0%} CI {lower:+.3f} to {auroc['upper']:+.3f}); "
            f"lower bound must exceed −{cc.acceptance.max_auroc_drop:.2f}",
        ))
        envelope = report.envelope
        criteria.append(Criterion("inside_change_envelope", bool(envelope and envelope.inside),
                                  envelope.describe() if envelope else "no envelope assessed"))
    if cc.acceptance.no_new_fairness_failures:
        new = report.fairness.new_failures
        criteria.append(Criterion(
            "no_new_fairness_failures", not new,
            (f"new blocking fairness failures: {', '.join(new)}" if new else
             f"no new blocking fairness failure ({report.fairness.source})"),
        ))
    if policy.drift.blocking:
        unaddressed = [d["extract_id"] for d in report.drift if d["dataset_drift"] and not d["challenger_trained_on_it"]]
        criteria.append(Criterion(
            "drift_addressed", not unaddressed,
            (f"dataset drift in {', '.join(unaddressed)} not in the challenger's training data" if unaddressed
             else "every drifted extract is in the challenger's training data"),
        ))
    return Decision(all(c.passed for c in criteria), mode, tuple(criteria), kinds, policy.sha256, policy.version)


# ---------------------------------------------------------------------------------------------
# rendering and storage
# ---------------------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 3, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _ci(lo: float, hi: float, sign: bool = False) -> str:
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return "—"
    return f"{_fmt(lo, sign=sign)} to {_fmt(hi, sign=sign)}"


def render_markdown(report: ChangeControlReport, decision: Decision) -> str:
    """The report for people: decision, criteria, change, impact, fairness, drift, diff."""
    ch, cp = report.challenger, report.champion
    title = f"{ch.label} (challenger) vs {cp.label} (champion)" if cp else f"{ch.label} (no champion yet)"
    verdict = "PROMOTION ALLOWED" if decision.passed else "PROMOTION BLOCKED"
    lines = [
        f"# Change control — {report.cohort}: {title}",
        "",
        f"**{verdict}** — {decision.summary}",
        "",
        f"Policy {report.policy_version} (sha256 `{report.policy_sha256[:12]}`), generated {report.created_at}. "
        f"Mode: {decision.mode.replace('_', ' ')}.",
        "",
        "## Acceptance criteria",
        "",
        "| criterion | result | detail |",
        "|---|---|---|",
        *(f"| {c.name} | {'pass' if c.passed else '**FAIL**'} | {c.detail} |" for c in decision.criteria),
    ]
    if cp is not None:
        lines += ["", "## Modification and envelope", ""]
        lines += [f"- **{m.kind}**: {m.detail}" for m in report.modifications]
        if report.envelope is not None:
            lines += ["", f"Envelope: {report.envelope.describe()}."]
    lines += [
        "", "## Held-out performance (same rows for both models)", "",
        f"{report.evaluation_rows:,} test-split encounters ({report.evaluation_positives:,} positive; id-set sha256 "
        f"`{report.evaluation_ids_sha256[:12]}`); paired bootstrap, {report.n_boot} replicates, seed {report.seed}, "
        f"{report.confidence:.0%} intervals. Recall, FPR and alert rate at each model's own operating threshold.",
        "",
        "| metric | champion | challenger (CI) | Δ challenger − champion (CI) |",
        "|---|---|---|---|",
    ]
    overall = report.metrics[report.metrics["attribute"] == "overall"]
    for r in overall.itertuples(index=False):
        lines.append(f"| {r.metric} | {_fmt(r.champion)} | {_fmt(r.challenger)} ({_ci(r.challenger_lower, r.challenger_upper)}) "
                     f"| {_fmt(r.delta, sign=True)} ({_ci(r.lower, r.upper, sign=True)}) |")
    lines += ["", "### Per subgroup (AUROC and recall)", "",
              "| attribute | group | n | metric | champion | challenger | Δ (CI) |", "|---|---|---|---|---|---|---|"]
    groups = report.metrics[(report.metrics["attribute"] != "overall") & report.metrics["metric"].isin(["auroc", "recall"])]
    for r in groups.itertuples(index=False):
        if r.n < report.min_group_size:  # too few for a verdict: no estimates shown
            lines.append(f"| {r.attribute} | {r.group} | {r.n} | {r.metric} | — | — | insufficient evidence "
                         f"(n < {report.min_group_size}) |")
            continue
        lines.append(f"| {r.attribute} | {r.group} | {r.n} | {r.metric} | {_fmt(r.champion)} | {_fmt(r.challenger)} "
                     f"| {_fmt(r.delta, sign=True)} ({_ci(r.lower, r.upper, sign=True)}) |")
    fair = report.fairness
    lines += ["", "## Fairness verdicts", "", f"Source: {fair.source}.",
              f"- champion blocking failures: {', '.join(fair.champion_failures) or 'none'}",
              f"- challenger blocking failures: {', '.join(fair.challenger_failures) or 'none'}",
              f"- new: {', '.join(fair.new_failures) or 'none'}; resolved: {', '.join(fair.resolved) or 'none'}",
              *(f"- note: {n}" for n in fair.notes)]
    lines += ["", "## Drift context", ""]
    if report.drift:
        lines += ["| extract | dataset drift | drifted features | top drifted | challenger trained on it |",
                  "|---|---|---|---|---|"]
        for d in report.drift:
            lines.append(f"| {d['extract_id']} | {'yes' if d['dataset_drift'] else 'no'} | "
                         f"{d['features_drifted']}/{d['features_tested']} ({d['drift_share']:.0%}) | "
                         f"{', '.join(d['top_drifted']) or '—'} | {'yes' if d['challenger_trained_on_it'] else 'no'} |")
    else:
        lines.append("No drift report recorded for this cohort.")
    lines += ["", "## What differs", "", "| | champion | challenger |", "|---|---|---|"]
    def row(label: str, a, b) -> str:
        return f"| {label} | {a} | {b} |"
    lines.append(row("version", cp.version if cp else "—", ch.version))
    lines.append(row("algorithm", cp.algorithm if cp else "—", ch.algorithm))
    keys = sorted(set(ch.params) | set(cp.params if cp else {}))
    for k in keys:
        a = cp.params.get(k, "—") if cp else "—"
        b = ch.params.get(k, "—")
        lines.append(row(f"param `{k}`" + (" ✱" if cp and a != b else ""), a, b))
    lines.append(row("features", f"{len(cp.features)}" if cp else "—", f"{len(ch.features)}"))
    lines.append(row("training extracts", ", ".join(e for e, _ in cp.input_extracts) if cp else "—",
                     ", ".join(e for e, _ in ch.input_extracts)))
    lines.append(row("training rows", cp.train_rows if cp else "—", ch.train_rows))
    lines.append(row("operating threshold", _fmt(cp.operating_threshold, 4) if cp else "—", _fmt(ch.operating_threshold, 4)))
    lines.append(row("cohort spec sha256", f"`{cp.cohort_spec_sha256[:12]}`" if cp else "—", f"`{ch.cohort_spec_sha256[:12]}`"))
    lines.append(row("git commit", f"`{cp.git_commit[:12]}`" if cp else "—", f"`{ch.git_commit[:12]}`"))
    lines.append(row("lock sha256", f"`{cp.lock_sha256[:12]}`" if cp else "—", f"`{ch.lock_sha256[:12]}`"))
    lines.append(row("MLflow run", f"`{cp.run_id}`" if cp else "—", f"`{ch.run_id}`"))
    lines += ["", "Scores: " + "; ".join(f"{k}: {v}" for k, v in report.score_sources.items()) + "."]
    if report.caveats:
        lines += ["", "## Caveats", "", *(f"- {c}" for c in report.caveats)]
    return "\n".join(lines) + "\n"


DDL: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS audit",
    """CREATE TABLE IF NOT EXISTS audit.change_control_reports (
    report_id VARCHAR PRIMARY KEY,
    created_at TIMESTAMP NOT NULL,          -- UTC
    cohort VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    challenger_version VARCHAR NOT NULL,
    champion_version VARCHAR,
    modification_kinds_json VARCHAR NOT NULL,
    inside_envelope BOOLEAN,
    gate_passed BOOLEAN NOT NULL,           -- the decision under the policy at report time
    policy_sha256 VARCHAR NOT NULL,
    policy_version VARCHAR NOT NULL,
    report_sha256 VARCHAR NOT NULL,         -- of the Markdown text
    report_path VARCHAR,
    markdown VARCHAR NOT NULL,
    report_json VARCHAR NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS audit.promotion_decisions (
    decision_id VARCHAR PRIMARY KEY,
    decided_at TIMESTAMP NOT NULL,          -- UTC
    cohort VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    challenger_version VARCHAR NOT NULL,
    champion_version VARCHAR,               -- champion when the decision was taken
    mode VARCHAR NOT NULL,                  -- champion_comparison | absolute | already_champion | manual
    passed BOOLEAN,                         -- gate outcome (NULL for a manual promotion without a gate)
    promoted BOOLEAN NOT NULL,              -- whether the champion alias moved
    modification_kinds_json VARCHAR NOT NULL,
    criteria_json VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,
    policy_sha256 VARCHAR NOT NULL,
    policy_version VARCHAR NOT NULL,
    report_id VARCHAR
)""",
)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for statement in DDL:
        con.execute(statement)


def store_report(con: duckdb.DuckDBPyConnection, report: ChangeControlReport, decision: Decision,
                 markdown: str, path: Path | None = None) -> str:
    """Append the report (Markdown and JSON) to ``audit.change_control_reports``; return its id."""
    ensure_tables(con)
    report_id = uuid.uuid4().hex
    with transaction(con):
        con.execute(
            "INSERT INTO audit.change_control_reports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                report_id, datetime.now(UTC).replace(tzinfo=None), report.cohort, report.model_name,
                report.challenger.version, None if report.champion is None else report.champion.version,
                json.dumps([m.kind for m in report.modifications]),
                None if report.envelope is None else report.envelope.inside, decision.passed,
                report.policy_sha256, report.policy_version, hashlib.sha256(markdown.encode()).hexdigest(),
                None if path is None else str(path), markdown, report.to_json(),
            ],
        )
    return report_id


def latest_report(con: duckdb.DuckDBPyConnection, cohort: str) -> tuple[str, ChangeControlReport] | None:
    """The most recent stored report of a cohort, with its id (None if there is none)."""
    ensure_tables(con)
    rows = con.execute(
        "SELECT report_id, report_json FROM audit.change_control_reports WHERE cohort = ? ORDER BY created_at DESC LIMIT 1",
        [cohort],
    ).fetchall()
    if not rows:
        return None
    return rows[0][0], ChangeControlReport.from_json(rows[0][1])


def record_decision(
    con: duckdb.DuckDBPyConnection,
    *,
    cohort: str,
    model_name: str,
    challenger_version: str,
    champion_version: str | None,
    mode: str,
    passed: bool | None,
    promoted: bool,
    modification_kinds: Sequence[str],
    criteria_json: str,
    reason: str,
    actor: str,
    policy_sha256: str,
    policy_version: str,
    report_id: str | None = None,
) -> str:
    """Append a promotion decision (gate or manual) to ``audit.promotion_decisions``; return its id."""
    ensure_tables(con)
    decision_id = uuid.uuid4().hex
    with transaction(con):
        con.execute(
            "INSERT INTO audit.promotion_decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [decision_id, datetime.now(UTC).replace(tzinfo=None), cohort, model_name, str(challenger_version),
             champion_version, mode, passed, promoted, json.dumps(list(modification_kinds)), criteria_json,
             reason, actor, policy_sha256, policy_version, report_id],
        )
    return decision_id
