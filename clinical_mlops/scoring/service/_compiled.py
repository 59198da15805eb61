"""The served gradient-boosted pipeline as a handful of numpy operations, bit-for-bit equal to it.

Why: for one row, ``pipeline.predict_proba`` spends ~20 ms in Python overhead (pandas casts, two
column transformers, one Cython call per boosting iteration); the trees themselves take
microseconds. ``compile_pipeline`` reads the fitted pipeline once — ordinal codes of every known
category, the trees' nodes, the known-category bitsets — and evaluates all trees at once, level
by level, for a batch of request records.

What it reproduces, exactly (see sklearn's ``_predictor.pyx``): a numeric split sends a value
``<= threshold`` left, NaN the missing-value way; a categorical split sends a code in the
node's left bitset left, another known code right, an unknown or negative code the missing-value
way. Leaf values are summed in iteration order after the baseline (a cumulative sum is
sequential, as sklearn's ``+=`` is) and the logistic link is scipy's ``expit``, as sklearn's.

It reads attributes that scikit-learn keeps private (``_predictors``, ``_preprocessor``,
``_bin_mapper``, ``_baseline_prediction``), so it never trusts itself: ``compile_pipeline``
scores probe rows (every known category, an unknown one, every split threshold of every
numeric feature and values beside it) both ways and returns None — the service then uses the
pipeline — unless every probability is *identical*. Any other model type also gets None.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clinical_mlops.features.cohort import CohortSpec

__all__ = ["CompiledScorer", "compile_pipeline"]

logger = logging.getLogger("clinical_mlops.scoring.service")

_MISSING_SLOT = 256  # the categorical slot of NaN and negative codes
_UNKNOWN = "\x00unknown category\x00"


@dataclass(frozen=True)
class CompiledScorer:
    """Risk (probability of the positive class) of request records, as the fitted pipeline gives it."""

    numeric: tuple[tuple[str, int], ...]  # (feature, column of the model's matrix)
    categorical: tuple[tuple[str, int, dict[str, float], float], ...]  # (feature, column, code of a value, unknown)
    n_columns: int
    feature: np.ndarray  # per node (all trees' nodes concatenated): column tested
    threshold: np.ndarray
    missing_left: np.ndarray
    is_categorical: np.ndarray
    cat_row: np.ndarray  # per node: its row of ``cat_left``
    cat_left: np.ndarray  # (categorical nodes + 1, 257): slot goes left
    left: np.ndarray  # children; a leaf points to itself
    right: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    depth: int
    baseline: float

    def matrix(self, records: Sequence[dict]) -> np.ndarray:
        """The model's input matrix (columns in the model's order) for ``records``."""
        X = np.empty((len(records), self.n_columns), dtype=np.float64)
        for name, column in self.numeric:
            X[:, column] = [float(r[name]) for r in records]
        for name, column, codes, unknown in self.categorical:
            X[:, column] = [codes.get(r[name], unknown) for r in records]
        return X

    def score_matrix(self, X: np.ndarray) -> np.ndarray:
        from scipy.special import expit

        n = X.shape[0]
        rows = np.arange(n)[:, None]
        slots = np.where(np.isnan(X) | (X < 0), _MISSING_SLOT, np.clip(np.nan_to_num(X), 0, 255)).astype(np.intp)
        node = np.broadcast_to(self.roots, (n, self.roots.size)).copy()
        for _ in range(self.depth):
            column = self.feature[node]
            x = X[rows, column]
            numeric_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            categorical_left = self.cat_left[self.cat_row[node], slots[rows, column]]
            go_left = np.where(self.is_categorical[node], categorical_left, numeric_left)
            node = np.where(go_left, self.left[node], self.right[node])
        leaves = self.value[node]
        raw = np.cumsum(np.concatenate([np.full((n, 1), self.baseline), leaves], axis=1), axis=1)[:, -1]
        return expit(raw)

    def score(self, records: Sequence[dict]) -> np.ndarray:
        return self.score_matrix(self.matrix(records))


def _column_map(transformer, n_inputs: int, names: Sequence[str] | None) -> dict[int, int] | None:
    """Input column → output column of a ColumnTransformer whose every part is one-to-one, else None."""
    out: dict[int, int] = {}
    for part, step, columns in transformer.transformers_:
        if isinstance(step, str) and step == "drop":
            continue
        if not isinstance(columns, slice) and len(columns) and all(isinstance(c, (bool, np.bool_)) for c in columns):
            columns = np.asarray(columns, dtype=bool)
        if isinstance(columns, slice) or getattr(columns, "dtype", None) == bool:
            indices = list(np.arange(n_inputs)[columns])
        elif names is not None and all(isinstance(c, str) for c in columns):
            indices = [list(names).index(c) for c in columns]
        else:
            indices = [int(c) for c in columns]
        span = transformer.output_indices_[part]
        if span.stop - span.start != len(indices):
            return None
        out.update({i: span.start + k for k, i in enumerate(indices)})
    return out


def _trees(model) -> tuple[np.ndarray, ...]:
    known, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
    blocks, cat_tables, roots, offset = [], [np.zeros(_MISSING_SLOT + 1, dtype=bool)], [], 0
    codes = np.arange(256)
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        cat_row = np.zeros(len(nodes), dtype=np.intp)
        for i in np.flatnonzero(nodes["is_categorical"] & ~nodes["is_leaf"].astype(bool)):
            bits = predictor.raw_left_cat_bitsets[nodes["bitset_idx"][i]]
            known_bits = known[f_idx_map[nodes["feature_idx"][i]]]
            in_left = ((bits[codes // 32] >> (codes % 32)) & 1).astype(bool)
            is_known = ((known_bits[codes // 32] >> (codes % 32)) & 1).astype(bool)
            missing_left = bool(nodes["missing_go_to_left"][i])
            table = np.append(np.where(in_left, True, np.where(is_known, False, missing_left)), missing_left)
            cat_row[i] = len(cat_tables)
            cat_tables.append(table)
        leaf = nodes["is_leaf"].astype(bool)
        index = np.arange(len(nodes)) + offset
        left = np.where(leaf, index, nodes["left"].astype(np.intp) + offset)
        right = np.where(leaf, index, nodes["right"].astype(np.intp) + offset)
        blocks.append((nodes["feature_idx"].astype(np.intp), nodes["num_threshold"], nodes["missing_go_to_left"]
                       .astype(bool), nodes["is_categorical"].astype(bool) & ~leaf, cat_row, left, right,
                       nodes["value"], int(nodes["depth"].max())))
        roots.append(offset)
        offset += len(nodes)
    joined = [np.concatenate([b[k] for b in blocks]) for k in range(8)]
    return (*joined, np.stack(cat_tables), np.asarray(roots, dtype=np.intp), max(b[8] for b in blocks))


def _build(pipeline, spec: CohortSpec) -> CompiledScorer | None:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    outer, model = pipeline.steps[0][1], pipeline.steps[1][1]
    inner = getattr(model, "_preprocessor", None)
    if not (isinstance(outer, ColumnTransformer) and isinstance(model, HistGradientBoostingClassifier)
            and isinstance(inner, ColumnTransformer) and model.n_trees_per_iteration_ == 1
            and len(model.classes_) == 2 and model._loss.__class__.__name__ == "HalfBinomialLoss"):
        return None
    features = list(spec.features)
    first = _column_map(outer, len(features), features)
    second = _column_map(inner, len(features), None)
    if first is None or second is None or set(first) != set(range(len(features))):
        return None
    position = {name: second[first[i]] for i, name in enumerate(features)}
    encoder = outer.named_transformers_.get("categorical")
    if not isinstance(encoder, OrdinalEncoder):
        return None
    values = {name: [c for c in cats if isinstance(c, str)] + [_UNKNOWN]
              for name, cats in zip(spec.categorical_features, encoder.categories_)}
    length = max(len(v) for v in values.values())
    probe = pd.DataFrame({**{n: 0.0 for n in spec.numeric_features},
                          **{n: [v[i % len(v)] for i in range(length)] for n, v in values.items()}})
    from clinical_mlops.training import modelling

    coded = inner.transform(outer.transform(modelling.model_input(probe, spec)))
    categorical = []
    for name, vs in values.items():
        column = position[name]
        codes = {v: float(coded[i, column]) for i, v in enumerate(vs) if v != _UNKNOWN}
        categorical.append((name, column, codes, float(coded[vs.index(_UNKNOWN), column])))
    (feature, threshold, missing_left, is_cat, cat_row, left, right, value, cat_left, roots, depth) = _trees(model)
    return CompiledScorer(
        numeric=tuple((n, position[n]) for n in spec.numeric_features), categorical=tuple(categorical),
        n_columns=coded.shape[1], feature=feature, threshold=threshold, missing_left=missing_left,
        is_categorical=is_cat, cat_row=cat_row, cat_left=cat_left, left=left, right=right, value=value,
        roots=roots, depth=depth, baseline=float(np.asarray(model._baseline_prediction).ravel()[0]),
    )


def _probe_records(scorer: CompiledScorer, spec: CohortSpec, rows: int = 2048, seed: int = 0) -> list[dict]:
    """Rows at, just below and just above every numeric threshold, with every known and an unknown category."""
    rng = np.random.default_rng(seed)
    by_column = {column: name for name, column in scorer.numeric}
    candidates: dict[str, np.ndarray] = {}
    for name, column in scorer.numeric:
        t = scorer.threshold[(scorer.feature == column) & ~scorer.is_categorical & (scorer.left != scorer.right)]
        t = t[np.isfinite(t) & (t >= 0)]
        candidates[name] = np.unique(np.concatenate([t, np.nextafter(t, np.inf), np.maximum(t - 0.5, 0), [0.0]]))
    records = []
    for i in range(rows):
        record: dict = {name: float(rng.choice(candidates[name])) for name in by_column.values()}
        for name, _, codes, _ in scorer.categorical:
            options = [*codes, _UNKNOWN]
            record[name] = options[i % len(options)] if i < 512 else options[int(rng.integers(len(options)))]
        records.append(record)
    return records


def compile_pipeline(pipeline, spec: CohortSpec) -> CompiledScorer | None:
    """The compiled scorer of ``pipeline``, or None when it is another model or a probe row differs."""
    try:
        scorer = _build(pipeline, spec)
        if scorer is None:
            return None
        probe = _probe_records(scorer, spec)
        from clinical_mlops.training import modelling

        expected = modelling.predict_risk(pipeline, pd.DataFrame(probe), spec)
        if not np.array_equal(scorer.score(probe), expected):
            logger.warning("compiled scorer differs from the pipeline on probe rows: scoring with the pipeline")
            return None
        return scorer
    except Exception as exc:  # noqa: BLE001 - any surprise in the fitted objects: use the pipeline
        logger.warning("could not compile the pipeline (%s: %s): scoring with the pipeline", type(exc).__name__, exc)
        return None
