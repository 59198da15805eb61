"""YAML read with libyaml's parser where PyYAML has it: the same values, several times faster.

``CSafeLoader`` is libyaml's parser with PyYAML's own ``SafeConstructor`` and ``Resolver``, so a document
it accepts gives exactly the values ``yaml.safe_load`` gives. A document it refuses is parsed again by
the pure-Python loader, so the error (its message and marks) is the one the project always reported.
Every source contract and cohort file is read at start-up by every command; this keeps that cheap.
"""

from __future__ import annotations

import yaml

__all__ = ["FAST_SAFE_LOADER", "load"]

FAST_SAFE_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(text: str | bytes, loader: type = yaml.SafeLoader, fast_loader: type | None = None):
    """``yaml.load(text, Loader=loader)``, parsed first by ``fast_loader`` (a libyaml twin of ``loader``;
    default :data:`FAST_SAFE_LOADER` when ``loader`` is ``SafeLoader``); on any YAML error, by ``loader``."""
    fast = fast_loader if fast_loader is not None else (FAST_SAFE_LOADER if loader is yaml.SafeLoader else loader)
    if fast is not loader:
        try:
            return yaml.load(text, Loader=fast)  # noqa: S506 - a safe loader
        except yaml.YAMLError:
            pass
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
