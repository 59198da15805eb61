"""Reading the policy: YAML to validated :class:`Policy`, errors as one line, one cached object per file."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from clinical_mlops.core.settings import PROJECT_ROOT
from clinical_mlops.governance.policy._fields import drop_none
from clinical_mlops.governance.policy._models import Policy, PolicyDocument
from clinical_mlops.governance.policy._vocabulary import SEVERITIES, TOP_LEVEL_SECTIONS

__all__ = ["POLICY_ENV", "SHIPPED_POLICY_PATH", "PolicyError", "default_policy_path", "load_policy", "parse_policy"]

SHIPPED_POLICY_PATH = PROJECT_ROOT / "governance" / "policy.yaml"
"""The policy shipped with the project (``governance/policy.yaml``)."""
POLICY_ENV = "CLINICAL_MLOPS_POLICY"
"""The environment variable naming a deployment's own policy file."""


class PolicyError(ValueError):
    """The policy file is malformed; the message names the file and the field at fault."""


def default_policy_path() -> Path:
    """The policy in force: ``$CLINICAL_MLOPS_POLICY`` if set now, else the shipped one."""
    return Path(os.environ.get(POLICY_ENV) or SHIPPED_POLICY_PATH)


# --- pydantic's errors, in the policy's words --------------------------------------------------

_MISSING = frozenset({"missing", "missing_argument"})
_NOT_A_MAPPING = frozenset({"dataclass_type", "dataclass_args_type", "dict_type", "model_type", "mapping_type"})
_UNKNOWN_KEY = frozenset({"unexpected_keyword_argument", "extra_forbidden"})
# Sections that forbid unknown keys, and how their unknown keys are named.
_UNKNOWN_KEYS = {(): ("unknown top-level sections", TOP_LEVEL_SECTIONS), ("escalation",): ("has unknown severities", SEVERITIES)}


def _path(loc: tuple[Any, ...], raw: Any) -> str:
    """``('fairness', 'metrics', 0, 'max_difference')`` -> ``fairness.metrics.recall_gap.max_difference``.

    Sections keyed by name in the file are tuples in the model, so an index into a mapping of
    the file ``raw`` is shown as that mapping's key; an index into a list stays ``[i]``.
    """
    text, node = "", raw
    for part in loc:
        if isinstance(node, dict):
            if isinstance(part, int) and part < len(node):
                part = str(list(node)[part])
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _message(error: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    ctx = error.get("ctx") or {}
    loc = tuple(error["loc"]) + tuple(ctx.get("at", ()))
    if error["type"] == "policy":
        return loc, ctx["message"]
    if error["type"] in _MISSING:
        return loc, "is required but missing"
    if error["type"] in _NOT_A_MAPPING:
        return loc, f"must be a mapping, got {type(error['input']).__name__}"
    return loc, str(error["msg"]).rstrip(".").lower()


def _describe(exc: ValidationError, raw: Any) -> str:
    """Every problem as ``path message``, joined by ``; ``; unknown keys first, grouped per section."""
    unknown: dict[tuple[Any, ...], list[str]] = {}
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        if error["type"] in _UNKNOWN_KEY:
            unknown.setdefault(tuple(error["loc"][:-1]), []).append(str(error["loc"][-1]))
            continue
        loc, message = _message(error)
        problems.append(f"{_path(loc, raw)} {message}" if loc else message)
    for parent, keys in sorted(unknown.items(), key=lambda item: len(item[0]), reverse=True):  # top level first
        words, expected = _UNKNOWN_KEYS.get(parent, ("has unknown keys", ()))
        text = f"{_path(parent, raw)} {words}" if parent else words
        problems.insert(0, text + f" {sorted(keys)}" + (f" (expected {', '.join(expected)})" if expected else ""))
    return "; ".join(problems)


# --- parsing and loading -----------------------------------------------------------------------

_DOCUMENT = TypeAdapter(PolicyDocument)


def parse_policy(text: str | bytes, source: str = "<string>") -> Policy:
    """Parse and validate policy YAML; the hash is taken over the exact bytes given."""
    data = text.encode() if isinstance(text, str) else text
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: expected a mapping at the top level")
    raw = drop_none(raw)
    try:
        document = _DOCUMENT.validate_python(raw)
    except ValidationError as exc:
        raise PolicyError(f"{source}: {_describe(exc, raw)}") from None
    sections = {f.name: getattr(document, f.name) for f in dataclasses.fields(document)}
    return Policy(**sections, sha256=hashlib.sha256(data).hexdigest(), source=source)


_cache: dict[tuple[Path, str], tuple[str, Policy]] = {}
_cache_lock = threading.Lock()


def load_policy(path: Path | str | None = None) -> Policy:
    """The policy in ``path`` (default :func:`default_policy_path`), validated; :class:`PolicyError` if not.

    One object per file for the whole process: a second call returns the same :class:`Policy`
    while the file's bytes are unchanged (the file is re-read and its sha256 compared on every
    call, so an edited policy takes effect at once).
    """
    path = Path(path) if path is not None else default_policy_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(f"{path}: policy file not found") from None
    try:
        source = str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        source = str(path)
    key, digest = (path.resolve(), source), hashlib.sha256(data).hexdigest()
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and cached[0] == digest:
        return cached[1]
    policy = parse_policy(data, source=source)
    with _cache_lock:
        _cache[key] = (digest, policy)
    return policy
