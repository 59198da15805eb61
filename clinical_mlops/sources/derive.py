"""One contract, two renderings of the same rule list: a Pandera schema and SQL.

:func:`rules` is the single list: per column a ``not_nullable`` rule and at most one value
rule, plus the key's duplicate rule. Each rule has a name (``column:check``, the quarantine
reason), a reason string (why it exists, for people) and SQL over a raw staging table whose
columns are all VARCHAR, true when the row passes. :func:`pandera_schema` renders the same
rules as Pandera checks on a frame of text; :func:`pandera_failures` names the rules a frame's
rows fail, :func:`failing_rows_sql` does the same in SQL; the two are tested to agree.

Value semantics, identical in both: an empty field (NULL) fails only ``not_nullable``; a
missing token passes only in a ``nullable`` column; regular expressions match the whole value
with ASCII classes (RE2 in DuckDB, ``re.ASCII`` in pandas).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the rules and their SQL load without pandas or Pandera
    import pandas as pd
    import pandera.pandas as pa

from clinical_mlops.sources.contract import Column, SourceContract, band_labels

__all__ = ["BOOLEAN_TOKENS", "Rule", "failing_rows_sql", "pandera_failures", "pandera_schema", "rules",
           "sensitive_attribute_sql"]

BOOLEAN_TOKENS = ("true", "false")
"""The text of a boolean value (compared case-insensitively)."""

_INTEGER = {True: r"-?[0-9]+", False: r"[0-9]+"}
_NUMBER = r"-?[0-9]+(\.[0-9]+)?"


@dataclass(frozen=True)
class Rule:
    """One check of the contract. ``kind`` is ``not_null``, ``vocabulary``, ``pattern``,
    ``range``, ``boolean`` or ``unique`` (cross-row); ``arg`` its argument; ``missing`` the
    tokens that pass as missing (nullable columns only)."""

    name: str
    column: str
    check: str
    kind: str
    arg: tuple
    reason: str
    missing: tuple[str, ...] = ()

    @property
    def cross_row(self) -> bool:
        return self.kind == "unique"

    @property
    def sql(self) -> str:
        """A boolean SQL expression over the raw table, true when the row passes."""
        return _rule_sql(self)


def _value_rule(name: str, spec: Column, missing: tuple[str, ...]) -> Rule | None:
    def rule(check: str, kind: str, arg: tuple, reason: str) -> Rule:
        return Rule(f"{name}:{check}", name, check, kind, arg, reason, missing)

    if (vocabulary := spec.vocabulary()) is not None:
        extra = f"; {spec.not_measured!r} means not measured" if spec.not_measured else ""
        return rule("in_vocabulary", "vocabulary", vocabulary,
                    f"{name} takes one of {len(vocabulary)} declared values{extra}")
    if spec.pattern is not None:
        what = spec.pattern.description or f"the pattern {spec.pattern.regex}"
        return rule(spec.pattern.name, "pattern", (spec.pattern.regex,), f"{name} must be {what}")
    if spec.range is not None:
        low, high = spec.range.min, spec.range.max
        regex = _INTEGER[low < 0] if spec.type == "integer" else _NUMBER
        return rule(f"{spec.type}_in_{_word(low)}_{_word(high)}", "range", (regex, low, high),
                    f"{name} is {'an integer' if spec.type == 'integer' else 'a number'} from {low} to {high}")
    if spec.type == "integer":
        return rule("integer", "pattern", (_INTEGER[True],), f"{name} is an integer")
    if spec.type == "number":
        return rule("number", "pattern", (_NUMBER,), f"{name} is a decimal number")
    if spec.type == "boolean":
        return rule("boolean", "boolean", BOOLEAN_TOKENS, f"{name} is true or false")
    return None


def _word(bound: float) -> str:
    return str(bound).replace("-", "minus").replace(".", "p")


def rules(contract: SourceContract) -> tuple[Rule, ...]:
    """Every rule of the contract, in column order, the key's duplicate rule last."""
    found: list[Rule] = []
    for name, spec in contract.columns.items():
        missing = spec.tokens(contract.missing_tokens) if spec.nullable else ()
        found.append(Rule(f"{name}:not_nullable", name, "not_nullable", "not_null", (),
                          f"{name} is never empty" + (f" (missing is written {', '.join(missing)})" if missing else "")))
        if (value := _value_rule(name, spec, missing)) is not None:
            found.append(value)
    if contract.key is not None:
        columns = tuple(contract.key.columns)
        check = "duplicate_" + "_".join(columns)
        found.append(Rule(f"{columns[0]}:{check}", columns[0], check, "unique", columns,
                          f"{', '.join(columns)} {'identifies' if len(columns) == 1 else 'identify'} a row within the "
                          f"{contract.key.scope}: {contract.key.reason}"))
    return tuple(found)


