"""Runs survive kills and interrupts, failures stay contained, caches are safe, results deterministic."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from rundirs import records

from harness import registry
from harness.cli import main
from harness.executors.local import LocalExecutor
from harness.phases import EpisodeAdapter

pytestmark = pytest.mark.slow  # end to end or training-heavy: `pytest -m "not slow"` skips it

ROOT = Path(__file__).resolve().parents[2]
PAIR = ["frozen-features", "partial-finetune"]
SECRET = "0123456789abcdef" * 2  # every run here shares one secret, so their episode seeds agree


def with_secret(out: Path) -> Path:
    """A new run directory holding the shared secret (as a copied RUN_DIR/secret reproduces a run's seeds)."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "secret").exists():
        (out / "secret").write_text(SECRET + "\n")
    return out


def run_cli(data: Path, out: Path, cache: Path, *extra: str, fault: str | None = None,
            names: list[str] = PAIR) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_CACHE": str(cache)}
    env.pop("HARNESS_FAULT", None)
    with_secret(out)
    if fault:
        env["HARNESS_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "harness", "run", *names, "--preset", "smoke", "--data-dir",
                           str(data), "--out", str(out), "--report", str(out.parent / f"{out.name}.md"), "--quiet",
                           *extra], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def essentials(recs: dict) -> dict:
    return {k: (r["status"], r["episode_accuracies"], r["episode_fingerprint"], r["source_keys"],
                r["predictions_sha256"]) for k, r in recs.items()}


@pytest.fixture(scope="module")
def reference(imagefolder_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("reference")
    out = run_cli(imagefolder_dir, base / "run", base / "cache")
    assert out.returncode == 0, out.stderr
    return essentials(records(base / "run"))


@pytest.mark.parametrize("fault", ["source-step:3", "episode:1", "record-write:1", "record-write:3",
                                   "predictions-write:2"])
def test_sigkill_then_resume_equals_uninterrupted_run(fault, reference, imagefolder_dir, tmp_path):
    killed = run_cli(imagefolder_dir, tmp_path / "run", tmp_path / "cache", fault=fault)
    assert killed.returncode == -9, killed.stderr  # really killed at that point
    before = records(tmp_path / "run")
    assert len(before) < len(reference)
    resumed = run_cli(imagefolder_dir, tmp_path / "run", tmp_path / "cache")
    assert resumed.returncode == 0, resumed.stderr
    final = records(tmp_path / "run")
    assert essentials(final) == reference  # none missing, duplicated, truncated or different
    assert sorted(p.name for p in (tmp_path / "run" / "records").iterdir()) == sorted(
        f"{s}-{k}shot.json" for s, k in reference)  # no temporary files left behind
    assert sorted(p.name for p in (tmp_path / "run" / "predictions").iterdir()) == sorted(
        f"{s}-{k}shot.npz" for s, k in reference)  # every record's predictions, whole
    for key, rec in before.items():  # finished records were kept, not recomputed
        assert final[key]["episode_seconds"] == rec["episode_seconds"]


def test_ctrl_c_saves_the_current_unit_and_exits_130(imagefolder_dir, tmp_path):
    out = run_cli(imagefolder_dir, tmp_path / "run", tmp_path / "cache", fault="sigint-episode:1")
    assert out.returncode == 130, out.stderr
    assert "resume with:" in out.stderr and str(tmp_path / "run") in out.stderr
    assert list(records(tmp_path / "run")) == [("frozen-features", 1)]
    resumed = run_cli(imagefolder_dir, tmp_path / "run", tmp_path / "cache", "--resume", str(tmp_path / "run"))
    assert resumed.returncode == 0, resumed.stderr
    assert len(records(tmp_path / "run")) == 4


def test_corrupt_source_cache_is_rebuilt(reference, imagefolder_dir, tmp_path):
    first = run_cli(imagefolder_dir, tmp_path / "a", tmp_path / "cache", names=["frozen-features"])
    assert first.returncode == 0
    weights = next((tmp_path / "cache" / "source").glob("*.pt"))  # one entry: the supervised Conv-4
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    second = run_cli(imagefolder_dir, tmp_path / "b", tmp_path / "cache", names=["frozen-features"])
    assert second.returncode == 0, second.stderr
    assert "corrupt" in second.stdout + second.stderr
    rec = records(tmp_path / "b")
    assert not rec[("frozen-features", 1)]["source_cached"]  # rebuilt, not used
    assert essentials(rec)[("frozen-features", 1)] == reference[("frozen-features", 1)]


def test_two_runs_at_once_share_the_cache_safely(reference, imagefolder_dir, tmp_path):
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-m", "harness", "run", "frozen-features", "--preset", "smoke",
                               "--data-dir", str(imagefolder_dir), "--out", str(with_secret(tmp_path / name)),
                               "--report", str(tmp_path / f"{name}.md"), "--quiet"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("a", "b")]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    recs = [records(tmp_path / name)[("frozen-features", 1)] for name in ("a", "b")]
    assert sorted(r["source_cached"] for r in recs) == [False, True]  # trained once, under the lock
    assert recs[0]["episode_accuracies"] == recs[1]["episode_accuracies"]
    assert len(list((tmp_path / "cache" / "source").glob("*.pt"))) == 1


# --- failures are contained --------------------------------------------------------------------------

@dataclass
class _Broken(EpisodeAdapter):
    """Fails on purpose."""

    mode: str = "raise"

    def adapt_episode(self, model, task, source):
        n = len(task.query_images)
        if self.mode == "raise":
            raise RuntimeError("deliberate failure\nwith a second line")
        if self.mode == "nan":
            return torch.full((n, task.ways), float("nan"))
        return torch.zeros(n, task.ways + 1)


@pytest.fixture
def broken_strategies(register_strategy):
    return [register_strategy(_Broken, f"broken-{mode}") for mode in ("raise", "nan", "shape")]


def test_failures_become_rows_and_the_run_goes_on(broken_strategies, imagefolder_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", *broken_strategies, "frozen-features", "--preset", "smoke", "--shots", "1", "--set",
                 "broken-nan.mode=nan", "--set", "broken-shape.mode=shape", "--data-dir", str(imagefolder_dir),
                 "--out", str(out), "--report", str(tmp_path / "r.md"), "--quiet"])
    assert code == 1
    recs = records(out)
    assert recs[("frozen-features", 1)]["status"] == "ok"
    assert recs[("broken-raise", 1)]["status"] == "failed"
    assert recs[("broken-raise", 1)]["reason"] == "RuntimeError: deliberate failure with a second line"
    assert "non-finite logits" in recs[("broken-nan", 1)]["reason"]
    assert "expected (queries, ways) = (75, 5)" in recs[("broken-shape", 1)]["reason"]
    log = (out / "run.log").read_text()
    assert "Traceback" in log and "deliberate failure" in log
    board = (tmp_path / "r.md").read_text()
    assert "failed: RuntimeError: deliberate failure" in board


