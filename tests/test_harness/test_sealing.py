"""Sealed episodes: a strategy gets its episodes' support images, support labels and query images, and
nothing from which a query's class can be derived. Deliberately cheating strategies try every other thing
they receive (image positions, index arithmetic, query order, seeds, batch layout) and score at chance."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from synthetic import MEAN, STD, index_keys

from harness.cli import main
from harness.episodes import EpisodeSet, content_keys
from harness.phases import Adapter

WAYS, EPISODES = 5, 60


@dataclass
class Cheater(Adapter):
    """Predicts query labels from what it receives other than image contents."""

    trick: str = "index-blocks"
    class_size: int = 0  # replay tricks: what the cheater knows of the novel pool (public for CIFAR-10)...
    seed: int = 0  # ...the run seed (0 unless --seed)...
    fingerprint: str = ""  # ...and the data fingerprint (computable for a known copy)

    def adapt(self, model, tasks, source, progress=lambda n: None):
        u = len(tasks.images)
        links = link_labels(tasks) if self.trick == "cross-episode" else None
        replay = self.replayed(tasks) if self.trick.startswith("replay") else None
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
            elif self.trick == "replay-queries":  # the query order, replayed from the seed and index keys
                guess = torch.as_tensor(replay.episodes[i].query_labels)
            elif self.trick == "replay-storage":  # the storage order, replayed from the seed and index keys
                stored = replay.batch(torch.arange(len(replay_labels(self)), dtype=torch.float64)[:, None],
                                      tasks.mean, tasks.std).images
                pool_class = stored[:, 0].long() // self.class_size  # a pool sorted by class
                table = torch.zeros(int(pool_class.max()) + 1, dtype=torch.long)
                table[pool_class[support]] = labels  # pool class -> this episode's label, from the support set
                guess = table[pool_class[query]]
            else:
                raise ValueError(self.trick)
            outputs.append(torch.nn.functional.one_hot(guess.long(), tasks.ways).float())
            progress(1)
        return outputs


def replay_labels(cheater) -> np.ndarray:
    """A novel pool of the public class sizes, sorted by class (as an ImageFolder tree is read)."""
    return np.repeat(np.arange(5), cheater.class_size)


def _replayed(cheater, tasks) -> EpisodeSet:
    """The received episodes, replayed with the harness's own sampler from what the cheater knows (no pixels:
    :func:`index_keys` in their place): each found among the replayed ones by its seed, so the replay matches a
    batch of any episodes, in order."""
    queries = tasks.queries_per_episode // tasks.ways
    shots = tasks.support.shape[1] // tasks.ways
    labels = replay_labels(cheater)
    every = EpisodeSet.draw(labels, range(5), tasks.ways, shots, queries, 200, cheater.seed, cheater.fingerprint,
                            index_keys(len(labels)))
    by_seed = {e.seed: e for e in every.episodes}
    return dataclasses.replace(every, episodes=[by_seed[seed] for seed in tasks.seeds])


Cheater.replayed = _replayed


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


TRICKS = ["index-blocks", "nearest-support-index", "query-position", "seed", "image-order-rank", "replay-queries",
          "replay-storage"]


@pytest.fixture
def cheaters(register_strategy):
    return register_strategy(Cheater, "cheater")


def known(imagefolder_dir, tmp_path) -> list[str]:
    """--set arguments giving the cheater all a strategy could know but the pool's pixels: the class size,
    the run seed and the data fingerprint."""
    from harness.datasets import get_dataset

    data = get_dataset("cifar10-5-5").load(imagefolder_dir, tmp_path / "cache")
    size = set(data.novel.class_sizes())
    assert len(size) == 1
    return ["--set", f"cheater.class_size={size.pop()}", "--set", "cheater.seed=0", "--set",
            f"cheater.fingerprint={data.fingerprint}"]


@pytest.mark.parametrize("trick", TRICKS)
def test_cheating_scores_chance(trick, cheaters, imagefolder_dir, tmp_path):
    """Through the harness: the cheater either scores chance, or (a trick whose guesses depend on the batch it
    is handed) its row fails the adapter contract; either way it gains nothing. Scored directly on a sealed
    batch, bypassing that check, it scores chance too."""
    out = tmp_path / "run"
    code = main(["run", cheaters, "--set", f"cheater.trick={trick}", *known(imagefolder_dir, tmp_path), "--preset",
                 "smoke", "--shots", "1", "--episodes", str(EPISODES), "--data-dir", str(imagefolder_dir),
                 "--out", str(out), "--quiet"])
    record = json.loads((out / "records" / "cheater-1shot.json").read_text())
    n = EPISODES * WAYS * 15
    if record["status"] == "failed":  # the contract check, or the replay finding no episode of its seeds
        assert code == 1 and ("breaks the adapter contract" in record["reason"]
                              or trick.startswith("replay") and record["reason"].startswith("KeyError")), record
    else:
        assert code == 0 and abs(record["accuracy"] - 1 / WAYS) < 4 * np.sqrt(0.2 * 0.8 / n), (trick, record)

    labels = np.repeat(np.arange(5), 40)  # directly: a pool sorted by class, its content order, 60 episodes
    pool = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (len(labels), 3, 4, 4), dtype=np.uint8))
    es = EpisodeSet.draw(labels, range(5), WAYS, 1, 15, EPISODES, seed=0, data_fingerprint="fp",
                         content=content_keys(pool.numpy()))
    cheater = Cheater(trick, class_size=40, seed=0, fingerprint="fp")
    accuracy = es.accuracies([o.argmax(1) for o in cheater.adapt(None, es.batch(pool.double(), MEAN, STD),
                                                                 None)]).mean()
    assert abs(accuracy - 1 / WAYS) < 4 * np.sqrt(0.2 * 0.8 / n), (trick, accuracy)


def test_replaying_the_sampler_would_win_without_the_content_order():
    """With keys a strategy can compute without the pixels (:func:`index_keys`: an order as replayable as the
    seed-derived one of earlier versions), replaying the sampler reads every query label; with the pixels'
    content keys, chance."""
    labels = np.repeat(np.arange(5), 30)
    pool = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (150, 3, 4, 4), dtype=np.uint8))
    content = content_keys(pool.numpy())
    for trick in ("replay-queries", "replay-storage"):
        cheater = Cheater(trick, class_size=30, seed=0, fingerprint="fp")
        scores = []
        for keys in (index_keys(len(labels)), content):
            es = EpisodeSet.draw(labels, range(5), 5, 1, 15, 40, seed=0, data_fingerprint="fp", content=keys)
            tasks = es.batch(pool.double(), MEAN, STD)
            scores.append(es.accuracies([o.argmax(1) for o in cheater.adapt(None, tasks, None)]).mean())
        assert scores[0] == 1.0 and scores[1] < 0.4, (trick, scores)


def test_the_same_tricks_would_win_on_an_unsealed_pool():
    """Before sealing, images sat in pool order (sorted by class): the index trick scored 100%. Here the
    cheater gets an identity-ordered batch, as the old Task.query_index allowed, and wins: the chance-level
    scores above come from the sealing, not from a broken cheater."""
    labels = np.repeat(np.arange(5), 30)
    es = EpisodeSet.draw(labels, range(5), 5, 1, 15, 20, seed=0, data_fingerprint="", content=index_keys(len(labels)))
    pool = torch.zeros(len(labels), 3, 4, 4)
    sealed = es.batch(pool, MEAN, STD)
    unsealed = type(sealed)(pool, torch.as_tensor(np.stack([e.support for e in es.episodes])), sealed.support_labels,
                            torch.as_tensor(np.stack([e.query for e in es.episodes])), sealed.seeds, 5, sealed.mean,
                            sealed.std)
    win = es.accuracies([o.argmax(1) for o in Cheater("index-blocks").adapt(None, unsealed, None)]).mean()
    chance = es.accuracies([o.argmax(1) for o in Cheater("index-blocks").adapt(None, sealed, None)]).mean()
    assert win == 1.0 and chance < 0.4


def test_linking_labels_across_episodes_would_win_but_the_harness_fails_the_row(cheaters, imagefolder_dir,
                                                                                 tmp_path):
    """De-duplicated images let an adapter that reads the whole batch link labels across episodes (a query
    that is another episode's support image). Scored directly it beats chance by far; the harness adapts one
    hidden episode alone too, sees the output change, and fails the row with the reason."""
    labels = np.repeat(np.arange(5), 30)
    es = EpisodeSet.draw(labels, range(5), 5, 5, 15, 40, seed=0, data_fingerprint="", content=index_keys(len(labels)))
    tasks = es.batch(torch.zeros(len(labels), 3, 4, 4), MEAN, STD)
    won = es.accuracies([o.argmax(1) for o in Cheater("cross-episode").adapt(None, tasks, None)]).mean()
    alone = es.accuracies([Cheater("cross-episode").adapt(None, tasks[k:k + 1], None)[0].argmax(1)
                           for k in range(len(tasks))]).mean()
    assert won > 0.8 and alone < 0.4, (won, alone)

    out = tmp_path / "run"
    code = main(["run", cheaters, "--set", "cheater.trick=cross-episode", "--preset", "smoke", "--shots", "5",
                 "--episodes", "40", "--data-dir", str(imagefolder_dir), "--out", str(out), "--quiet"])
    record = json.loads((out / "records" / "cheater-5shot.json").read_text())
    if record["status"] == "failed":
        assert code == 1 and "breaks the adapter contract" in record["reason"], record["reason"]
    else:  # sealed batches share no image: nothing to link
        assert code == 0 and abs(record["accuracy"] - 1 / WAYS) < 4 * np.sqrt(0.2 * 0.8 / (40 * WAYS * 15)), record


def test_one_fork_server_serves_every_strategy_named_before_the_first_job(monkeypatch):
    """prepare() names a run's strategies first: the server then starts once with all their modules, and a job
    of a later strategy does not restart it (a restart costs seconds). A strategy named only later does."""
    import harness.sealed as sealed
    from harness.suite import get_row

    monkeypatch.setattr(sealed, "_context", None)
    monkeypatch.setattr(sealed, "_wanted", set())
    monkeypatch.setattr(sealed, "_served", frozenset())
    probe, maml, protonet = (get_row(n).build() for n in ("frozen-features", "maml", "protonet"))
    sealed.preload([probe, maml])
    first = sealed.context([probe])
    served = sealed._served
    assert {"strategies.probe", "strategies.maml"} <= served
    assert sealed.context([maml]) is first and sealed._served is served  # no restart
    sealed.context([protonet])
    assert "strategies.protonet" in sealed._served and sealed._served is not served  # restarted with it


@pytest.mark.parametrize("name", ["frozen-features", "partial-finetune"])
def test_frozen_features_are_computed_once_per_model_and_change_no_prediction(name, imagefolder_dir, tmp_path,
                                                                              monkeypatch):
    """An adapter with a frozen feature step gets its features from one process per model that receives the
    unit's images and the model only (no label, no episode, no position), not from each batch; the predictions
    are those of computing them in every batch."""
    from rundirs import records

    import harness.work as work

    jobs: list[str] = []
    real = work.run_sealed

    def spy(job, payload, *args, **kwargs):
        jobs.append(job.__name__)
        if job is work.features_job:
            assert {f.name for f in dataclasses.fields(payload)} == {"strategy", "source", "images", "spec",
                                                                     "threads", "mean", "std"}
            assert payload.images.dtype == np.uint8 and payload.images.ndim == 4
        return real(job, payload, *args, **kwargs)

    monkeypatch.setattr(work, "run_sealed", spy)
    args = [name, "--preset", "smoke", "--shots", "1", "--episodes", "24", "--data-dir", str(imagefolder_dir),
            "--quiet"]
    assert main(["run", *args, "--out", str(tmp_path / "once")]) == 0
    assert jobs.count("features_job") == 1 and jobs.count("adapt_job") >= 5 + 3, jobs
    jobs.clear()
    monkeypatch.setattr(work, "has_frozen_features", lambda strategy: False)  # each batch computes its own
    assert main(["run", *args, "--out", str(tmp_path / "per-batch")]) == 0
    assert "features_job" not in jobs
    once, per_batch = records(tmp_path / "once")[(name, 1)], records(tmp_path / "per-batch")[(name, 1)]
    assert once["source_cached"] is False and per_batch["source_cached"] is True  # the same model
    assert once["episode_fingerprint"] == per_batch["episode_fingerprint"]
    assert once["episode_accuracies"] == per_batch["episode_accuracies"]


def test_a_runs_secret_fixes_its_check_episodes_and_batch_orders(imagefolder_dir, tmp_path, monkeypatch):
    """What the driver draws in secret (the check's episodes, each batch's episode order) comes from the run's
    secret: a rerun with the run directory's `secret` sends the same jobs in the same order, so an adapter whose
    floating-point results depend slightly on its batch's composition still reproduces."""
    import harness.work as work

    sent: list[list] = []
    real = work.run_sealed

    def spy(job, payload, *args, **kwargs):
        if job is work.adapt_job:
            sent[-1].append(payload.batch.seeds)
        return real(job, payload, *args, **kwargs)

    monkeypatch.setattr(work, "run_sealed", spy)
    for name in ("first", "again"):
        out = tmp_path / name
        if name == "again":  # the first run's secret, copied in before the run
            out.mkdir()
            (out / "secret").write_text((tmp_path / "first" / "secret").read_text())
        sent.append([])
        assert main(["run", "pixels-probe", "--preset", "smoke", "--shots", "1", "--episodes", "24", "--data-dir",
                     str(imagefolder_dir), "--out", str(out), "--quiet"]) == 0
    first, again = sent
    assert len(first) >= 5 + 3 and all(len(s) == 1 for s in first[:5]) and first == again
    assert work.secret_random("a" * 32, 1).random() == work.secret_random("a" * 32, 1).random()
    assert work.secret_random("a" * 32, 1).random() != work.secret_random("b" * 32, 1).random()
