"""The real CLI, end to end, on synthetic data in the real on-disk formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import registry
from harness.cli import main

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=900)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def test_help_and_list_are_quick_and_complete():
    out = cli("--help")
    assert out.returncode == 0 and "run" in out.stdout and "report" in out.stdout
    listed = cli("list").stdout
    for name in registry.STRATEGIES.names():
        assert name in listed


@pytest.mark.slow
def test_run_all_smoke_then_report(imagefolder_dir, tmp_path):
    run_dir, report = tmp_path / "run", tmp_path / "board.md"
    out = cli("run", "--all", "--preset", "smoke", "--episodes", "4", "--data-dir", str(imagefolder_dir), "--out",
              str(run_dir), "--report", str(report), "--quiet")
    assert out.returncode == 0, out.stderr
    records = [json.loads(p.read_text()) for p in (run_dir / "records").glob("*.json")]
    names = set(registry.STRATEGIES.names())
    assert {(r["strategy"], r["shots"]) for r in records} == {(n, s) for n in names for s in (1, 5)}
    external = {r["strategy"] for r in records if r["family"] == "external"}
    assert external and all(r["status"] == "skipped" and "model file" in r["reason"]  # no file given
                            for r in records if r["strategy"] in external)
    records = [r for r in records if r["strategy"] not in external]
    fingerprints = {s: {r["episode_fingerprint"] for r in records if r["shots"] == s} for s in (1, 5)}
    assert all(len(f) == 1 for f in fingerprints.values())  # every strategy scored on the same episodes
    for r in records:
        assert r["status"] == "ok" and len(r["episode_accuracies"]) == r["episodes"] == 4
        trains = r["family"] != "no-transfer"  # pixels-probe, random-probe: no source phase, no throughput
        assert (r["source_images_per_second"] > 0) == trains and r["ms_per_episode"] > 0 and r["device"]
    config = json.loads((run_dir / "config.json").read_text())
    env = json.loads((run_dir / "environment.json").read_text())
    assert config["protocol"]["preset"] == "smoke" and env["torch"] and env["data_fingerprint"]

    rendered = tmp_path / "again.md"
    out = cli("report", str(run_dir), "--out", str(rendered))
    assert out.returncode == 0, out.stderr
    text = rendered.read_text()
    assert text == report.read_text()  # a pure function of the results files
    assert "## 1-shot" in text and "## 5-shot" in text
    for name in names - external:  # one ranking row per shot setting
        assert text.count(f"| [{name}] ") == 2
    for name in external:  # skipped (no model file): listed under "Not ranked" with the reason, per shot setting
        assert text.count(f"- {name}: skipped: needs your model file") == 2

    # rerunning into the same directory resumes: nothing is recomputed
    before = snapshot(run_dir / "records")
    out = cli("run", "--all", "--preset", "smoke", "--episodes", "4", "--data-dir", str(imagefolder_dir), "--out",
              str(run_dir), "--report", str(report), "--quiet")
    assert out.returncode == 0 and "already complete" in out.stderr
    assert snapshot(run_dir / "records") == before


@pytest.mark.slow
def test_shared_source_phase_trains_once(batches_dir, tmp_path):
    out = cli("run", "frozen-features", "partial-finetune", "--preset", "smoke", "--shots", "1",
              "--data-dir", str(batches_dir), "--out", str(tmp_path / "r"), "--report", str(tmp_path / "b.md"),
              "--quiet", env={"HARNESS_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    records = {json.loads(p.read_text())["strategy"]: json.loads(p.read_text())
               for p in (tmp_path / "r" / "records").glob("*.json")}
    assert records["frozen-features"]["source_keys"] == records["partial-finetune"]["source_keys"]
    assert [r["source_cached"] for r in records.values()] == [False, False]  # trained in this run, not loaded
    assert records["frozen-features"]["source_seconds"] == records["partial-finetune"]["source_seconds"]
    assert len(list((tmp_path / "cache" / "source").glob("*.pt"))) == 1  # trained once, stored once


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return int(e.code)


def _damaged_copy(tmp: Path, damage: str) -> Path:
    from synthetic import write_batches, write_imagefolder

    if damage == "batch":
        root = write_batches(tmp / "damaged", train_per_class=1, test_per_class=1)
        (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"\x80\x04truncated")
        return root
    root = write_imagefolder(tmp / "damaged", train_per_class=1, test_per_class=1)
    if damage == "class":
        for f in (root / "test" / "ship").iterdir():
            f.unlink()
        (root / "test" / "ship").rmdir()
    else:
        next((root / "train" / "dog").iterdir()).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def _setup(case: str, tmp: Path) -> list[str]:
    """Files a bad-input case needs; returns the extra arguments."""
    if case == "toml-syntax":
        (tmp / "c.toml").write_text("[frozen-features\nC = 1\n")
        return ["--config", str(tmp / "c.toml")]
    if case == "toml-table":
        (tmp / "c.toml").write_text("[frozen-featurs]\nC = 1.0\n")
        return ["--config", str(tmp / "c.toml")]
    if case == "toml-key":
        (tmp / "c.toml").write_text("[frozen-features]\nCC = 1.0\n")
        return ["--config", str(tmp / "c.toml")]
    if case == "toml-type":
        (tmp / "c.toml").write_text('[partial-finetune]\nsteps = "many"\n')
        return ["--config", str(tmp / "c.toml")]
    if case == "toml-run-key":
        (tmp / "c.toml").write_text("[run]\nepsiodes = 3\n")
        return ["--config", str(tmp / "c.toml")]
    if case == "data-archive":
        (tmp / "cifar.tar.gz").write_bytes(b"archive")
        return ["--data-dir", str(tmp / "cifar.tar.gz")]
    if case == "out-unwritable":
        (tmp / "a-file").write_text("keep me")
        return ["--out", str(tmp / "a-file" / "run")]
    if case in ("old-schema", "other-protocol"):
        from harness.schema import RunHeader

        old = tmp / "old"
        old.mkdir()
        config = {"schema_version": 1} if case == "old-schema" else RunHeader(
            protocol={"preset": "smoke", "dataset": "cifar10-5-5", "ways": 5, "queries": 15, "episodes": 99,
                      "seed": 0}).to_json()
        (old / "config.json").write_text(json.dumps(config))
        return ["--out", str(old), "--preset", "smoke"]
    if case == "out-not-run":
        (tmp / "stuff").mkdir()
        (tmp / "stuff" / "notes.txt").write_text("mine")
        return ["--out", str(tmp / "stuff")]
    if case == "bad-secret":  # a copied secret file that is not one: the seeds would not be the run's
        (tmp / "copy").mkdir()
        (tmp / "copy" / "secret").write_text("0123\n")
        return ["--out", str(tmp / "copy")]
    if case == "resume-not-run":
        (tmp / "empty").mkdir()
        return ["--resume", str(tmp / "empty")]
    if case.startswith("data-"):
        return ["--data-dir", str(_damaged_copy(tmp, case[len("data-"):]))]
    return []


BAD_INPUTS = [
    (["run", "frozen-feature"], "", "unknown strategy 'frozen-feature' (did you mean 'frozen-features'?)"),
    (["run"], "", "no strategy given"),
    (["run", "--all", "--preset", "quik"], "", "unknown preset 'quik' (did you mean 'quick'?)"),
    (["run", "--all", "--split", "cifar10-5"], "", "unknown dataset 'cifar10-5'"),
    (["run", "--all", "--dataset", "cifar10-5-5-swaped"], "", "(did you mean 'cifar10-5-5-swapped'?)"),
    (["run", "--all", "--backbone", "resnet"], "", "unknown backbone 'resnet'"),
    (["run", "keras-frozen-features", "--backbone", "resnet12"], "", "runs on the conv4 backbone only"),
    (["run", "--all", "--executor", "lokal"], "", "unknown executor 'lokal' (did you mean 'local'?)"),
    (["run", "--all", "--set", "frozen-features.source.backbone=resnet"], "", "unknown backbone 'resnet'"),
    (["run", "--all", "--device", "tpu"], "", "unknown device 'tpu'"),
    pytest.param(["run", "--all", "--device", "cuda"], "", "no CUDA GPU is available",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")),
    (["run", "--all", "--set", "frozen-features.C"], "", "is malformed"),
    (["run", "--all", "--budget", "metaa=5"], "", "unknown budget group in --budget 'metaa' (did you mean 'meta'?)"),
    (["run", "--all", "--budget", "meta=0"], "", "the budget must be a positive number of images, got 0"),
    (["run", "--all", "--budget", "meta=lots"], "", "'lots' is not a whole number of images"),
    (["run", "--all", "--budget", "meta"], "", "is malformed; write --budget GROUP=N"),
    (["run", "--all", "--budget-scale", "0"], "", "must be positive, got 0"),
    (["run", "--all", "--budget-scale", "0.5,x"], "", "'x' is not a number"),
    (["run", "--all", "--precision", "fp16"], "", "unknown precision 'fp16'"),
    (["run", "--all", "--replicates", "0"], "", "must be a positive integer"),
    (["run", "--all", "--set", "frozen-features.CC=1"], "", "unknown parameter 'CC' (did you mean 'C'?)"),
    (["run", "--all", "--set", "frozen-features.max_iter=many"], "", "expected a value of type int"),
    (["run", "--all", "--set", "nope.C=1"], "", "unknown strategy in --set 'nope'"),
    (["run", "--all"], "toml-syntax", "is not valid TOML"),
    (["run", "--all"], "toml-table", "(did you mean 'frozen-features'?)"),
    (["run", "--all"], "toml-key", "unknown parameter 'CC'"),
    (["run", "--all"], "toml-type", "partial-finetune.steps: expected a value of type int"),
    (["run", "--all", "--shots", "0"], "", "must be a positive integer"),
    (["run", "--all", "--ways", "0"], "", "must be a positive integer"),
    (["run", "--all", "--queries", "-3"], "", "must be a positive integer"),
    (["run", "--all", "--episodes", "0"], "", "must be a positive integer"),
    (["run", "--all", "--ways", "6"], "", "exceeds the 5 novel classes"),
    (["run", "--all", "--shots", "150", "--queries", "15"], "", "exceeds the 160 images"),
    (["run", "--all", "--data-dir", "/nonexistent/cifar"], "", "does not exist"),
    (["run", "--all"], "data-archive", "is an archive, not a folder; extract it first"),
    (["run", "--all", "--dataset", "/nonexistent/birds.toml"], "", "birds.toml does not exist"),
    (["run", "--all"], "toml-run-key", "unknown [run] setting 'epsiodes' (did you mean 'episodes'?)"),
    (["run", "--all"], "data-class", "lacks class folder(s) ship"),
    (["run", "--all"], "data-image", "cannot decode image"),
    (["run", "--all"], "data-batch", "cannot read CIFAR-10 batch"),
    (["run", "--all"], "out-unwritable", "is not a writable directory"),
    (["run", "--all"], "old-schema", "incompatible harness"),
    (["run", "--all"], "other-protocol", "episodes 99 there, 8 now"),
    (["run", "--all"], "out-not-run", "exists and is not a run directory"),
    (["run", "--all"], "bad-secret", "is not a run secret (32 lowercase hex digits)"),
    (["run", "--all"], "resume-not-run", "is not a run directory (no config.json)"),
    (["report", "/nonexistent/run"], "", "is not a run directory"),
]


@pytest.mark.parametrize("args, case, message", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_nothing_written(args, case, message, imagefolder_dir, tmp_path, capsys):
    extra = _setup(case, tmp_path)
    if args[0] == "run":
        if "--data-dir" not in args + extra:
            extra += ["--data-dir", str(imagefolder_dir)]
        if "--out" not in extra and "--resume" not in extra:
            extra += ["--out", str(tmp_path / "out")]
        extra += ["--report", str(tmp_path / "r.md")]
    else:
        extra += ["--out", str(tmp_path / "r.md")]
    before = snapshot_except_cache(tmp_path)
    code = exit_code([*args, *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert snapshot_except_cache(tmp_path) == before  # nothing written, nothing overwritten


def snapshot_except_cache(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in snapshot(folder).items() if not k.startswith(str(folder / "cache"))}


def test_argparse_errors_are_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--ways", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1


def test_no_data_error_exit_2(tmp_path, capsys):
    code = main(["run", "--all", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "no CIFAR-10 found" in err and "--data-dir" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_bad_input_with_tensorflow_rows_is_still_one_line(tmp_path):
    """TensorFlow's C++ start-up lines (absl, oneDNN) are dropped at its import: a fresh process running
    ``run --all`` (Keras rows included) prints nothing before its one-line error."""
    pytest.importorskip("tensorflow")  # the Keras rows are skipped without it: nothing to silence
    out = cli("run", "--all", "--preset", "smoke", "--data-dir", str(tmp_path / "missing"), "--out",
              str(tmp_path / "o"))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        f"harness run: error: data directory {tmp_path / 'missing'} does not exist; pass --data-dir with an "
        f"existing folder"]
