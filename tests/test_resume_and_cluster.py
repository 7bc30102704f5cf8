"""Crash safety and scale-out: SIGKILL mid-run then resume; a real Dask scheduler with two workers."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, cim_cli, delft_job, product_digests, write_job

# Small tiles and two writers give ~400 quick tasks: enough that a kill lands mid-run.
MANY_TASKS = '[[stages]]\ntype = "write.las"\nfolder = "las_copy"\ncompress = false\n\n'


def _many_task_job(tmp_path: Path, out: Path) -> Path:
    return write_job(tmp_path / f"{out.name}.toml", delft_job(out, size=20.0, buffer=2.0, extra=MANY_TASKS))


def _recorded(manifest: Path) -> set[str]:
    keys = set()
    for line in manifest.read_text().splitlines() if manifest.exists() else []:
        try:
            keys.add(json.loads(line)["key"])
        except json.JSONDecodeError:
            pass
    return keys


def test_sigkill_mid_run_then_rerun_resumes_and_matches_a_clean_run(tmp_path: Path) -> None:
    clean_out, crash_out = tmp_path / "clean", tmp_path / "crash"
    clean = cim_cli("run", str(_many_task_job(tmp_path, clean_out)), "--workers", "2")
    assert clean.returncode == 0, clean.stderr
    total = len(json.loads((clean_out / "report.json").read_text())["stages"])
    assert total

    job = _many_task_job(tmp_path, crash_out)
    manifest = crash_out / ".cim" / "manifest.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "cim.cli", "run", str(job), "--workers", "2"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and sum(k.startswith("01-") for k in _recorded(manifest)) < 10:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and its Dask workers, mid-run
    process.wait()
    before = _recorded(manifest)
    assert any(k.startswith("01-") for k in before), "the run was killed before any tile finished"
    assert "catalog" not in before, "the run finished before it could be killed"
    assert not (crash_out / "stac" / "catalog.json").exists()

    resumed = cim_cli("run", str(job), "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((crash_out / "report.json").read_text())
    skipped = sum(row["skipped"] for row in report["stages"])
    assert skipped == len(before)  # every recorded task was kept, none recomputed
    assert product_digests(crash_out) == product_digests(clean_out)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_job_on_a_real_scheduler_with_two_workers_matches_the_local_run(tmp_path: Path) -> None:
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(2)
        for _ in range(2):
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                 "--dashboard-address", ":0", "--name", f"w{len(processes)}"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            assert len(client.scheduler_info()["workers"]) == 2
        remote_out, local_out = tmp_path / "remote", tmp_path / "local"
        remote = cim_cli("run", str(write_job(tmp_path / "r.toml", delft_job(remote_out))), "--scheduler", address)
        assert remote.returncode == 0, remote.stderr
        local = cim_cli("run", str(write_job(tmp_path / "l.toml", delft_job(local_out))), "--workers", "2")
        assert local.returncode == 0, local.stderr
        assert product_digests(remote_out) == product_digests(local_out)
        assert len(product_digests(remote_out)) > 5
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def test_unreachable_scheduler_is_a_clear_error(tmp_path: Path) -> None:
    result = cim_cli("run", str(write_job(tmp_path / "j.toml", delft_job(tmp_path / "o"))),
                     "--scheduler", f"tcp://127.0.0.1:{_free_port()}")
    assert result.returncode == 2
    assert "cannot reach the Dask scheduler" in result.stderr


def _can_unshare() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs mount namespaces (unshare -m) to give a worker its own disk")
def test_worker_that_cannot_see_the_output_folder_stops_the_run_with_one_line(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    outs = tmp_path / "outs"
    outs.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with LocalCluster(n_workers=0, host="127.0.0.1", protocol="tcp", dashboard_address=":0",
                      processes=False) as cluster:
        # the worker runs where the output folder's parent is an empty disk of its own (a machine without the share)
        hidden = (f"mount -t tmpfs none {outs} && exec {sys.executable} -m distributed.cli.dask_worker "
                  f"{cluster.scheduler_address} --nthreads 1 --dashboard-address :0 --name lonely")
        worker = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", hidden], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with Client(cluster.scheduler_address, timeout="30s") as client:
                client.wait_for_workers(1, timeout=60)
            job = write_job(tmp_path / "j.toml", delft_job(outs / "o"))
            result = cim_cli("run", str(job), "--scheduler", cluster.scheduler_address)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    message = " ".join(result.stderr.split())  # one message (the console may wrap it)
    assert message.count("error:") == 1 and "Traceback" not in message
    assert re.search(r"cim needs a file system shared by all workers: worker \S+ cannot see the output folder", message)
    assert f"folder{outs / 'o'}(" in message.replace(" ", "")  # the console may break the path
    assert not (outs / "o" / "las").exists() and not (outs / "o" / ".cim" / "parts").exists()


def test_local_cluster_scratch_lives_in_the_work_folder(tmp_path: Path) -> None:
    out = tmp_path / "o"
    result = cim_cli("run", str(write_job(tmp_path / "j.toml", delft_job(out, size=200.0))), "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert (out / ".cim" / "dask").is_dir()
