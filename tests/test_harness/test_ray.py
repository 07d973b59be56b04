"""The Ray executor on a real local Ray runtime (no mocks): the same records as the local executor, the cache
shared both ways, a worker killed mid-unit retried, a unit's own exception a failed row (not retried),
--fail-fast, Ctrl-C of the driver then resume, and bad input exiting 2 with one line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from rundirs import records

from harness.cli import main
from harness.phases import EpisodeAdapter
from harness.registry import EXECUTORS

pytestmark = pytest.mark.slow  # end to end or training-heavy: `pytest -m "not slow"` skips it

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["frozen-features", "protonet"]  # 3 source units (protonet's per shots) and 4 evaluation units
MEASURED = {"source_seconds", "source_images_per_second", "source_peak_memory_mb", "source_cached", "source_metrics",
            "episode_seconds", "ms_per_episode", "query_images_per_second", "episode_peak_memory_mb",
            "device", "source_device",  # device names say the torch threads: 1 per Ray unit (--cpus-per-unit 1)
            "seal_seconds", "independence_check"}  # the check's episodes are drawn with `secrets`
SECRET = "fedcba9876543210" * 2  # every run here shares one secret (RUN_DIR/secret), so their episode seeds agree


def argv(data: Path, out: Path, cache: Path, *extra: str, names: list[str] = NAMES, executor: str = "ray",
         shared_secret: bool = True) -> list:
    """One torch thread per unit under both executors: a CPU sums in an order that depends on the thread count
    (it is in the cache key), so equal numbers need equal threads. ``shared_secret``: the run directory is made
    beforehand holding the shared RUN_DIR/secret."""
    if shared_secret and not (out / "secret").exists():
        out.mkdir(parents=True, exist_ok=True)
        (out / "secret").write_text(SECRET + "\n")
    return ["run", *names, "--preset", "smoke", "--data-dir", str(data), "--out", str(out), "--cache-dir", str(cache),
            "--report", str(out.parent / f"{out.name}.md"), "--executor", executor, "--threads", "1", "--quiet",
            *extra]


def run_driver(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    """The driver in its own process (it can be interrupted), joining the test's Ray runtime."""
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_FAULT", "RAY_ADDRESS")}
    if fault:
        env["HARNESS_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)


def stripped(recs: dict) -> dict:
    return {k: {f: v for f, v in r.items() if f not in MEASURED} for k, r in recs.items()}


@pytest.fixture(scope="module")
def cluster():
    """A real local Ray runtime for this module's tests; its address for drivers in other processes."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(imagefolder_dir, tmp_path_factory) -> Path:
    """The reference: the local executor; its cache (every source model trained) is reused by later tests."""
    base = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    assert main(argv(imagefolder_dir, base / "run", base / "cache", executor="local")) == 0
    torch.set_num_threads(threads)  # --threads 1 set it for this process
    return base


@pytest.fixture(autouse=True)
def _keep_threads():
    """The runs here pass --threads 1, which holds for the rest of the process: restored after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# --- bad input: exit 2, one line, before anything runs ----------------------------------------------

def test_bad_ray_settings_exit_2_with_one_line(imagefolder_dir, tmp_path, capsys, monkeypatch):
    base = argv(imagefolder_dir, tmp_path / "run", tmp_path / "cache", shared_secret=False)
    for extra, message in ((["--cpus-per-unit", "0"], "--cpus-per-unit must be positive"),
                           (["--gpus-per-unit", "1.5"], "--gpus-per-unit must be a fraction up to 1 or a whole"),
                           (["--ray-address", "nonsense"], "is not HOST:PORT, ray://HOST:PORT, auto or local")):
        monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh driver
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    entry = EXECUTORS.get("ray")  # Ray not installed
    monkeypatch.setattr(entry, "target", "harness.executors.ray_executor:RayExecutor")
    monkeypatch.setattr(entry, "available", lambda: False)
    assert main(base) == 2
    assert 'install it with: pip install -e ".[ray]"' in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_unreachable_cluster_exits_2_fast_with_a_hint(imagefolder_dir, tmp_path):
    out = run_driver(argv(imagefolder_dir, tmp_path / "run", tmp_path / "cache", "--ray-address", "127.0.0.1:1",
                          shared_secret=False))
    assert out.returncode == 2, out.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in out.stderr and "ray start --head" in out.stderr
    assert out.stderr.count("\n") == 1 and not (tmp_path / "run").exists()


def test_the_driver_takes_the_same_cache_lock_as_a_local_run(tmp_path):
    from harness.cache import SourceCache

    cache = SourceCache(tmp_path)  # the Ray driver claims a key through the session: SourceCache.try_lock
    with cache.lock("key"):
        assert cache.try_lock("key") is None  # another run trains it: the Ray driver waits, then loads
    lock = cache.try_lock("key")
    assert lock is not None
    lock.close()


# --- real runs on the local Ray runtime ------------------------------------------------------------

@pytest.mark.slow
def test_same_records_as_the_local_executor_and_the_cache_is_shared(cluster, local_run, imagefolder_dir, tmp_path):
    assert main(argv(imagefolder_dir, tmp_path / "ray", tmp_path / "cache")) == 0
    reference, on_ray = records(local_run / "run"), records(tmp_path / "ray")
    assert len(on_ray) == 4 and stripped(on_ray) == stripped(reference)  # per-episode accuracies included
    assert not any(r["source_cached"] for r in on_ray.values())
    assert len(list((tmp_path / "cache" / "source").glob("*.pt"))) == 3  # each source unit trained once
    # a later local run reuses what the cluster trained
    assert main(argv(imagefolder_dir, tmp_path / "again", tmp_path / "cache", executor="local")) == 0
    again = records(tmp_path / "again")
    assert all(r["source_cached"] for r in again.values()) and stripped(again) == stripped(reference)


@pytest.mark.slow
def test_a_worker_killed_mid_unit_is_retried(cluster, local_run, imagefolder_dir, tmp_path, monkeypatch):
    fired = tmp_path / "fired"  # the 2nd source step of the first worker to get there kills that worker, once
    monkeypatch.setenv("HARNESS_FAULT", f"source-step:2:once={fired}")
    assert main(argv(imagefolder_dir, tmp_path / "ray", tmp_path / "cache")) == 0
    assert fired.exists()
    assert stripped(records(tmp_path / "ray")) == stripped(records(local_run / "run"))


@dataclass
class _Raising(EpisodeAdapter):
    """Fails on purpose, noting each attempt in the file ``log``."""

    log: str = ""

    def adapt_episode(self, model, task, source):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        raise RuntimeError("deliberate failure\nwith a second line")


@pytest.mark.slow
def test_a_units_exception_is_a_failed_row_not_a_retry(cluster, local_run, register_strategy, imagefolder_dir,
                                                      tmp_path, capsys):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    try:
        name = register_strategy(_Raising, "broken-raise")
        log = tmp_path / "attempts"
        cache = local_run / "cache"  # the supervised source model is there: only evaluation units run
        common = ["--shots", "1", "--set", f"{name}.log={log}"]
        assert main(argv(imagefolder_dir, tmp_path / "run", cache, *common, names=[name, "frozen-features"])) == 1
        recs = records(tmp_path / "run")
        assert recs[("frozen-features", 1)]["status"] == "ok"
        assert recs[(name, 1)]["status"] == "failed"
        assert recs[(name, 1)]["reason"] == "RuntimeError: deliberate failure with a second line"  # as locally
        assert len(log.read_text().splitlines()) == 1  # not retried
        run_log = (tmp_path / "run" / "run.log").read_text()
        assert "Traceback" in run_log and "in adapt_episode" in run_log  # the worker's traceback
        capsys.readouterr()
        assert main(argv(imagefolder_dir, tmp_path / "ff", cache, *common, "--fail-fast", names=[name])) == 1
        assert "stopped at the first failure (--fail-fast)" in capsys.readouterr().err
        assert records(tmp_path / "ff")[(name, 1)]["status"] == "failed"
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.slow
def test_ctrl_c_the_driver_then_resume(cluster, local_run, imagefolder_dir, tmp_path):
    """A driver in its own process joins the cluster (--ray-address) and reuses the local run's cache; it is
    interrupted while writing its first record, then resumed with --resume alone."""
    run = tmp_path / "run"
    args = argv(imagefolder_dir, run, local_run / "cache", "--ray-address", cluster)
    stopped = run_driver(args, fault="sigint-record-write:1")
    assert stopped.returncode == 130, stopped.stderr
    assert "resume with:" in stopped.stderr and str(run) in stopped.stderr
    before = records(run)
    assert 1 <= len(before) < 4  # what had finished is saved, the rest was cancelled
    resumed = run_driver(["run", "--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr
    final = records(run)
    assert stripped(final) == stripped(records(local_run / "run"))
    assert all(r["source_cached"] for r in final.values())  # the cluster reused what the local run trained
    for key, rec in before.items():  # kept, not recomputed
        assert final[key]["episode_seconds"] == rec["episode_seconds"]
    assert not [line for line in stopped.stdout.splitlines() + resumed.stdout.splitlines()
                if "ray" in line.lower() and "leaderboard" not in line]  # no Ray start-up chatter


def test_tuning_under_ray_chooses_as_the_local_executor(cluster, imagefolder_dir, tmp_path):
    """--tune inside a Ray task: the same configurations, validation accuracies, choice and scored episodes as the
    local executor, and each finished configuration kept in RUN_DIR/tuning (a worker on this machine)."""
    extra = ["--tune", "2", "--tune-episodes", "3", "--queries", "2", "--shots", "1"]
    names = ["frozen-features"]
    assert main(argv(imagefolder_dir, tmp_path / "local", tmp_path / "cache", *extra, names=names,
                     executor="local")) == 0
    assert main(argv(imagefolder_dir, tmp_path / "ray", tmp_path / "cache-ray", *extra, names=names)) == 0
    local, on_ray = (records(tmp_path / d)[("frozen-features", 1)] for d in ("local", "ray"))

    def choice(r: dict) -> tuple:
        return ([(t["params"], t["accuracy"], t["flops"]) for t in r["tuning"]["tried"]], r["tuning"]["chosen"],
                r["params"], r["episode_accuracies"])

    assert len(local["tuning"]["tried"]) == 2 and choice(on_ray) == choice(local)
    assert len(list((tmp_path / "ray" / "tuning").glob("*.json"))) == 2
