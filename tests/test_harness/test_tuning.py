"""``--tune``: search spaces beside the fields, seeded configurations, the validation pool (the dataset's, or held
out of the base pool), sealed validation episodes that never touch a scored episode, records, report, plan,
resume mid-tuning and one-line errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import write_imagefolder
from synthetic_cifar100 import write_cifar100

from harness.cli import main
from harness.datasets import get_dataset
from harness.datasets.base import hold_out_validation
from harness.errors import UsageError
from harness.phases import Adapter
from harness.tuning import Space, best, check_trials, configurations, search_space, tunable

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--preset", "smoke", "--shots", "1", "--queries", "5", "--episodes", "8", "--quiet"]


def records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))}


# --- the search space and the sampler ------------------------------------------------------------------------


def test_every_tunable_field_declares_a_range_its_default_respects():
    from harness.suite import get_row

    spaces = {}
    for name in ("frozen-features", "partial-finetune", "maml", "fomaml", "reptile", "protonet"):
        adapter = get_row(name).build().adapter
        spaces[name] = search_space(adapter)
        for field_name, space in spaces[name].items():
            default = getattr(adapter, field_name)
            assert default is None or space.low <= default <= space.high, (name, field_name, default, space)
    assert set(spaces["frozen-features"]) == {"C"} and spaces["frozen-features"]["C"].log
    assert set(spaces["partial-finetune"]) == {"steps", "lr", "head_lr"}
    assert set(spaces["maml"]) == set(spaces["reptile"]) == {"steps", "lr"}
    assert spaces["protonet"] == {}


def test_configurations_start_with_the_defaults_and_draw_the_same_values_for_the_same_seed():
    from harness.suite import get_row

    adapter = get_row("partial-finetune").build().adapter
    first = configurations(adapter, 8, seed=0)
    assert len(first) == 8 and first[0] == {"steps": 50, "lr": 1e-4, "head_lr": 1e-3}
    assert first == configurations(adapter, 8, seed=0)  # same seed, same configurations
    assert first[1:] != configurations(adapter, 8, seed=1)[1:]
    assert len({json.dumps(c, sort_keys=True) for c in first}) == 8
    space = search_space(adapter)
    for config in first[1:]:
        for k, v in config.items():
            assert space[k].low <= v <= space[k].high
        assert isinstance(config["steps"], int)
    # the same adapter class draws the same values for every row (frozen-features and ssl-rotation: one probe)
    assert configurations(get_row("frozen-features").build().adapter, 4, 0) == \
        configurations(get_row("ssl-rotation").build().adapter, 4, 0)
    assert configurations(get_row("protonet").build().adapter, 8, 0) == [{}]


def test_log_ranges_cover_their_decades():
    rng = random.Random(0)
    draws = [Space(1e-4, 1e-1, log=True).draw(rng) for _ in range(400)]
    decades = np.histogram(np.log10(draws), bins=[-4, -3, -2, -1])[0]
    assert decades.min() > 80, decades  # log-uniform: about a third per decade, not 90% in the last one
    assert all(isinstance(Space(1, 25, integer=True).draw(rng), int) for _ in range(10))
    with pytest.raises(ValueError):
        tunable(1.0, 0.0, 1.0, log=True)


def test_the_best_trial_wins_and_the_defaults_win_ties():
    assert best([{"accuracy": 0.5}, {"accuracy": 0.7}, {"accuracy": 0.7}]) == 1
    assert best([{"accuracy": 0.5}, {"accuracy": 0.5}]) == 0


@pytest.mark.parametrize("value, episodes", [(0, 100), (-3, 100), (8, 0), (1, 0)])
def test_bad_tune_values_are_usage_errors(value, episodes):
    with pytest.raises(UsageError, match="--tune"):
        check_trials(value, episodes)


@pytest.mark.parametrize("args", [["--tune", "-1"], ["--tune", "0"], ["--tune", "x"], ["--tune", "4",
                                                                                     "--tune-episodes", "0"]])
def test_bad_tune_options_exit_2_with_one_line(args, tmp_path):
    done = subprocess.run([sys.executable, "-m", "harness", "run", "frozen-features", *args, "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "tune" in done.stderr and not (tmp_path / "run").exists()


# --- the validation pool -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A cifar10-5-5 ImageFolder with 100 base images per class: 10 per class held out when tuning."""
    return write_imagefolder(tmp_path_factory.mktemp("tune-images"), train_per_class=100, test_per_class=40)


