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
    for name in registry.load_all():
        assert name in listed


def test_run_all_smoke_then_report(imagefolder_dir, tmp_path):
    run_dir, report = tmp_path / "run", tmp_path / "board.md"
    out = cli("run", "--all", "--preset", "smoke", "--data-dir", str(imagefolder_dir), "--out", str(run_dir),
              "--report", str(report), "--quiet")
    assert out.returncode == 0, out.stderr
    records = [json.loads(p.read_text()) for p in (run_dir / "records").glob("*.json")]
    names = set(registry.load_all())
    assert {(r["strategy"], r["shots"]) for r in records} == {(n, s) for n in names for s in (1, 5)}
    fingerprints = {s: {r["episode_fingerprint"] for r in records if r["shots"] == s} for s in (1, 5)}
    assert all(len(f) == 1 for f in fingerprints.values())  # every strategy scored on the same episodes
    for r in records:
        assert r["status"] == "ok" and len(r["episode_accuracies"]) == r["episodes"] == 8
        assert r["source_images_per_second"] > 0 and r["ms_per_episode"] > 0 and r["device"]
    config = json.loads((run_dir / "config.json").read_text())
    env = json.loads((run_dir / "environment.json").read_text())
    assert config["protocol"]["preset"] == "smoke" and env["torch"] and env["data_fingerprint"]

    rendered = tmp_path / "again.md"
    out = cli("report", str(run_dir), "--out", str(rendered))
    assert out.returncode == 0, out.stderr
    text = rendered.read_text()
    assert text == report.read_text()  # a pure function of the results files
    assert "## 1-shot" in text and "## 5-shot" in text
    for name in names:
        assert text.count(f"| {name} ") == 2

    # rerunning into the same directory resumes: nothing is recomputed
    before = snapshot(run_dir / "records")
    out = cli("run", "--all", "--preset", "smoke", "--data-dir", str(imagefolder_dir), "--out", str(run_dir),
              "--report", str(report), "--quiet")
    assert out.returncode == 0 and "already complete" in out.stderr
    assert snapshot(run_dir / "records") == before


def test_shared_source_phase_trains_once(batches_dir, tmp_path):
    out = cli("run", "frozen-features", "partial-finetune", "--preset", "smoke", "--shots", "1",
              "--data-dir", str(batches_dir), "--out", str(tmp_path / "r"), "--report", str(tmp_path / "b.md"),
              "--quiet")
    assert out.returncode == 0, out.stderr
    records = {json.loads(p.read_text())["strategy"]: json.loads(p.read_text())
               for p in (tmp_path / "r" / "records").glob("*.json")}
    assert records["frozen-features"]["source_key"] == records["partial-finetune"]["source_key"]
    assert [r["source_cached"] for r in records.values()].count(False) == 1


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return int(e.code)


@pytest.mark.parametrize("args, message", [
    (["run", "frozen-feature"], "unknown strategy 'frozen-feature' (did you mean 'frozen-features'?)"),
    (["run"], "no strategy given"),
    (["run", "--all", "--preset", "quik"], "unknown preset 'quik' (did you mean 'quick'?)"),
    (["run", "--all", "--split", "cifar10-5"], "unknown split 'cifar10-5'"),
    (["run", "--all", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "--all", "--set", "frozen-features.C"], "is malformed"),
    (["run", "--all", "--set", "frozen-features.CC=1"], "unknown parameter 'CC' (did you mean 'C'?)"),
    (["run", "--all", "--set", "frozen-features.max_iter=many"], "expected a value of type int"),
    (["run", "--all", "--shots", "0"], "must be a positive integer"),
    (["run", "--all", "--ways", "6"], "exceeds the 5 novel classes"),
    (["run", "--all", "--shots", "25", "--queries", "10"], "exceeds the 30 images"),
    (["run", "--all", "--data-dir", "/nonexistent/cifar"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(args, message, imagefolder_dir, tmp_path, capsys):
    out = tmp_path / "out"
    if "--data-dir" not in args:
        args = [*args, "--data-dir", str(imagefolder_dir)]
    code = exit_code([*args, "--out", str(out), "--report", str(tmp_path / "r.md")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "r.md").exists()


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
