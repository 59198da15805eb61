"""Provenance facts recorded with every model: code, environment and data versions."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from clinical_mlops.core.settings import PROJECT_ROOT

__all__ = [
    "TRACKED_PACKAGES",
    "code_provenance",
    "git_commit",
    "git_dirty",
    "lock_file_sha256",
    "package_versions",
    "pip_requirements",
]

TRACKED_PACKAGES = ("dagster", "mlflow", "scikit-learn", "pandas", "numpy", "duckdb", "pandera", "evidently", "fairlearn")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_commit() -> str:
    """The checked-out commit, or "unknown" outside a git checkout."""
    return _git("rev-parse", "HEAD") or "unknown"


def git_dirty() -> bool:
    """Whether tracked files differ from the commit (so the commit alone does not rebuild it)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return bool(status)


def lock_file_sha256(path: Path = PROJECT_ROOT / "uv.lock") -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


def pip_requirements() -> list[str]:
    """Pinned requirements of the key packages, for a logged model's environment."""
    return [f"{k}=={v}" for k, v in package_versions().items() if k != "python" and v != "absent"]


def code_provenance() -> dict[str, str]:
    """Commit, dirtiness, lock hash and key package versions, as flat strings."""
    return {
        "git_commit": git_commit(),
        "git_dirty": str(git_dirty()).lower(),
        "lock_sha256": lock_file_sha256(),
        **{f"version.{k}": v for k, v in package_versions().items()},
    }
