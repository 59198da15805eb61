"""Source contracts: one YAML file per source in a ``sources/`` folder the user owns.

The folder is ``<project root>/sources`` unless ``CLINICAL_MLOPS_SOURCES_DIR`` names another.
A contract is loaded strictly: an unknown key, a wrong type, a duplicated YAML key or a field
naming a column the contract lacks is a :class:`ContractError` whose message is one line naming
the file and the field, e.g. ``sources/x.yaml: columns.age.type: unknown type 'int64' (…)``.
Each loaded source carries the sha256 of its file's bytes (the contract version).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from clinical_mlops.core import yaml_files
from clinical_mlops.core.settings import PROJECT_ROOT
from clinical_mlops.sources._model import (
    COLUMN_TYPES,
    Column,
    FileFormat,
    IdentifierExemption,
    Key,
    KnownExtract,
    Pattern,
    Range,
    Roles,
    SensitiveAttribute,
    SourceContract,
    band_labels,
)

__all__ = [
    "COLUMN_TYPES", "CONTRACT_SUFFIX", "SOURCES_DIR_ENV", "Column", "ContractError", "FileFormat",
    "IdentifierExemption", "Key", "KnownExtract", "LoadedSource", "Pattern", "Range", "Roles",
    "SensitiveAttribute", "SourceContract", "band_labels", "load_all_sources", "load_contract_file",
    "load_source", "parse_contract", "sources_dir",
]

SOURCES_DIR_ENV = "CLINICAL_MLOPS_SOURCES_DIR"
CONTRACT_SUFFIX = ".yaml"


class ContractError(ValueError):
    """A contract that cannot be used; ``str()`` is one line: ``<file>: <field>: <problem>``."""

    def __init__(self, file: str, field: str, problem: str) -> None:
        self.file, self.field, self.problem = file, field, problem
        super().__init__(f"{file}: {field}: {problem}" if field else f"{file}: {problem}")


@dataclass(frozen=True)
class LoadedSource:
    """A validated contract with the file it came from and the sha256 of that file's bytes."""

    contract: SourceContract
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.contract.name


def sources_dir() -> Path:
    """Where the contracts live: ``$CLINICAL_MLOPS_SOURCES_DIR`` or ``<project root>/sources``."""
    override = os.environ.get(SOURCES_DIR_ENV)
    return Path(override) if override else PROJECT_ROOT / "sources"


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a mapping with the same key twice (YAML itself keeps the last)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


class _FastUniqueKeyLoader(yaml_files.FAST_SAFE_LOADER):
    """:class:`_UniqueKeyLoader` on libyaml's parser (see :mod:`clinical_mlops.core.yaml_files`)."""


_FastUniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _field(location: tuple) -> str:
    return ".".join(str(part) for part in location)


def _problem(error: dict) -> tuple[str, str]:
    """The field path and message of one pydantic error (a cross-check carries its own path)."""
    message = error["msg"].removeprefix("Value error, ")
    field = _field(error["loc"])
    if error["type"] == "value_error" and ": " in message:
        inner, _, rest = message.partition(": ")
        if " " not in inner:  # a path raised by a model validator, relative to the location
            field, message = ".".join(p for p in (field, inner) if p), rest
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key missing"
    return field, message


def parse_contract(data: object, file: str) -> SourceContract:
    """Validate parsed YAML as a contract; the first problem raises a one-line :class:`ContractError`."""
    if not isinstance(data, dict):
        raise ContractError(file, "", "a contract is a YAML mapping of keys to values")
    try:
        return SourceContract.model_validate(data)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        field, message = _problem(errors[0])
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ContractError(file, field, message + more) from None


def load_contract_file(path: Path) -> LoadedSource:
    """Read, parse and validate one contract file; the source's name must be the file's stem."""
    path = Path(path)
    file = _display(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ContractError(file, "", f"cannot be read ({error.strerror or error})") from None
    try:
        data = yaml_files.load(raw.decode("utf-8"), _UniqueKeyLoader, _FastUniqueKeyLoader)
    except UnicodeDecodeError:
        raise ContractError(file, "", "is not valid UTF-8") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise ContractError(file, where, f"invalid YAML: {problem}") from None
    if isinstance(data, dict) and "same_as" in data:
        data, raw = _inherit(data, path, file, raw)
    contract = parse_contract(data, file)
    if contract.name != path.stem:
        raise ContractError(file, "name", f"{contract.name!r} does not match the file name {path.stem!r}")
    return LoadedSource(contract=contract, path=path, sha256=hashlib.sha256(raw).hexdigest())


_OWN_KEYS = ("name", "description", "provenance", "licence", "extracts", "notes")
"""What a contract declared ``same_as: <other>`` states itself; everything else is the other's."""


def _inherit(data: dict, path: Path, file: str, raw: bytes) -> tuple[dict, bytes]:
    """A contract ``same_as`` another: the other's format, columns, roles, key, exemptions and
    sensitive attributes, with its own name, description, provenance, licence and extracts.

    Its version covers both files: the returned bytes are its own followed by the other's.
    """
    base_name = data.pop("same_as")
    extra = sorted(set(data) - set(_OWN_KEYS))
    if extra:
        raise ContractError(file, extra[0], f"a contract 'same_as' another states only {', '.join(_OWN_KEYS)}")
    base_path = path.parent / f"{base_name}{CONTRACT_SUFFIX}"
    if not isinstance(base_name, str) or base_name == path.stem or not base_path.is_file():
        raise ContractError(file, "same_as", f"{base_name!r} is not another source in {_display(path.parent)}")
    base = load_contract_file(base_path)
    merged = {**base.contract.model_dump(mode="python", exclude_defaults=False), "extracts": [], "notes": []}
    merged.update(data)
    return merged, raw + base.path.read_bytes()


def _contract_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise ContractError(_display(directory), "", f"no sources folder here (set {SOURCES_DIR_ENV} to another)")
    return sorted(p for p in directory.iterdir() if p.suffix == CONTRACT_SUFFIX and p.is_file())


def load_source(name: str, directory: Path | None = None) -> LoadedSource:
    """The contract ``<sources dir>/<name>.yaml``; an unknown name lists the sources there."""
    directory = Path(directory) if directory is not None else sources_dir()
    path = directory / f"{name}{CONTRACT_SUFFIX}"
    if not path.is_file():
        known = ", ".join(p.stem for p in _contract_files(directory)) or "none"
        raise ContractError(_display(path), "", f"no source named {name!r} (sources: {known})")
    return load_contract_file(path)


_LOADED: dict[tuple, dict[str, LoadedSource]] = {}


def load_all_sources(directory: Path | None = None) -> dict[str, LoadedSource]:
    """Every contract of the sources folder, by name (the first malformed one raises); read once per state of
    the folder's files (names, sizes, modification times)."""
    directory = Path(directory) if directory is not None else sources_dir()
    files = _contract_files(directory)
    key = (str(directory.resolve()), tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = {(source := load_contract_file(path)).name: source for path in files}
    return dict(_LOADED[key])
