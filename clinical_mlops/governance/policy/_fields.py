"""Field types of the policy models: pydantic validators that speak the policy's own words.

Each type checks one kind of value (a number in a range, a choice, a list of names …) and, when
the value is wrong, raises :func:`fail` with a message such as ``must be a number in (0, 1],
got 1.5``; pydantic supplies the field's location, and :mod:`._load` joins the two into the one
line a :class:`~clinical_mlops.governance.policy.PolicyError` carries. YAML's ``null`` counts as
absent: :func:`drop_none` removes it before validation, so a default applies or the field is
reported missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ConfigDict
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs, PydanticCustomError

__all__ = [
    "Flag",
    "Label",
    "Names",
    "NonEmptyNames",
    "Text",
    "arguments",
    "choice",
    "closed_section",
    "drop_none",
    "fail",
    "integer",
    "members",
    "number",
    "section",
]

section = dataclass(frozen=True, config=ConfigDict(extra="ignore"))
"""A policy section: a frozen pydantic dataclass (validated when built, also by ``dataclasses.replace``);
keys it does not declare are ignored."""
closed_section = dataclass(frozen=True, config=ConfigDict(extra="forbid"))
"""A section whose unknown keys are errors."""


def arguments(cls: type, data: Any) -> dict[str, Any] | None:
    """What a before-validator of section ``cls`` received, as a dict (a YAML mapping or init arguments)."""
    if isinstance(data, ArgsKwargs):
        names = [f.name for f in dataclasses.fields(cls)]
        return dict(zip(names, data.args)) | dict(data.kwargs or {})
    return dict(data) if isinstance(data, Mapping) else None


def fail(message: str, *, at: tuple[str | int, ...] = ()) -> PydanticCustomError:
    """A validation error whose message is used verbatim; ``at`` extends the field path below the value."""
    return PydanticCustomError("policy", "{message}", {"message": message, "at": at})


def drop_none(value: Any) -> Any:
    """The parsed YAML without ``null`` values in mappings (a ``null`` key means the key is absent)."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def number(low: float, high: float, *, low_open: bool = False, optional: bool = False) -> Any:
    """A float in ``[low, high]`` (``(low, high]`` when ``low_open``); booleans and strings are refused."""
    interval = f"{'(' if low_open else '['}{low}, {high}]"

    def check(value: Any) -> Any:
        if optional and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(f"must be a number, got {value!r}")
        value = float(value)
        if (value <= low if low_open else value < low) or value > high:
            raise fail(f"must be a number in {interval}, got {value:g}")
        return value

    return Annotated[float | None if optional else float, BeforeValidator(check)]


def integer(low: int) -> Any:
    """An integer ``>= low`` (booleans and floats are refused)."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise fail(f"must be an integer >= {low}, got {value!r}")
        return int(value)

    return Annotated[int, BeforeValidator(check)]


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail("must be a non-empty string")
    return value.strip()


def _label(value: Any) -> str:
    if str(value).strip() == "":
        raise fail("is required but missing")
    return str(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(f"must be true or false, got {value!r}")
    return value


def _names(*, allow_empty: bool) -> Callable[[Any], tuple[str, ...]]:
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise fail("must be a list of strings")
        if not allow_empty and not value:
            raise fail("must not be empty")
        return tuple(value)

    return check


def members(options: Collection[str], *, what: str = "") -> Callable[[tuple[str, ...]], tuple[str, ...]]:
    """An after-validator: every name in the tuple is one of ``options``."""

    def check(values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if value not in options:
                if what:
                    raise fail(f"names unknown {what} '{value}' (expected one of {', '.join(options)})")
                raise fail(f"'{value}' is not one of {', '.join(sorted(options))}")
        return values

    return check


def choice(options: Collection[str]) -> Any:
    """A non-empty string that is one of ``options``."""

    def check(value: str) -> str:
        if value not in options:
            raise fail(f"'{value}' is not one of {', '.join(sorted(options))}")
        return value

    return Annotated[str, BeforeValidator(_text), AfterValidator(check)]


Text = Annotated[str, BeforeValidator(_text)]
"""A non-empty string, stripped."""
Label = Annotated[str, BeforeValidator(_label)]
"""Any non-blank scalar, as its string (``version: 2026.11`` reads as ``"2026.11"``)."""
Flag = Annotated[bool, BeforeValidator(_flag)]
"""``true`` or ``false``, nothing else."""
Names = Annotated[tuple[str, ...], BeforeValidator(_names(allow_empty=True))]
"""A list of non-empty strings, as a tuple."""
NonEmptyNames = Annotated[tuple[str, ...], BeforeValidator(_names(allow_empty=False))]
"""A list of at least one non-empty string, as a tuple."""
