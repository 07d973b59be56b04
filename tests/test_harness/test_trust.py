"""Numbers that mean what they say: caches that cannot go stale, resumes that refuse other data or
settings, training-seed replicates, precision and determinism on record, one cost unit counted the same
in every source phase, warm-up outside the timings, each phase's own peak memory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import SOURCE_PROTOCOL, make_images, write_imagefolder

from harness.cli import main
from harness.phases import EpisodeAdapter, SourceData
from harness.units import replicate_seeds

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["--preset", "smoke", "--shots", "1", "--quiet"]


def record(run_dir: Path, name: str, shots: int = 1) -> dict:
    return json.loads((run_dir / "records" / f"{name}-{shots}shot.json").read_text())


def run_copy(project: Path, data: Path, out: Path, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "run", "frozen-features", *SMOKE, "--data-dir", str(data),
                           "--out", str(out)], cwd=project, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HARNESS_CACHE": str(cache), "PYTHONPATH": str(project)})


@pytest.mark.slow
def test_an_edit_to_a_training_module_forces_retraining(imagefolder_dir, tmp_path):
    """A copy of the project (not a git checkout: its code version is a hash of its source) trains, reuses
    its cache, and retrains after a comment is added to the supervised pretraining module; an edit to a
    module the phase never runs (the report) keeps the cache."""
    project = tmp_path / "outer" / "project"
    for package in ("harness", "strategies"):
        shutil.copytree(ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q", str(tmp_path / "outer")], check=True)  # an enclosing repository
    cache = tmp_path / "cache"
    runs = []
    for i, edit in enumerate([None, None, "harness/report/markdown.py", "strategies/supervised.py"]):
        if edit:
            with open(project / edit, "a") as f:
                f.write("\n# an edit\n")
        out = run_copy(project, imagefolder_dir, tmp_path / f"run{i}", cache)
        assert out.returncode == 0, out.stderr
        runs.append(record(tmp_path / f"run{i}", "frozen-features"))
    assert [r["source_cached"] for r in runs] == [False, True, True, False]
    assert runs[0]["source_keys"] == runs[1]["source_keys"] == runs[2]["source_keys"] != runs[3]["source_keys"]
    env = json.loads((tmp_path / "run0" / "environment.json").read_text())
    assert env["code_version"].startswith("source sha256:")  # not the enclosing repository's commit


def test_resuming_with_other_data_or_settings_exits_2(imagefolder_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "frozen-features", *SMOKE, "--data-dir", str(imagefolder_dir), "--out", str(out)]) == 0
    other = write_imagefolder(tmp_path / "other", train_per_class=31, test_per_class=30)  # other pixels
    capsys.readouterr()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for extra, message in ((["--data-dir", str(other)], "different data_fingerprint"),
                           (["--data-dir", str(imagefolder_dir), "--precision", "bf16"], "different precision"),
                           (["--data-dir", str(imagefolder_dir), "--replicates", "2"], "different replicates")):
        code = main(["run", "frozen-features", *SMOKE, *extra, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_replicates_train_one_model_per_seed_on_the_same_episodes(imagefolder_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "frozen-features", "protonet", *SMOKE, "--replicates", "2", "--data-dir",
                 str(imagefolder_dir), "--out", str(out)]) == 0
    for name in ("frozen-features", "protonet"):
        r = record(out, name)
        assert r["replicate_seeds"] == replicate_seeds(0, 2) and r["replicate_seeds"][0] == 0
        assert len(r["replicate_accuracies"]) == 2 and len(set(r["source_keys"])) == 2
        assert r["accuracy"] == pytest.approx(np.mean(r["replicate_accuracies"]), abs=1e-6)
        assert r["ci_covers"] == "training seeds and episode sampling"
    single = tmp_path / "single"
    assert main(["run", "frozen-features", *SMOKE, "--data-dir", str(imagefolder_dir), "--out", str(single)]) == 0
    one = record(single, "frozen-features")
    assert one["source_keys"] == record(out, "frozen-features")["source_keys"][:1]  # replicate 0 = the run seed
    assert one["ci_covers"] == "episode sampling only, for one trained model per strategy"
    board = (out / "leaderboard.md").read_text()
    assert "the CI covers training seeds and episode sampling" in board


@pytest.mark.slow
def test_precision_and_determinism_are_recorded_and_keyed(imagefolder_dir, tmp_path, capsys):
    runs = {}
    for name, extra in (("fp32", []), ("bf16", ["--precision", "bf16", "--no-deterministic"])):
        assert main(["run", "frozen-features", *SMOKE, *extra, "--data-dir", str(imagefolder_dir), "--out",
                     str(tmp_path / name)]) == 0
        runs[name] = (record(tmp_path / name, "frozen-features"),
                      json.loads((tmp_path / name / "environment.json").read_text()))
    assert runs["fp32"][1]["precision"] == "fp32" and runs["bf16"][1]["precision"] == "bf16"
    assert runs["fp32"][1]["determinism"]["deterministic_algorithms"] is True
    assert runs["bf16"][1]["determinism"]["deterministic_algorithms"] is False
    assert runs["fp32"][0]["source_keys"] != runs["bf16"][0]["source_keys"]
    code = main(["run", "keras-frozen-features", *SMOKE, "--precision", "bf16", "--data-dir", str(imagefolder_dir),
                 "--out", str(tmp_path / "keras")])
    assert code == 2 and "trains in fp32 only" in capsys.readouterr().err
    torch.use_deterministic_algorithms(False)


def counted(phase, budget: int, **data_kwargs) -> int:
    images, labels = make_images(16, seed=0, classes=5)
    processed = []
    data = SourceData(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels), 5,
                      torch.device("cpu"), 0, processed.append, **{**SOURCE_PROTOCOL, **data_kwargs})
    phase.train(data, budget)
    return sum(processed)


def test_every_phase_counts_images_through_forward_and_backward_passes():
    from strategies.adversarial import AdversarialPretraining
    from strategies.maml import MamlMetaTraining
    from strategies.protonet import ProtonetTraining
    from strategies.reptile import ReptileMetaTraining
    from strategies.rotation import RotationPretraining
    from strategies.simclr import SimclrPretraining
    from strategies.supervised import SupervisedPretraining

    # (phase, images through forward+backward passes per step) -> ceil(100 / per step) steps are run
    cases = [(SupervisedPretraining(batch_size=16), 16), (RotationPretraining(batch_size=16), 64),
             (SimclrPretraining(batch_size=16), 32), (AdversarialPretraining(batch_size=16, steps=2), 48),
             (MamlMetaTraining(width=4, inner_steps=2, meta_batch=2, shots=2), 2 * (5 * 2 * 2 * 2 + 5 * 3)),
             (MamlMetaTraining(width=4, inner_steps=2, meta_batch=2, first_order=True), 2 * (5 * 1 * 2 + 5 * 3)),
             (ProtonetTraining(shots=1), 5 * (1 + 3)), (ReptileMetaTraining(inner_steps=2, inner_batch=5, meta_batch=2,
                                                                     train_shots=3), 2 * 2 * 5)]
    for phase, per_step in cases:
        steps = -(-100 // per_step)
        assert counted(phase, 100, queries=3) == steps * per_step, type(phase).__name__


@dataclass
class _SlowStart(EpisodeAdapter):
    """Its first episode in a process costs a second (like CUDA start-up); the others are instant."""

    def adapt_episode(self, model, task, source):
        if not getattr(_SlowStart, "started", False):
            _SlowStart.started = True
            time.sleep(1.0)
        return torch.eye(task.ways)[0].expand(len(task.query_images), task.ways)  # class 0, not a tie


def test_warm_up_is_left_out_of_the_timed_episodes(register_strategy, imagefolder_dir, tmp_path):
    name = register_strategy(_SlowStart, "slow-start")
    assert main(["run", name, *SMOKE, "--data-dir", str(imagefolder_dir), "--out", str(tmp_path / "r")]) == 0
    assert record(tmp_path / "r", name)["ms_per_episode"] < 100  # 1000 ms / 8 episodes if it were timed


PEAK_MEMORY_SCRIPT = """
import time, torch
from harness.measure import Stopwatch
resident = torch.ones(40 * 2**20)  # 160 MB held before the phase
with Stopwatch(torch.device("cpu")) as small:
    torch.ones(2**20).sum()
with Stopwatch(torch.device("cpu")) as large:
    block = torch.ones(50 * 2**20)  # 200 MB allocated inside
    block.add_(1)
    time.sleep(0.05)
    del block
print(small.peak_memory_mb, large.peak_memory_mb)
"""


def test_peak_memory_is_the_phase_own_above_its_start():
    """In a fresh process: on a CPU the peak is the resident set's, which a long-lived process (this test
    session) may not grow when its allocator reuses memory that is already resident."""
    out = subprocess.run([sys.executable, "-c", PEAK_MEMORY_SCRIPT], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    small, large = map(float, out.stdout.split())
    assert small < 40 and 150 < large < 400
