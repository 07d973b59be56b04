"""The GPU check script's pieces that run anywhere: the shell script parses, and its table is built from
a real run directory and a real pytest-benchmark file (on a CPU here; on a GPU with scripts/gpu_check.sh)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_check.sh")]).returncode == 0


@pytest.mark.slow
def test_the_table_from_a_run_and_benchmarks(imagefolder_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "frozen-features", "protonet", "--preset", "smoke", "--shots", "1", "--data-dir",
                 str(imagefolder_dir), "--out", str(out), "--quiet"]) == 0
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"benchmarks": [
        {"name": "test_maml_meta_step[second-order-loop-1]", "stats": {"mean": 0.5},
         "extra_info": {"tasks_per_call": 4}},
        {"name": "test_source_phase_images_per_second[supervised]", "stats": {"mean": 1.0},
         "extra_info": {"images_per_second": 1234.0, "base_images_per_second": 1234.0}}]}))
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_report.py"), str(out), "--benchmarks",
                             str(bench), "--wall-seconds", "42"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("device: CPU") and "precision fp32" in text
    for expected in ("SupervisedPretraining", "ProtonetTraining (1-shot)", "| frozen-features ", "8.0 tasks/s",
                     "1,234 img/s", "run --all wall time: 42 s", "paper preset"):
        assert expected in text, expected
