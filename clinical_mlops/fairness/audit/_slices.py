"""The audit's slices: each sensitive attribute and each declared intersection, as group codes per row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clinical_mlops.governance.policy import Policy

__all__ = ["INTERSECTION_SEPARATOR", "MISSING_GROUP", "Slice", "slices", "slices_from_codes"]

INTERSECTION_SEPARATOR = " × "
MISSING_GROUP = "missing"


@dataclass(frozen=True)
class Slice:
    """One attribute (or intersection) of the audit: its groups' labels (sorted), reference and codes."""

    name: str
    attributes: tuple[str, ...]
    reference: str
    labels: list[str]
    codes: np.ndarray  # group code per row


def _group_codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    text = values.astype("object").where(values.notna(), MISSING_GROUP).map(str)
    codes, uniques = pd.factorize(text, sort=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


def slices(frame: pd.DataFrame, policy: Policy) -> list[Slice]:
    """The policy's slices of a frame of predictions with sensitive attribute columns (missing as ``missing``)."""
    out: list[Slice] = []
    present = [a for a in policy.fairness.sensitive_attributes if a.name in frame.columns]
    for attr in present:
        codes, labels = _group_codes(frame[attr.name])
        out.append(Slice(attr.name, (attr.name,), attr.reference, labels, codes))
    names = {a.name for a in present}
    for combo in policy.fairness.intersections:
        if not set(combo) <= names:
            continue
        text = frame[list(combo)].astype("object").fillna(MISSING_GROUP).astype(str)
        joined = text.agg(INTERSECTION_SEPARATOR.join, axis=1)
        codes, labels = _group_codes(joined)
        reference = INTERSECTION_SEPARATOR.join(policy.fairness.attribute(a).reference for a in combo)
        out.append(Slice(INTERSECTION_SEPARATOR.join(combo), tuple(combo), reference, labels, codes))
    return out


def _joined(a: tuple[np.ndarray, list[str]], b: tuple[np.ndarray, list[str]]) -> tuple[np.ndarray, list[str]]:
    """Codes and sorted labels of the groups present in the intersection of two coded attributes."""
    combined = a[0] * len(b[1]) + b[0]
    present, inverse = np.unique(combined, return_inverse=True)
    text = [a[1][int(c) // len(b[1])] + INTERSECTION_SEPARATOR + b[1][int(c) % len(b[1])] for c in present]
    order = sorted(range(len(text)), key=text.__getitem__)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)], [text[i] for i in order]


def slices_from_codes(attributes: Mapping[str, tuple[np.ndarray, list[str]]], policy: Policy) -> list[Slice]:
    """The policy's slices from coded attributes (codes into sorted labels, missing as ``missing``).

    The same groups, labels and order as the slices of a frame (:func:`audit`).
    """
    out: list[Slice] = []
    present = [a for a in policy.fairness.sensitive_attributes if a.name in attributes]
    for attr in present:
        codes, labels = attributes[attr.name]
        out.append(Slice(attr.name, (attr.name,), attr.reference, list(labels), np.asarray(codes, dtype=np.int64)))
    names = {a.name for a in present}
    for combo in policy.fairness.intersections:
        if not set(combo) <= names:
            continue
        joined = attributes[combo[0]]
        for other in combo[1:]:
            joined = _joined(joined, attributes[other])
        reference = INTERSECTION_SEPARATOR.join(policy.fairness.attribute(a).reference for a in combo)
        out.append(Slice(INTERSECTION_SEPARATOR.join(combo), tuple(combo), reference, joined[1], joined[0]))
    return out

