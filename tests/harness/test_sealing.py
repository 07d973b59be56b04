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
        links = link_labels(tasks) if self.trick == "cross-episode" else None
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
            elif self.trick == "cross-episode":  # a query that is a support image of another episode
                guess = cross_episode_guess(tasks, i, links)
            else:
                raise ValueError(self.trick)
            outputs.append(torch.nn.functional.one_hot(guess.long(), tasks.ways).float())
            progress(1)
        return outputs


def link_labels(tasks):
    """Support images recur across the episodes of a batch (stored once): join the (episode, label) pairs that
    share one, so labels can be read across episodes. Returns (find, image -> one (episode, label) node)."""
    parent = list(range(len(tasks) * tasks.ways))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[int, int] = {}
    for e in range(len(tasks)):
        for image, label in zip(tasks.support[e].tolist(), tasks.support_labels[e].tolist(), strict=True):
            node = e * tasks.ways + label
            if image in first:
                parent[find(node)] = find(first[image])
            else:
                first[image] = node
    return find, first


def cross_episode_guess(tasks, i, links):
    """Episode ``i``'s query labels read from the episodes where the query images are support images."""
    find, first = links
    mine = {find(i * tasks.ways + label): label for label in range(tasks.ways)}
    return torch.tensor([mine.get(find(first[q]), 0) if q in first else 0 for q in tasks.query[i].tolist()])


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


def test_linking_labels_across_episodes_would_win_but_the_harness_fails_the_row(cheaters, imagefolder_dir,
                                                                                 tmp_path):
    """De-duplicated images let an adapter that reads the whole batch link labels across episodes (a query
    that is another episode's support image). Scored directly it beats chance by far; the harness adapts one
    hidden episode alone too, sees the output change, and fails the row with the reason."""
    labels = np.repeat(np.arange(5), 30)
    es = EpisodeSet.draw(labels, range(5), 5, 5, 15, 40, seed=0)
    tasks = es.batch(torch.zeros(len(labels), 3, 4, 4))
    won = es.accuracies([o.argmax(1) for o in Cheater("cross-episode").adapt(None, tasks, None)]).mean()
    alone = es.accuracies([Cheater("cross-episode").adapt(None, tasks[k:k + 1], None)[0].argmax(1)
                           for k in range(len(tasks))]).mean()
    assert won > 0.8 and alone < 0.4, (won, alone)

    out = tmp_path / "run"
    assert main(["run", cheaters, "--set", "cheater.trick=cross-episode", "--preset", "smoke", "--shots", "5",
                 "--episodes", "40", "--data-dir", str(imagefolder_dir), "--out", str(out), "--quiet"]) == 1
    record = json.loads((out / "records" / "cheater-5shot.json").read_text())
    assert record["status"] == "failed" and "breaks the adapter contract" in record["reason"], record["reason"]
