"""The model registry with a history: MLflow aliases, and an append-only record of every move.

MLflow keeps only the *current* alias of a registered model (``champion``, ``challenger``), so
"which version was in production on date D" cannot be answered from MLflow alone (mlflow issue
2169). Every alias change made through this module is therefore also appended to
``audit.alias_history`` — model, alias, version, previous version, action, actor, reason, the
meaning of the signature, the governance policy's hash and the UTC time — in the same step, so
the champion at any time T is one query (:func:`champion_at`).

Rows are only ever inserted: a rollback is a new row that restores the previous champion, not
an edit of the one it undoes. Rollback follows the champion *lineage*: promotions push a version,
rollbacks pop one, so two rollbacks after three promotions restore the first champion.

Registered models are named ``<cohort>_<role>`` (``readmission_30d_candidate``); the functions
take any model name. A cohort has **one** champion across the roles that may serve
(:data:`CHAMPION_ROLES`: the candidate and its mitigated challenger): promoting one clears the
``champion`` alias of the other, recorded as a ``clear`` change, and :func:`cohort_champion` says
which (model, version) is the cohort's champion.
"""

from clinical_mlops.registry.aliases._history import (
    CHALLENGER,
    CHAMPION,
    CHAMPION_ROLES,
    AliasChange,
    RegistryError,
    alias_at,
    champion_at,
    champion_lineage,
    cohort_champion,
    cohort_model_names,
    current_alias,
    ensure_tables,
    history,
    to_utc_naive,
)
from clinical_mlops.registry.aliases._loading import ScoringModel, load_scoring_model, model_signature_columns
from clinical_mlops.registry.aliases._moves import inconsistencies, mlflow_aliases, promote, rollback, set_alias

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "CHAMPION_ROLES",
    "AliasChange",
    "RegistryError",
    "ScoringModel",
    "alias_at",
    "champion_at",
    "champion_lineage",
    "cohort_champion",
    "cohort_model_names",
    "current_alias",
    "ensure_tables",
    "history",
    "inconsistencies",
    "load_scoring_model",
    "mlflow_aliases",
    "model_signature_columns",
    "promote",
    "rollback",
    "set_alias",
    "to_utc_naive",
]
