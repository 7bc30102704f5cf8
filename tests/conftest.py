"""Shared test fixtures: where the real data lives, and the synthetic city."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import PLUGINS, checkout_stage_table, prepend_path, stale_stage_metadata, write_dist_info

REPO = Path(__file__).resolve().parents[1]


def _register_checkout_stages() -> None:
    """Stages are entry points, read from the installed metadata. When that predates this checkout's table (an
    editable install not re-run since pyproject.toml changed), register the checkout's table through a generated
    ``.dist-info`` on the path, for this process and its subprocesses."""
    if not stale_stage_metadata():
        return
    folder = Path(tempfile.mkdtemp(prefix="cim-stages-"))
    atexit.register(shutil.rmtree, folder, True)
    write_dist_info(folder, "cim-checkout-stages", checkout_stage_table())
    prepend_path(folder)


_register_checkout_stages()


@pytest.fixture
def plugin_stages(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test plug-in package ``cim_test_stages`` (tests/plugins) installed for one test: on the path of this
    process and its subprocesses, its stages registered through its ``.dist-info``."""
    from cim.pipeline.stage import _entry_points

    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])))
    _entry_points.cache_clear()
    yield PLUGINS
    _entry_points.cache_clear()


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


# --- synth fixtures (issue 3) ---
SYNTH_TEST_CONFIG = dict(
    extent=150.0, seed=11, als_density=10.0, drive_length=150.0, mls_pulse_rate=20_000.0, mls_line_rate=25.0,
    panorama_width=512, panorama_spacing=30.0, panorama_count=4, dtm_resolution=1.0,
)


@pytest.fixture(scope="session")
def synth_city(tmp_path_factory: pytest.TempPathFactory):
    """A small synthetic city (150 m block, every roof type, ALS ~10 pts/m², a short MLS drive, 4 panoramas
    of 512x256) generated once per session; see ``cim.synth``."""
    from cim.synth import SynthConfig, generate

    return generate(tmp_path_factory.mktemp("synth_city"), SynthConfig(**SYNTH_TEST_CONFIG))
# --- end synth fixtures ---
