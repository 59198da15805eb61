"""The policy's slices of a frame of rows: each sensitive attribute, then each intersection.

The same groups, labels and reference as the fairness audit's slices (missing values form the
``missing`` group; an intersection's groups and reference are joined with the audit's separator),
plus the whole window as the ``overall`` slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from clinical_mlops.evaluation.metrics import MISSING_GROUP, OVERALL_ATTRIBUTE, OVERALL_GROUP
from clinical_mlops.fairness.audit import INTERSECTION_SEPARATOR

__all__ = ["GroupSlice", "group_columns", "group_slices"]


@dataclass(frozen=True)
class GroupSlice:
    """One attribute (or intersection, or ``overall``): its sorted group labels, reference and row codes."""

    name: str
    attributes: tuple[str, ...]
    reference: str | None
    labels: list[str]
    codes: np.ndarray

    def mask(self, group: str) -> np.ndarray:
        return self.codes == self.labels.index(group)


def _text(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    text = frame[columns].astype("object").where(frame[columns].notna(), MISSING_GROUP).astype(str)
    return text.agg(INTERSECTION_SEPARATOR.join, axis=1) if len(columns) > 1 else text[columns[0]]


def group_columns(frame: pd.DataFrame, policy) -> dict[str, np.ndarray]:
    """Slice name -> the group label of every row (attributes and intersections, not ``overall``)."""
    return {sl.name: np.asarray(sl.labels, dtype=object)[sl.codes] for sl in group_slices(frame, policy)[1:]}


def group_slices(frame: pd.DataFrame, policy) -> list[GroupSlice]:
    """``overall`` first, then the policy's attributes present in ``frame``, then its intersections."""
    n = len(frame)
    out = [GroupSlice(OVERALL_ATTRIBUTE, (), None, [OVERALL_GROUP], np.zeros(n, dtype=np.int64))]
    fp = policy.fairness
    present = [a for a in fp.sensitive_attributes if a.name in frame.columns]
    combos = [((a.name,), a.reference) for a in present]
    names = {a.name for a in present}
    combos += [(tuple(c), INTERSECTION_SEPARATOR.join(fp.attribute(a).reference for a in c))
               for c in fp.intersections if set(c) <= names]
    for columns, reference in combos:
        if n:
            codes, uniques = pd.factorize(_text(frame, list(columns)), sort=True)
            labels = [str(u) for u in uniques]
        else:
            codes, labels = np.zeros(0, dtype=np.int64), []
        out.append(GroupSlice(INTERSECTION_SEPARATOR.join(columns), columns, reference, labels,
                              np.asarray(codes, dtype=np.int64)))
    return out
