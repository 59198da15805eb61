"""A policy text that declares a source contract's sensitive attributes itself.

The shipped policy keeps thresholds, severities and owners; the groups are the source's
(``sources/<source>.yaml``). Tests of the policy model's own validation of attributes write
them into the policy file, in the policy's form, copied from the contract.
"""

from __future__ import annotations

from typing import Any


def declare_source_attributes(raw: dict[str, Any], source: str = "diabetes130") -> dict[str, Any]:
    """``raw`` (a parsed policy file) with ``fairness.sensitive_attributes`` and ``intersections`` of ``source``."""
    from clinical_mlops.sources.contract import load_source

    contract = load_source(source).contract
    attributes: dict[str, Any] = {}
    for name, attribute in contract.sensitive_attributes.items():
        entry: dict[str, Any] = {"reference": attribute.reference}
        if attribute.reference_population:
            entry["reference_population"] = dict(attribute.reference_population)
        if attribute.required_groups:
            entry["required_groups"] = list(attribute.required_groups)
        attributes[name] = entry
    raw["fairness"]["sensitive_attributes"] = attributes
    raw["fairness"]["intersections"] = [list(c) for c in contract.intersections]
    return raw
