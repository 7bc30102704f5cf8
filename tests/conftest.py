"""Shared test fixtures: where the real data lives, and the synthetic city."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    """The shared real-data folder beside the checkout (CI always has it; a user's clone may not)."""
    candidates = [os.environ.get("CIM_SHARED_DATA"), REPO.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "MANIFEST.md").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data``; skips the test with a reason when it is absent."""
    path = _shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is absent (it ships with CI and developer checkouts, not with a user's clone)")
    return path


@pytest.fixture(scope="session")
def repo_data() -> Path:
    """Path to the small real dataset shipped inside the repository (``data/``)."""
    return REPO / "data"
