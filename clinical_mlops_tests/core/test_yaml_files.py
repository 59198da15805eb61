"""Contracts and cohorts are parsed by libyaml when PyYAML has it: the same values, the same errors."""

from __future__ import annotations

import pytest
import yaml

from clinical_mlops.core import yaml_files
from clinical_mlops.core.settings import PROJECT_ROOT
from clinical_mlops.sources import contract

PROJECT_YAML = sorted(p for d in ("sources", "cohorts", "governance") for p in (PROJECT_ROOT / d).rglob("*.y*ml"))


@pytest.mark.parametrize("path", PROJECT_YAML, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_project_file_reads_as_the_pure_python_loader_reads_it(path):
    text = path.read_text()
    assert yaml_files.load(text) == yaml.safe_load(text)
    assert (yaml_files.load(text, contract._UniqueKeyLoader, contract._FastUniqueKeyLoader)
            == yaml.load(text, Loader=contract._UniqueKeyLoader))  # noqa: S506 - a safe loader


@pytest.mark.parametrize("text", ["a: [1, 2\nb: 3\n", "a: 1\n\tb: 2\n", "a: 1\nb:\n  c: 2\n  c: 3\n"])
def test_a_bad_document_fails_with_the_pure_python_loaders_error(text):
    for loader, fast in ((yaml.SafeLoader, None), (contract._UniqueKeyLoader, contract._FastUniqueKeyLoader)):
        try:
            expected = repr(yaml.load(text, Loader=loader))  # noqa: S506 - a safe loader
        except yaml.YAMLError as error:
            expected = str(error)
        try:
            got = repr(yaml_files.load(text, loader, fast))
        except yaml.YAMLError as error:
            got = str(error)
        assert got == expected


def test_the_fast_loader_is_libyaml_when_available():
    assert yaml_files.FAST_SAFE_LOADER is getattr(yaml, "CSafeLoader", yaml.SafeLoader)