# --------------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _check_sql(rule: Rule, column: str) -> str:
    if rule.kind == "vocabulary":
        return f"{column} IN ({', '.join(_literal(v) for v in rule.arg)})"
    if rule.kind == "pattern":
        return f"regexp_full_match({column}, {_literal(rule.arg[0])})"
    if rule.kind == "range":
        regex, low, high = rule.arg
        return f"(regexp_full_match({column}, {_literal(regex)}) AND TRY_CAST({column} AS DOUBLE) BETWEEN {low} AND {high})"
    if rule.kind == "boolean":
        return f"lower({column}) IN ({', '.join(_literal(v) for v in rule.arg)})"
    raise ValueError(f"unknown rule kind {rule.kind!r}")


def _rule_sql(rule: Rule) -> str:
    if rule.kind == "not_null":
        return f"({_quote(rule.column)} IS NOT NULL)"
    if rule.kind == "unique":
        keys = [_quote(c) for c in rule.arg]
        nulls = " OR ".join(f"{k} IS NULL" for k in keys)
        return f"({nulls} OR count(*) OVER (PARTITION BY {', '.join(keys)}) = 1)"
    column = _quote(rule.column)
    missing = f"{column} IN ({', '.join(_literal(t) for t in rule.missing)}) OR " if rule.missing else ""
    return f"({column} IS NULL OR {missing}{_check_sql(rule, column)})"


def failing_rows_sql(contract: SourceContract, table: str, row_column: str, *, where: str = "") -> str:
    """SQL listing ``(row, rule)`` for every rule a row of ``table`` fails (``where`` filters rows).

    Per-row and cross-row rules alike; a key is unique within the rows ``where`` selects.
    """
    condition = f" WHERE {where}" if where else ""
    selects = [
        f"SELECT {_quote(row_column)} AS row, {_literal(rule.name)} AS rule FROM "
        f"(SELECT {_quote(row_column)}, coalesce({rule.sql}, FALSE) AS passes FROM {table}{condition}) "
        "WHERE NOT passes"
        for rule in rules(contract)
    ]
    return "\nUNION ALL\n".join(selects)


# --------------------------------------------------------------------------------------------
# Pandera
# --------------------------------------------------------------------------------------------


def _series_check(rule: Rule):
    """Element-wise pass/fail of a rule's value check on non-null text."""
    import pandas as pd

    missing = frozenset(rule.missing)
    if rule.kind == "vocabulary":
        allowed = frozenset(rule.arg)

        def check(values: pd.Series) -> pd.Series:
            return values.isin(allowed)
    elif rule.kind == "pattern":
        pattern = rule.arg[0]

        def check(values: pd.Series) -> pd.Series:
            return values.str.fullmatch(pattern, flags=re.ASCII, na=False)
    elif rule.kind == "range":
        regex, low, high = rule.arg
        shape = regex

        def check(values: pd.Series) -> pd.Series:
            ok = values.str.fullmatch(shape, flags=re.ASCII, na=False)
            return ok & pd.to_numeric(values.where(ok), errors="coerce").between(low, high)
    elif rule.kind == "boolean":
        tokens = frozenset(rule.arg)

        def check(values: pd.Series) -> pd.Series:
            return values.str.lower().isin(tokens)
    else:
        raise ValueError(f"unknown rule kind {rule.kind!r}")

    def with_missing(values: pd.Series) -> pd.Series:
        return values.isin(missing) | check(values) if missing else check(values)

    return with_missing