def pixels(images: np.ndarray) -> set[str]:
    return {hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest() for x in images}


def test_held_out_validation_is_taken_out_of_the_base_pool_and_changes_the_model_fingerprint(folder, tmp_path):
    data = get_dataset("cifar10-5-5").load(folder, tmp_path / "cache")
    assert data.validation is None
    held = hold_out_validation(data)
    assert len(held.validation.labels) == len(data.base.labels) // 10 and held.validation.classes == data.base.classes
    assert len(held.base.labels) + len(held.validation.labels) == len(data.base.labels)
    assert not pixels(held.validation.images) & pixels(held.base.images)  # the source phase never trains on them
    assert not pixels(held.validation.images) & pixels(held.novel.images)  # never a novel image
    assert held.model_fingerprint != data.model_fingerprint and held.fingerprint != data.fingerprint
    assert np.array_equal(held.novel.images, data.novel.images)
    assert hold_out_validation(held) is held  # a dataset with a validation pool keeps its own


# --- end to end ----------------------------------------------------------------------------------------------


@dataclass
class Recorder(Adapter):
    """Nearest class mean on the raw pixels, with a tunable ``mark`` that does nothing but name the configuration,
    and a log of every image it is handed (as the uint8 pixels) per configuration: what the tuning saw."""

    mark: float = tunable(1.0, 2.0, 1000.0, log=True)
    log: str = ""

    def adapt(self, model, tasks, source, progress=lambda n: None):
        mean = torch.tensor(tasks.mean, dtype=tasks.images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(tasks.std, dtype=tasks.images.dtype).view(1, 3, 1, 1)
        raw = ((tasks.images * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        with open(self.log, "a") as f:
            f.write(json.dumps({"mark": self.mark, "episodes": len(tasks),
                                "images": sorted(pixels(raw[np.unique(np.concatenate(
                                    [tasks.support.flatten().numpy(), tasks.query.flatten().numpy()]))]))}) + "\n")
        flat = tasks.images.flatten(1)
        outputs = []
        for i in range(len(tasks)):
            centres = torch.stack([flat[tasks.support[i][tasks.support_labels[i] == c]].mean(0)
                                   for c in range(tasks.ways)])
            outputs.append(-torch.cdist(flat[tasks.query[i]], centres))
            progress(1)
        return outputs


def test_the_scored_episodes_never_reach_the_tuning(register_strategy, folder, tmp_path):
    """Every configuration but the chosen one sees validation images only; the chosen one sees the validation
    images and then the scored episodes. No configuration ever sees a novel image during tuning."""
    name = register_strategy(Recorder, "recorder", source="pixels")
    log = tmp_path / "seen.jsonl"
    out = tmp_path / "run"
    assert main(["run", name, "--set", f"recorder.log={log}", "--tune", "3", "--tune-episodes", "6",
                 "--data-dir", str(folder), "--out", str(out), *SMALL]) == 0
    record = records(out)["recorder-1shot"]
    tuning = record["tuning"]
    assert tuning["trials"] == 3 and tuning["episodes"] == 6 and len(tuning["tried"]) == 3
    assert "held out of the source phase" in tuning["pool"]
    marks = [t["params"]["mark"] for t in tuning["tried"]]
    chosen = marks[tuning["chosen"]]
    assert record["params"]["mark"] == chosen and tuning["untuned"]["mark"] == 1.0 and marks[0] == 1.0

    data = hold_out_validation(get_dataset("cifar10-5-5").load(folder, tmp_path / "cache"))
    validation, novel = pixels(data.validation.images.transpose(0, 3, 1, 2)), pixels(data.novel.nchw())
    seen: dict[float, set[str]] = {}
    episodes: dict[float, int] = {}
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        seen.setdefault(entry["mark"], set()).update(entry["images"])
        episodes[entry["mark"]] = episodes.get(entry["mark"], 0) + entry["episodes"]
    assert set(seen) == set(marks)
    for mark in marks:
        if mark != chosen:
            assert seen[mark] <= validation and not seen[mark] & novel, mark
            assert episodes[mark] == 6 + 1  # its validation episodes, and the first once more to count its FLOPs
    assert seen[chosen] & novel and seen[chosen] - novel <= validation
    assert record["tuning_seconds"] > 0 and record["tuning_flops"] is not None
    # the same seed makes the same choice (a new run directory: new secret, same validation episodes)
    again = tmp_path / "again"
    assert main(["run", name, "--set", f"recorder.log={tmp_path / 'again.jsonl'}", "--tune", "3", "--tune-episodes",
                 "6", "--data-dir", str(folder), "--out", str(again), *SMALL]) == 0
    other = records(again)["recorder-1shot"]["tuning"]
    assert [t["accuracy"] for t in other["tried"]] == [t["accuracy"] for t in tuning["tried"]]
    assert other["chosen"] == tuning["chosen"] and other["validation_fingerprint"] == tuning["validation_fingerprint"]

    # --tune 1, the untuned control, with the tuned run's secret: the same validation and scored episodes, seeds too
    control = tmp_path / "control"
    control.mkdir()
    (control / "secret").write_bytes((out / "secret").read_bytes())
    assert main(["run", name, "--set", f"recorder.log={tmp_path / 'control.jsonl'}", "--tune", "1",
                 "--tune-episodes", "6", "--data-dir", str(folder), "--out", str(control), *SMALL]) == 0
    plain = records(control)["recorder-1shot"]
    assert len(plain["tuning"]["tried"]) == 1 and plain["params"]["mark"] == 1.0
    assert plain["tuning"]["tried"][0]["accuracy"] == tuning["tried"][0]["accuracy"]
    assert plain["episode_fingerprint"] == record["episode_fingerprint"]
    if tuning["chosen"] == 0:
        assert plain["episode_accuracies"] == record["episode_accuracies"]
    assert "[recorder] (untuned control, validated on 6 episodes)" in (control / "leaderboard.md").read_text()

    page = (out / "leaderboard.md").read_text()
    assert "[recorder] (tuned, 3 trials on 6 validation episodes)" in page
    assert f"mark = {chosen:g} (defaults: mark = 1)" in page and "**Tuning** (`--tune`)" in page


@pytest.mark.slow
def test_learning_rates_100x_too_low_recover_with_tune(folder, tmp_path):
    """partial-finetune from a random head with both learning rates 100x below their defaults (the head barely
    moves): the tuned row finds a better configuration on the validation episodes, and scores better on the same
    scored episodes than the untuned row. (Rates 100x too high still learn this easy data, and 10,000x too high
    make the training chaotic enough that an episode adapted alone and in its batch differ, which fails the
    adapter contract check.)"""
    bad = ["--set", "partial-finetune.head_init=random", "--set", "partial-finetune.lr=1e-6", "--set",
           "partial-finetune.head_lr=1e-5"]
    common = ["partial-finetune", *bad, "--data-dir", str(folder), "--preset", "smoke", "--shots", "5", "--queries",
              "5", "--episodes", "20", "--quiet"]
    assert main(["run", *common, "--out", str(tmp_path / "plain")]) == 0
    assert main(["run", *common, "--tune", "6", "--tune-episodes", "10", "--out", str(tmp_path / "tuned")]) == 0
    plain = records(tmp_path / "plain")["partial-finetune-5shot"]
    tuned = records(tmp_path / "tuned")["partial-finetune-5shot"]
    tried = tuned["tuning"]["tried"]
    assert tuned["tuning"]["chosen"] != 0 and tried[tuned["tuning"]["chosen"]]["accuracy"] > tried[0]["accuracy"]
    assert tuned["params"]["head_lr"] > 1e-5 and tuned["accuracy"] > plain["accuracy"] + 0.1, (plain["accuracy"],
                                                                                         tuned["accuracy"], tried)


@pytest.mark.slow
def test_resume_keeps_the_finished_configurations(register_strategy, folder, tmp_path):
    """Killed after its second configuration, a rerun reuses the two and evaluates the rest."""
    name = register_strategy(Recorder, "recorder", source="pixels")
    log = tmp_path / "seen.jsonl"
    out = tmp_path / "run"
    args = ["run", name, "--set", f"recorder.log={log}", "--tune", "4", "--tune-episodes", "6", "--data-dir",
            str(folder), "--out", str(out), *SMALL]
    env = {**os.environ, "HARNESS_FAULT": "tuning-trial:2"}
    killed = subprocess.run([sys.executable, "-c", "import sys; from harness.cli import main; "
                             "sys.path.insert(0, 'tests'); sys.path.insert(0, 'tests/test_harness'); "
                             "import test_tuning; "
                             "from harness.suite import register; register(test_tuning.Recorder, source='pixels', "
                             "name='recorder'); sys.exit(main(sys.argv[1:]))", *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert killed.returncode != 0 and not (out / "records" / "recorder-1shot.json").exists(), killed.stderr
    assert len(list((out / "tuning").glob("*.json"))) == 2
    log.write_text("")
    assert main(args) == 0
    tuning = records(out)["recorder-1shot"]["tuning"]
    assert [bool(t.get("reused")) for t in tuning["tried"]] == [True, True, False, False]
    marks_run = {json.loads(line)["mark"] for line in log.read_text().splitlines()}
    chosen = tuning["tried"][tuning["chosen"]]["params"]["mark"]
    assert marks_run == {t["params"]["mark"] for t in tuning["tried"][2:]} | {chosen}  # the first two: not rerun


@pytest.mark.slow
def test_cifar_fs_tunes_on_its_validation_classes(tmp_path):
    root = tmp_path / "cifar100"
    write_cifar100(root, train_per_class=12, test_per_class=6)
    out = tmp_path / "run"
    assert main(["run", "frozen-features", "--dataset", "cifar-fs", "--data-dir", str(root), "--tune", "3",
                 "--tune-episodes", "4", "--out", str(out), *SMALL]) == 0
    tuning = records(out)["frozen-features-1shot"]["tuning"]
    assert tuning["pool"].startswith("16 validation classes: ") and len(tuning["tried"]) == 3
    data = get_dataset("cifar-fs").load(root, tmp_path / "cache")
    config = json.loads((out / "config.json").read_text())
    assert config["protocol"]["data_fingerprint"] == data.fingerprint  # its own validation pool: nothing held out


def test_plan_adds_the_tuning_time(tmp_path):
    from harness.estimate import tuning_seconds
    from harness.schema import Record

    untuned = Record(status="ok", episode_seconds=30.0, episodes=300, source_keys=["a"])
    assert tuning_seconds(untuned) == 0.0
    assert tuning_seconds(untuned, 8, 100) == pytest.approx(0.1 * 8 * 100)
    tuned = dataclasses.replace(untuned, tuning={"tried": [{}] * 4, "episodes": 50}, tuning_seconds=20.0)
    assert tuning_seconds(tuned) == 20.0 and tuning_seconds(tuned, 8, 100) == pytest.approx(20.0 / 200 * 800)
    nothing = dataclasses.replace(untuned, tuning={"tried": [{}], "episodes": 50}, tuning_seconds=5.0)
    assert tuning_seconds(nothing, 8, 50) == pytest.approx(5.0)  # nothing to tune: one configuration


def test_list_shows_the_search_spaces():
    done = subprocess.run([sys.executable, "-m", "harness", "list", "--tunable"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert "C: log-uniform [0.01, 1000] (default 10)" in lines["frozen-features"]
    assert "lr: log-uniform [0.001, 1] (default the source's)" in lines["maml"]
    assert "nothing to tune" in lines["protonet"] and "not tuned" in done.stdout


def test_with_params_copies_the_row_and_checks_the_values():
    from harness.suite import get_row
    from harness.tuning import with_params

    row = get_row("frozen-features").build()
    tried = with_params(row, {"C": 0.5})
    assert tried.adapter.C == 0.5 and row.adapter.C == 10.0 and tried.source is row.source
    with pytest.raises(UsageError):
        with_params(row, {"C": -1.0})
