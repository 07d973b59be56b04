"""How the runner scores extra outputs (e.g. robust logits) next to the clean ones."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from harness.cli import main
from harness.phases import EpisodeAdapter
from strategies.features import embed


@dataclass
class _WithExtra(EpisodeAdapter):
    """Nearest class mean, plus an extra output derived from the clean logits."""

    shift: int = 0  # the extra output predicts clean + shift (mod ways)

    def adapt_episode(self, model, task, source):
        s, q = embed(model, task.support_images), embed(model, task.query_images)
        means = torch.stack([s[task.support_labels == c].mean(0) for c in range(task.ways)])
        logits = -torch.cdist(q, means)
        return {"logits": logits, "robust": logits.roll(self.shift, dims=1)}


@pytest.fixture
def with_extra(register_strategy):
    return register_strategy(_WithExtra, "with-extra")


@pytest.mark.parametrize("shift", [0, 1])
def test_extra_outputs_count_only_where_the_clean_prediction_is_right(shift, with_extra, imagefolder_dir,
                                                                     tmp_path):
    code = main(["run", with_extra, "--preset", "smoke", "--shots", "5", "--set", f"with-extra.shift={shift}",
                 "--data-dir", str(imagefolder_dir), "--out", str(tmp_path / "run"), "--report",
                 str(tmp_path / "r.md"), "--quiet"])
    assert code == 0
    record = json.loads((tmp_path / "run" / "records" / "with-extra-5shot.json").read_text())
    assert record["accuracy"] > 0.5
    expected = record["accuracy"] if shift == 0 else 0.0  # same predictions / always moved off the right class
    assert record["metrics"]["clean_and_robust_accuracy"] == pytest.approx(expected)
    assert "clean_and_robust_ci95" in record["metrics"]
