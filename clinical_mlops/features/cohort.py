"""Cohort specifications: what a use case predicts, for whom, from which source and features.

A cohort is a YAML file in the top-level ``cohorts/`` folder (or ``$CLINICAL_MLOPS_COHORTS_DIR``)
naming its ``source:`` (one, or a list), plus SQL beside it: the source's base feature SQL
(``base_sql:``, default ``<source>.sql``, reading ``source_rows``, the source's validated rows)
and optionally the cohort's own (``<cohort>.sql``, reading ``cohort_base``). A new source and
cohort are files only. A cohort on several sources is one :class:`CohortSpec` per source, named
``<source>_<cohort>``: its features, models and reports never mix the sources.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from clinical_mlops.core import yaml_files
from clinical_mlops.core.settings import PROJECT_ROOT
from clinical_mlops.features import _sql_check

__all__ = ["COHORTS_DIR_ENV", "MOMENTS", "SPLIT_STRATEGIES", "CohortSpec", "CohortSpecError", "Exclusion",
    "PredictionTime", "cohorts_dir", "load_all_cohorts", "load_cohort", "parse_cohort_spec"]

COHORTS_DIR_ENV = "CLINICAL_MLOPS_COHORTS_DIR"
SPLIT_STRATEGIES = ("patient_hash", "row")
"""``patient_hash``: all rows of a patient on one side; ``row``: by row, for a source without a patient id."""


def cohorts_dir() -> Path:
    """Where the cohort files live: ``$CLINICAL_MLOPS_COHORTS_DIR`` or ``<project root>/cohorts``."""
    override = os.environ.get(COHORTS_DIR_ENV)
    return Path(override) if override else PROJECT_ROOT / "cohorts"

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
MOMENTS: tuple[str, ...] = ("admission", "during_stay", "discharge")
"""The moments of an encounter, in order, at which a prediction is made or a feature's value is complete."""


class CohortSpecError(ValueError):
    """A cohort specification is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Exclusion:
    name: str
    sql: str
    reason: str


@dataclass(frozen=True)
class PredictionTime:
    """When the prediction is made, and when each feature's value is complete — as the spec declares it."""

    at: str
    """One of :data:`MOMENTS`."""
    statement: str
    features_available_at: tuple[tuple[str, tuple[str, ...]], ...]
    """(moment, the features whose value is complete at that moment), declared features only, in spec order."""
    limitation: str = ""

    def available_at(self, feature: str) -> str | None:
        return next((m for m, names in self.features_available_at if feature in names), None)

    def late_features(self) -> tuple[str, ...]:
        """Declared features whose value is complete only after the prediction time."""
        cutoff = MOMENTS.index(self.at)
        return tuple(f for m, names in self.features_available_at if MOMENTS.index(m) > cutoff for f in names)


@dataclass(frozen=True)
class CohortSpec:
    """One use case on one source: target, exclusions, features, sensitive attributes, split and threshold.

    ``name`` identifies it everywhere (asset keys, tables, model names): the cohort's own name when its
    file names one source, ``<source>_<cohort>`` when it names several.
    """

    name: str
    title: str
    intended_use: str
    target_column: str
    target_sql: str
    target_definition: str
    target_source: str
    exclusions: tuple[Exclusion, ...]
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    sensitive_attributes: tuple[str, ...]
    split_strategy: str
    test_fraction: float
    split_seed: int
    threshold_strategy: str
    threshold_value: float
    spec_hash: str
    prediction_time: PredictionTime | None = None
    """None when the spec declares no prediction time: the card then says "not reported"."""
    source: str = ""
    """The source contract it is built on (``sources/<source>.yaml``)."""
    cohort: str = ""
    """The cohort file's own name (``name`` in it), shared by every source it names."""
    base_sql: str = ""
    cohort_sql: str = ""
    sql_files: tuple[str, ...] = ()
    """The SQL files beside the cohort file that define its features (base, then the cohort's own)."""
    contract_sha256: str = ""
    """The version of the source contract it was checked against (part of every asset's code version)."""

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric_features + self.categorical_features

    @property
    def features_table(self) -> str:
        return f"features.{self.name}"

    @property
    def excluded_sql(self) -> str:
        """SQL true for an encounter any exclusion removes (``FALSE`` when the cohort has none)."""
        return " OR ".join(f"({e.sql})" for e in self.exclusions) or "FALSE"