def _unique_check(rule: Rule) -> pa.Check:
    import pandera.pandas as pa

    columns = list(rule.arg)

    def check(frame: pd.DataFrame) -> pd.Series:
        complete = frame[columns].notna().all(axis=1)
        return ~(frame.duplicated(subset=columns, keep=False) & complete)

    return pa.Check(check, name=rule.name)


def pandera_schema(contract: SourceContract) -> pa.DataFrameSchema:
    """The contract as a Pandera schema of the raw frame: every column text, in file order.

    Column checks are named by ``check`` (``not_nullable`` is Pandera's own); the key's rule is a
    frame-wide check named by its full rule name. ``strict`` and ``ordered``: the header is the contract's.
    """
    import pandera.pandas as pa

    columns: dict[str, pa.Column] = {}
    frame_checks: list[pa.Check] = []
    by_column: dict[str, list[Rule]] = {}
    for rule in rules(contract):
        if rule.cross_row:
            frame_checks.append(_unique_check(rule))
        else:
            by_column.setdefault(rule.column, []).append(rule)
    for name, column_rules in by_column.items():
        checks = [pa.Check(_series_check(r), name=r.check) for r in column_rules if r.kind != "not_null"]
        columns[name] = pa.Column(str, checks, nullable=False, coerce=False)
    return pa.DataFrameSchema(columns, checks=frame_checks, strict=True, ordered=True, coerce=False,
                              name=f"{contract.name}_raw")


_HEADER_CHECKS = frozenset({"column_in_dataframe", "column_in_schema", "column_ordered"})
"""Frame-wide checks whose failure case is a column name (never a value of the file)."""


def pandera_failures(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> dict[object, set[str]]:
    """Row index → names of the rules it fails (``column:check``), every failure collected.

    A failure that concerns no row (a missing or extra column, a wrong dtype) raises
    ``ValueError`` naming column and check, never a value.
    """
    import pandera.pandas as pa

    reasons: dict[object, set[str]] = {}
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        for column, check, index in cases[cases["index"].notna()][["column", "check", "index"]].itertuples(index=False):
            name = check if ":" in str(check) else f"{column}:{check}"
            reasons.setdefault(index, set()).add(name)
        whole = cases[cases["index"].isna()]
        if not whole.empty:
            summary = sorted({f"{case if k in _HEADER_CHECKS else c}:{k}"
                              for c, k, case in whole[["column", "check", "failure_case"]].itertuples(index=False)})
            raise ValueError(f"the frame fails the contract as a whole: {', '.join(summary)}") from None
    return reasons


# --------------------------------------------------------------------------------------------
# Sensitive attributes
# --------------------------------------------------------------------------------------------


def sensitive_attribute_sql(contract: SourceContract, name: str, alias: str = "s") -> str:
    """SQL giving a sensitive attribute's group (text, never NULL when a ``missing_group`` is set)
    from the source's typed staging row ``alias``: bands cut at the edges, values renamed by
    ``labels``, a missing value as ``missing_group``."""
    attribute = contract.sensitive_attributes[name]
    column = f"{alias}.{_quote(attribute.column or name)}"
    if attribute.bands is not None:
        edges = attribute.bands
        cases = " ".join(f"WHEN {column} >= {lo} AND {column} < {hi} THEN {_literal(label)}"
                         for (lo, hi), label in zip(zip(edges, edges[1:]), band_labels(edges)))
        expression = f"CASE {cases} END"
    elif attribute.labels:
        text = f"CAST({column} AS VARCHAR)"
        cases = " ".join(f"WHEN {text} = {_literal(value)} THEN {_literal(label)}"
                         for value, label in attribute.labels.items())
        expression = f"CASE {cases} ELSE {text} END"
    else:
        expression = f"CAST({column} AS VARCHAR)"
    if attribute.missing_group is not None:
        expression = f"coalesce({expression}, {_literal(attribute.missing_group)})"
    return expression
