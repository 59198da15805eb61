"""Sources as data contracts: one YAML file per source, and everything derived from it.

:mod:`.contract` is the format of a contract file (columns, roles, key, identifier-scan
exemptions, sensitive attributes) and its loader (``sources/`` at the project root, or
``CLINICAL_MLOPS_SOURCES_DIR``); :mod:`.derive` renders one contract as the Pandera schema and
as the SQL rules over a raw, all-VARCHAR staging table, the same rule list in both; :mod:`.draft`
drafts a contract from a sample file for review (``clinical-mlops source init``); :mod:`.tables`
names and shapes a source's own raw, staging and quarantine tables; :mod:`.matching` finds the
source a file belongs to from its header.
"""

__all__ = ["contract", "derive", "draft", "matching", "tables"]