def _require(raw: dict[str, Any], key: str, source: str) -> Any:
    if key not in raw or raw[key] in (None, ""):
        raise CohortSpecError(f"{source}: missing required field '{key}'")
    return raw[key]


def _prediction_time(raw: Any, features: tuple[str, ...], source: str) -> PredictionTime | None:
    """The optional ``prediction_time`` block: ``at`` (a moment), ``statement``, ``features_available_at``."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise CohortSpecError(f"{source}: prediction_time must be a mapping with 'at' and 'statement'")
    at = _require(raw, "at", f"{source} prediction_time")
    if at not in MOMENTS:
        raise CohortSpecError(f"{source}: prediction_time.at '{at}' must be one of {', '.join(MOMENTS)}")
    available: list[tuple[str, tuple[str, ...]]] = []
    seen: set[str] = set()
    for moment, names in (raw.get("features_available_at") or {}).items():
        if moment not in MOMENTS:
            raise CohortSpecError(f"{source}: prediction_time.features_available_at.{moment} is not one of "
                                  f"{', '.join(MOMENTS)}")
        unknown = sorted(set(names or ()) - set(features))
        if unknown:
            raise CohortSpecError(f"{source}: prediction_time.features_available_at.{moment} lists columns that are "
                                  f"not features: {unknown}")
        twice = sorted(seen & set(names or ()))
        if twice:
            raise CohortSpecError(f"{source}: prediction_time.features_available_at lists {twice} at two moments")
        seen |= set(names or ())
        available.append((moment, tuple(names or ())))
    return PredictionTime(at=at, statement=str(_require(raw, "statement", f"{source} prediction_time")).strip(),
                          features_available_at=tuple(available), limitation=str(raw.get("limitation") or "").strip())


def parse_cohort_spec(text: str, source: str = "<string>") -> CohortSpec:
    """Parse and validate a cohort spec, with errors that name the field at fault."""
    raw = yaml_files.load(text)
    if not isinstance(raw, dict):
        raise CohortSpecError(f"{source}: expected a mapping at the top level")
    name = _require(raw, "name", source)
    if not _IDENTIFIER.match(name):
        raise CohortSpecError(f"{source}: name '{name}' must be lower_snake_case")
    target = _require(raw, "target", source)
    features = _require(raw, "features", source)
    numeric = tuple(features.get("numeric") or ())
    categorical = tuple(features.get("categorical") or ())
    if not numeric and not categorical:
        raise CohortSpecError(f"{source}: features must list numeric and/or categorical columns")
    overlap = set(numeric) & set(categorical)
    if overlap:
        raise CohortSpecError(f"{source}: features listed as both numeric and categorical: {sorted(overlap)}")
    split = raw.get("split") or {}
    test_fraction = float(split.get("test_fraction", 0.2))
    if not 0.05 <= test_fraction <= 0.5:
        raise CohortSpecError(f"{source}: split.test_fraction must be within [0.05, 0.5]")
    strategy = split.get("strategy", "patient_hash")
    if strategy not in SPLIT_STRATEGIES:
        raise CohortSpecError(f"{source}: split.strategy: '{strategy}' is not one of {', '.join(SPLIT_STRATEGIES)}")
    threshold = raw.get("operating_threshold") or {}
    return CohortSpec(
        name=name,
        title=_require(raw, "title", source),
        intended_use=str(raw.get("intended_use", "")).strip(),
        target_column=_require(target, "column", f"{source} target"),
        target_sql=_require(target, "sql", f"{source} target"),
        target_definition=_require(target, "definition", f"{source} target"),
        target_source=_require(target, "source", f"{source} target"),
        exclusions=tuple(
            Exclusion(name=e["name"], sql=e["sql"], reason=e.get("reason", "")) for e in raw.get("exclusions") or ()
        ),
        numeric_features=numeric,
        categorical_features=categorical,
        sensitive_attributes=tuple(_require(raw, "sensitive_attributes", source)),
        split_strategy=strategy,
        test_fraction=test_fraction,
        split_seed=int(split.get("seed", 0)),
        threshold_strategy=threshold.get("strategy", "top_fraction"),
        threshold_value=float(threshold.get("value", 0.2)),
        spec_hash=hashlib.sha256(text.encode()).hexdigest(),
        prediction_time=_prediction_time(raw.get("prediction_time"), numeric + categorical, source),
    )


def _sources_of(raw: dict[str, Any], file: str) -> tuple[str, ...]:
    named = raw.get("source")
    if isinstance(named, str) and named:
        return (named,)
    if isinstance(named, list) and named and all(isinstance(n, str) and n for n in named):
        if len(set(named)) != len(named):
            raise CohortSpecError(f"{file}: source: names a source twice")
        return tuple(named)
    raise CohortSpecError(f"{file}: source: required, the name of a source contract (or a list of names)")


def _read_sql(directory: Path, name: str, file: str, field: str) -> str:
    path = directory / name
    if Path(name).name != name or not path.is_file():
        raise CohortSpecError(f"{file}: {field}: no SQL file {name!r} beside the cohort file")
    return path.read_text()


def _specs_of_file(path: Path) -> list[CohortSpec]:
    """The cohort file as one spec per source it names, SQL read from beside it (not yet checked)."""
    from dataclasses import replace

    file = _display(path)
    text = path.read_text()
    try:
        raw = yaml_files.load(text)
    except yaml.YAMLError as error:
        raise CohortSpecError(f"{file}: invalid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(raw, dict):
        raise CohortSpecError(f"{file}: expected a mapping at the top level")
    sources = _sources_of(raw, file)
    spec = parse_cohort_spec(text, source=file)
    if spec.name != path.stem:
        raise CohortSpecError(f"{file}: name: {spec.name!r} does not match the file name {path.stem!r}")
    specs = []
    for source in sources:
        try:
            _sql_check.known_source(source, file)
        except _sql_check.CohortProblem as problem:
            raise CohortSpecError(str(problem)) from None
        base_name = raw.get("base_sql") or f"{source}.sql"
        base = _read_sql(path.parent, str(base_name), file, "base_sql")
        own_file = path.with_suffix(".sql")
        own = own_file.read_text() if own_file.is_file() else ""
        files = (str(base_name),) + ((own_file.name,) if own else ())
        digest = hashlib.sha256("\0".join([text, base, own]).encode()).hexdigest()
        specs.append(replace(spec, name=spec.name if len(sources) == 1 else f"{source}_{spec.name}", source=source,
                             cohort=spec.name, base_sql=base, cohort_sql=own, sql_files=files, spec_hash=digest))
    return specs


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _fingerprint(*folders: Path) -> tuple:
    """Names, sizes and modification times of the files in ``folders``: a changed file changes it."""
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for folder in folders if folder.is_dir()
                 for p in sorted(folder.iterdir()) if p.is_file())


_LOADED: dict[tuple, list[CohortSpec]] = {}


def load_all_cohorts(directory: Path | None = None) -> list[CohortSpec]:
    """Every cohort of the folder (see :func:`_load_all_cohorts`), loaded once per state of its files and of
    the source contracts' (the Definitions ask for them from every module)."""
    from clinical_mlops.sources.contract import sources_dir

    directory = Path(directory) if directory is not None else cohorts_dir()
    key = (str(directory.resolve()), str(sources_dir().resolve()), _fingerprint(directory, sources_dir()))
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = _load_all_cohorts(directory)
    return list(_LOADED[key])


