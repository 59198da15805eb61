"""HIPAA Safe Harbor identifier scan and keyed pseudonymisation.

Two jobs, both meant to run *before* data enters features, exports or metadata:

* **Identifier scan** (45 CFR §164.514(b)(2), the 18 Safe Harbor identifiers).
  :func:`scan_column_names` flags columns whose *name* suggests a direct identifier;
  :func:`scan_table_values` counts, in one DuckDB statement, the rows whose *values* look
  like one (SSN, e-mail, phone, full date, ZIP code, URL, IPv4 address, MRN, street
  address, person name).  A finding records the column, the kind of identifier, where it
  was seen and how many rows matched -- never the value itself, so findings are safe to
  log, to put in asset metadata and in audit trails.

* **Keyed pseudonymisation**: HMAC-SHA256 of an identifier under a secret key, truncated
  to a fixed number of hex characters.  :func:`pseudonymise` is the Python reference and
  :func:`hmac_sql` builds a pure DuckDB SQL expression that computes exactly the same
  value, vectorised, with no Python UDF (``sha256`` over BLOBs, ``unhex`` and BLOB
  literals for the padded keys).  :func:`key_fingerprint` records *which* key was used
  without revealing it.

The Diabetes 130 release is already de-identified by its publishers: scanning all of its
50 columns (with the two declared id columns ``encounter_id``/``patient_nbr`` exempt, since
their 5- to 9-digit codes are not ZIPs) gives no finding.  The heuristics are conservative
by design: a finding is a reason for a human to look, not proof of PHI.
"""

from clinical_mlops.ingestion.deid._pseudonym import (
    DEVELOPMENT_KEY,
    PSEUDONYM_KEY_ENV,
    hmac_sql,
    key_fingerprint,
    pseudonym_key_from_env,
    pseudonymise,
)
from clinical_mlops.ingestion.deid._scan import (
    IDENTIFIER_KINDS,
    MIN_IDENTIFIER_LENGTH,
    NAME_STOPWORDS_PATTERN,
    VALUE_PATTERNS,
    IdentifierFinding,
    scan_column_names,
    scan_table_values,
)

__all__ = [
    "DEVELOPMENT_KEY",
    "IDENTIFIER_KINDS",
    "MIN_IDENTIFIER_LENGTH",
    "NAME_STOPWORDS_PATTERN",
    "PSEUDONYM_KEY_ENV",
    "VALUE_PATTERNS",
    "IdentifierFinding",
    "hmac_sql",
    "key_fingerprint",
    "pseudonym_key_from_env",
    "pseudonymise",
    "scan_column_names",
    "scan_table_values",
]