def test_fail_fast_stops_at_the_first_failure(broken_strategies, imagefolder_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "broken-raise", "frozen-features", "--preset", "smoke", "--shots", "1", "--fail-fast",
                 "--data-dir", str(imagefolder_dir), "--out", str(out), "--quiet"])
    assert code == 1
    assert "--fail-fast" in capsys.readouterr().err
    assert list(records(out)) == [("broken-raise", 1)]


MEASURED = {"source_seconds", "source_images_per_second", "source_peak_memory_mb", "source_cached", "source_metrics",
            "episode_seconds", "ms_per_episode", "query_images_per_second", "episode_peak_memory_mb",
            "seal_seconds"}


class ReverseExecutor(LocalExecutor):
    """Runs the evaluation units in reverse plan order (each source phase just before its first use)."""

    def order(self, evaluations):
        return list(reversed(evaluations))


@pytest.mark.slow
def test_every_strategy_is_deterministic_and_order_independent(imagefolder_dir, tmp_path, monkeypatch):
    """The whole smoke suite twice, with separate caches (so every source phase is retrained): once in a
    subprocess with the local executor, once here with an executor that runs the units in reverse order.
    Every record is identical but for the measured times and memory."""
    from harness.suite import get_row

    names = sorted(n for n in registry.STRATEGIES.names()  # external rows need a model file: tested apart
                   if get_row(n).available() and get_row(n).family != "external")
    fewer = ["--shots", "1", "--episodes", "4"]  # every source phase still trains (per-shots ones once)
    first = run_cli(imagefolder_dir, tmp_path / "a", tmp_path / "cache-a", *fewer, names=names)
    assert first.returncode == 0, first.stderr
    monkeypatch.setitem(registry.EXECUTORS.entries(), "reverse",
                        registry.Entry("reverse", ReverseExecutor, {}, "executor"))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache-b"))
    assert main(["run", *names, "--preset", "smoke", *fewer, "--data-dir", str(imagefolder_dir), "--out",
                 str(with_secret(tmp_path / "b")), "--executor", "reverse", "--quiet"]) == 0
    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    assert len(a) == len(names) and a.keys() == b.keys()
    for key in a:
        strip = [{k: v for k, v in r[key].items() if k not in MEASURED} for r in (a, b)]
        assert strip[0] == strip[1], key
