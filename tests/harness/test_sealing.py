"""Sealed episodes: a strategy gets its episodes' support images, support labels and query images, and
nothing from which a query's class can be derived. Deliberately cheating strategies try every other thing
they receive (image positions, index arithmetic, query order, seeds, batch layout) and score at chance."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.episodes import EpisodeSet
from harness.phases import Adapter

WAYS, EPISODES = 5, 60


@dataclass
class Cheater(Adapter):
    """Predicts query labels from what it receives other than image contents."""

    trick: str = "index-blocks"

    def adapt(self, model, tasks, source, progress=lambda n: None):
        u = len(tasks.images)
        outputs = []
        for i in range(len(tasks)):
            support, labels, query = tasks.support[i], tasks.support_labels[i], tasks.query[i]
            q = len(query)
            if self.trick == "index-blocks":  # the pool was sorted by class: index // class size, matched
                block = lambda x: (x * tasks.ways // u).clamp(max=tasks.ways - 1)  # noqa: E731 - to the support
                table = torch.zeros(tasks.ways, dtype=torch.long)
                table[block(support)] = labels
                guess = table[block(query)]
            elif self.trick == "nearest-support-index":  # a query near a support image in storage order
                nearest = (query[:, None] - support[None, :]).abs().argmin(1)
                guess = labels[nearest]
            elif self.trick == "query-position":  # queries grouped by class in order
                guess = torch.arange(q) * tasks.ways // q
            elif self.trick == "seed":
                guess = torch.as_tensor(np.random.default_rng(tasks.seeds[i]).integers(0, tasks.ways, q))
            elif self.trick == "image-order-rank":  # rank of the query among this episode's images
                ranks = torch.argsort(torch.argsort(torch.cat([support, query])))[len(support):]
                guess = ranks * tasks.ways // (len(support) + q)
            else:
                raise ValueError(self.trick)
            outputs.append(torch.nn.functional.one_hot(guess.long(), tasks.ways).float())
            progress(1)
        return outputs


TRICKS = ["index-blocks", "nearest-support-index", "query-position", "seed", "image-order-rank"]


@pytest.fixture
def cheaters(register_strategy):
    return register_strategy(Cheater, "cheater")


@pytest.mark.parametrize("trick", TRICKS)
def test_cheating_scores_chance(trick, cheaters, imagefolder_dir, tmp_path):
    out = tmp_path / "run"
    assert main(["run", cheaters, "--set", f"cheater.trick={trick}", "--preset", "smoke", "--shots", "1",
                 "--episodes", str(EPISODES), "--data-dir", str(imagefolder_dir), "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "records" / "cheater-1shot.json").read_text())
    n = EPISODES * WAYS * 15
    assert abs(record["accuracy"] - 1 / WAYS) < 4 * np.sqrt(0.2 * 0.8 / n), (trick, record["accuracy"])


def test_the_same_tricks_would_win_on_an_unsealed_pool():
    """Before sealing, images sat in pool order (sorted by class): the index trick scored 100%. Here the
    cheater gets an identity-ordered batch, as the old Task.query_index allowed, and wins: the chance-level
    scores above come from the sealing, not from a broken cheater."""
    labels = np.repeat(np.arange(5), 30)
    es = EpisodeSet.draw(labels, range(5), 5, 1, 15, 20, seed=0)
    pool = torch.zeros(len(labels), 3, 4, 4)
    sealed = es.batch(pool)
    unsealed = type(sealed)(pool, torch.as_tensor(np.stack([e.support for e in es.episodes])), sealed.support_labels,
                            torch.as_tensor(np.stack([e.query for e in es.episodes])), sealed.seeds, 5)
    win = es.accuracies([o.argmax(1) for o in Cheater("index-blocks").adapt(None, unsealed, None)]).mean()
    chance = es.accuracies([o.argmax(1) for o in Cheater("index-blocks").adapt(None, sealed, None)]).mean()
    assert win == 1.0 and chance < 0.4