def _load_all_cohorts(directory: Path) -> list[CohortSpec]:
    """Every cohort of the folder, one spec per (cohort, source), checked against its source contract.

    A malformed cohort raises :class:`CohortSpecError` naming the file and the field: an unknown source,
    a sensitive attribute the source does not declare, SQL that reads a column the source lacks, a
    feature, exclusion or target the SQL does not provide.
    """
    if not directory.is_dir():
        raise CohortSpecError(f"{_display(directory)}: no cohorts folder here (set {COHORTS_DIR_ENV} to another)")
    specs = [spec for path in sorted(directory.glob("*.yaml")) for spec in _specs_of_file(path)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise CohortSpecError(f"{_display(directory)}: two cohorts are both named {twice[0]!r}")
    from dataclasses import replace

    checked = []
    for spec in specs:
        try:
            source = _sql_check.check_cohort(spec, _display(directory / f"{spec.cohort}.yaml"))
        except _sql_check.CohortProblem as problem:
            raise CohortSpecError(str(problem)) from None
        checked.append(replace(spec, contract_sha256=source.sha256))
    return checked


def load_cohort(name: str, directory: Path | None = None) -> CohortSpec:
    """The spec named ``name`` (``<cohort>`` or ``<source>_<cohort>``)."""
    specs = {s.name: s for s in load_all_cohorts(directory)}
    if name not in specs:
        raise CohortSpecError(f"no cohort named '{name}' (cohorts: {', '.join(specs) or 'none'})")
    return specs[name]
