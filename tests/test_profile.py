"""The run timeline's analysis (critical path, serial share, stage table) and ``profile.html``."""

from __future__ import annotations

import json
import threading
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cim.runner.timeline import analyse
from tests.helpers import REPO, cim_cli, delft_job, ground_dsm_stages, write_job


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of ``cim run --profile`` on the two Delft files (849k points, nine 100 m tiles): a
    point-modifying stage, a raster with a finish, write.las."""
    root = tmp_path_factory.mktemp("profile")
    out = root / "o"
    job = write_job(root / "job.toml", delft_job(out, extra=ground_dsm_stages(2.0)))
    done = cim_cli("run", str(job), "--scheduler", "threads", "--workers", "2", "--profile")
    assert done.returncode == 0, done.stderr
    return out


def _task(key: str, stage: str, start: float, end: float, deps: list[str] = ()) -> dict[str, Any]:
    return {"task": key, "stage": stage, "tile": "", "worker": "0", "start": start, "end": end, "deps": list(deps),
            "cpu": 0.0, "points": 0}


def test_analysis_of_a_hand_made_timeline() -> None:
    # a, b from 0; c waits for a, d for b; e for c and d after a gap; z takes no time
    tasks = [_task("a", "p", 0, 2), _task("b", "p", 0, 1), _task("c", "x", 2, 5, ["a"]), _task("d", "y", 1, 3, ["b"]),
             _task("z", "y", 3, 3, ["d"]), _task("e", "f", 5.5, 6.5, ["c", "d"])]
    found = analyse(tasks)
    assert found["wall"] == 6.5
    assert [t["task"] for t in found["critical_path"]["tasks"]] == ["a", "c", "e"]
    assert found["critical_path"]["seconds"] == 6.0  # 2 + 3 + 1
    # alone: c from 3 to 5, e from 5.5 to 6.5; nothing from 5 to 5.5
    assert found["serial_share"] == round(3 / 6.5, 4) and found["idle_share"] == round(0.5 / 6.5, 4)
    rows = {r["stage"]: r for r in found["stage_profile"]}
    assert list(rows) == ["p", "y", "x", "f"]
    assert (rows["p"]["tasks"], rows["p"]["busy"], rows["p"]["serial"], rows["p"]["critical"]) == (2, 3.0, 0.0, 2.0)
    assert (rows["x"]["serial"], rows["f"]["serial"], rows["y"]["tasks"]) == (2.0, 1.0, 2)


def _longest_by_relaxation(tasks: list[dict[str, Any]]) -> float:
    """The longest dependency chain by repeated relaxation (independent of the runner's topological pass)."""
    best = {t["task"]: t["end"] - t["start"] for t in tasks}
    for _ in range(len(tasks)):
        for t in tasks:
            best[t["task"]] = max(best[t["task"]], t["end"] - t["start"] + max((best[d] for d in t["deps"]),
                                                                               default=0.0))
    return max(best.values())


def test_report_has_a_valid_critical_path_and_serial_share(profiled: Path) -> None:
    report = json.loads((profiled / "report.json").read_text())
    timeline = report["timeline"]
    tasks = {t["task"]: t for t in timeline["tasks"]}
    path = timeline["critical_path"]["tasks"]
    assert [t["stage"] for t in path][0] == "tile" and path[-1]["task"] == "catalog"
    for before, after in zip(path, path[1:]):  # a chain of dependencies, one after the other
        assert before["task"] in tasks[after["task"]]["deps"]
        assert after["start"] >= before["end"] - 0.002
    total = timeline["critical_path"]["seconds"]
    longest_task = max(t["end"] - t["start"] for t in tasks.values())
    assert longest_task - 0.002 <= total <= timeline["wall"] + 0.002
    assert total == pytest.approx(_longest_by_relaxation(list(tasks.values())), abs=0.002)
    # the serial and idle shares against a 1 ms sampling of the timeline
    clock = np.arange(0, timeline["wall"], 0.001) + 0.0005
    running = sum(((clock >= t["start"]) & (clock < t["end"])).astype(int) for t in tasks.values())
    assert 0 <= timeline["serial_share"] <= 1
    assert timeline["serial_share"] == pytest.approx(np.mean(running == 1), abs=0.01)
    assert timeline["idle_share"] == pytest.approx(np.mean(running == 0), abs=0.01)
    rows = {r["stage"]: r for r in timeline["stage_profile"]}
    assert rows["tile"]["points"] == report["points"] == 848_942  # the partitions saw every point once
    assert rows["tile"]["tasks"] == 2 and report["tiles"] == 9
    assert rows["tile.io"]["tasks"] == 2 * 9  # per chain its loading and its checkpoint
    assert sum(r["serial"] for r in rows.values()) == pytest.approx(timeline["serial_share"] * timeline["wall"],
                                                                      abs=0.01)


def test_timeline_records_the_task_graph(profiled: Path) -> None:
    tasks = {t["task"]: t for t in json.loads((profiled / "report.json").read_text())["timeline"]["tasks"]}
    partitions = {k for k, t in tasks.items() if t["stage"] == "tile"}
    chains = {k: t for k, t in tasks.items() if t["stage"] == "tile.io" and not k.endswith("/checkpoint")}
    for key, io in chains.items():  # a chain loads its tile from the partitions that wrote it
        assert io["deps"] and set(io["deps"]) <= partitions
        ground, dsm = tasks[f"00-classify.ground/{io['tile']}"], tasks[f"01-raster.dsm/{io['tile']}"]
        saved = tasks[f"{key}/checkpoint"]  # the points after the last point-modifying step, before the next
        assert ground["deps"] == [key] and saved["deps"] == [ground["task"]] and dsm["deps"] == [saved["task"]]
        assert ground["worker"] == io["worker"] == saved["worker"]
        # drawn where the worker writes it (it was a gap in the timeline, read as idle or serial time)
        assert io["end"] <= ground["start"] and ground["end"] == saved["start"] < saved["end"] <= dsm["start"]
    last_steps = {f"02-write.las/{t['tile']}" for t in chains.values()}  # the finish waits for whole chains
    assert set(tasks["01-raster.dsm/finish"]["deps"]) == last_steps
    assert "01-raster.dsm/finish" in tasks["catalog"]["deps"]
    assert all(t["cpu"] >= 0 for t in tasks.values()) and sum(t["cpu"] for t in tasks.values()) > 0


class _Page(HTMLParser):
    """The tags, attribute values and rect tooltips of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.values: list[str] = []
        self.titles: list[str] = []
        self._in_rect = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.values += [v or "" for _, v in attrs]
        self._in_rect = tag == "rect" or (self._in_rect and tag == "title")

    def handle_endtag(self, tag: str) -> None:
        if tag == "rect":
            self._in_rect = False

    def handle_data(self, data: str) -> None:
        if self._in_rect and self.tags[-1] == "title":
            self.titles.append(data)


def test_profile_page_shows_every_task_offline_and_is_served_by_view(profiled: Path) -> None:
    from cim.viewer import make_server

    page = (profiled / "profile.html").read_bytes()
    report = json.loads((profiled / "report.json").read_text())
    parsed = _Page()
    parsed.feed(page.decode())
    parsed.close()
    tasks = report["timeline"]["tasks"]
    assert len(parsed.titles) == len(tasks)
    assert {title.split(" · ")[0] for title in parsed.titles} == {t["task"] for t in tasks}
    assert not {"script", "link", "img", "iframe", "object"} & set(parsed.tags)
    assert not any(v.startswith(("http:", "https:", "//")) for v in parsed.values)
    assert b"http://" not in page and b"https://" not in page
    assert b"Which step is serial?" in page and parsed.tags.count("table") == 2
    assert page.count(b'class="crit"') == len(report["timeline"]["critical_path"]["tasks"])

    (profiled / "profile.html").unlink()
    done = cim_cli("profile", str(profiled))
    assert done.returncode == 0, done.stderr
    assert (profiled / "profile.html").read_bytes() == page  # the same page from report.json alone

    server = make_server(profiled, port=0, cesium=REPO)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"{server.url.rstrip('/')}/data/profile.html", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/html") and response.read() == page
    finally:
        server.shutdown()
        server.server_close()


def test_profile_of_a_folder_without_a_usable_report_is_one_line(tmp_path: Path) -> None:
    done = cim_cli("profile", str(tmp_path))
    assert done.returncode == 2 and "report.json" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "report.json").write_text(json.dumps({"job": "x", "timeline": {"tasks": [{"task": "a"}]}}))
    done = cim_cli("profile", str(tmp_path))
    assert done.returncode == 2 and "timeline.tasks[0]" in done.stderr and "Traceback" not in done.stderr
    looped = [_task("a", "p", 0, 1, ["b"]), _task("b", "p", 1, 2, ["a"])]
    (tmp_path / "report.json").write_text(json.dumps({"job": "x", "timeline": {"tasks": looped}}))
    done = cim_cli("profile", str(tmp_path))
    assert done.returncode == 2 and "cycle" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "profile.html").exists()


def test_every_job_command_writes_the_profile(tmp_path: Path) -> None:
    """The job templates share ``--profile`` with ``cim run``: ``cim dtm --profile`` writes the page for its run."""
    import typer

    from cim.cli.app import _load_commands, app

    _load_commands()
    commands = {c.name: c for c in typer.main.get_command(app).commands.values()}
    for name in ("run", "ground", "dtm", "buildings", "tiles", "panoramas"):
        assert "profile" in {p.name for p in commands[name].params}, name
    out = tmp_path / "dtm"
    done = cim_cli("dtm", str(REPO / "data" / "delft" / "ahn3_cropped_2.laz"), "--out", str(out),
                   "--crs", "EPSG:7415", "--workers", "1", "--profile")
    assert done.returncode == 0, done.stderr
    page = (out / "profile.html").read_text()
    tasks = json.loads((out / "report.json").read_text())["timeline"]["tasks"]
    assert tasks and all(t["task"] in page for t in tasks)
