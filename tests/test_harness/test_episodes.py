import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from protocols import protocol
from synthetic import MEAN, STD

from harness.episodes import EpisodeSet, Task, TaskBatch, content_keys, validate_protocol
from harness.errors import UsageError
from harness.phases import Adapter
from harness.work import first_episode

CLASSES = (5, 6, 7, 8, 9)
LABELS = np.repeat(np.arange(10), 40)  # a pool with 40 images of each of 10 classes
CONTENT = content_keys(np.arange(len(LABELS))[:, None])  # its content keys: image i's pixels are i, all distinct


def draw(shots=5, seed=0, episodes=30, queries=15, ways=5):
    return EpisodeSet.draw(LABELS, CLASSES, ways, shots, queries, episodes, seed, "", CONTENT)


def test_same_seed_same_episodes_and_fingerprint():
    a, b = draw(), draw()
    assert a.fingerprint() == b.fingerprint()
    for x, y in zip(a.episodes, b.episodes, strict=True):
        assert np.array_equal(x.support, y.support) and np.array_equal(x.query, y.query)


def test_episode_depends_on_seed_shots_and_index_only():
    assert draw(seed=1).fingerprint() != draw(seed=0).fingerprint()
    assert draw(shots=1).fingerprint() != draw(shots=5).fingerprint()
    # episode i is the same whatever the number of episodes drawn
    short, long = draw(episodes=5), draw(episodes=30)
    for x, y in zip(short.episodes, long.episodes[:5], strict=True):
        assert np.array_equal(x.query, y.query)


def test_support_and_query_disjoint_and_counts():
    for e in draw(shots=5).episodes:
        assert not set(e.support) & set(e.query)
        assert len(set(e.support)) == 25 and len(set(e.query)) == 75
        assert np.bincount(e.support_labels).tolist() == [5] * 5
        assert np.bincount(e.query_labels).tolist() == [15] * 5


def test_labels_remapped_consistently_in_random_class_order():
    orders = set()
    for e in draw().episodes:
        for idx, lab in ((e.support, e.support_labels), (e.query, e.query_labels)):
            assert np.array_equal(LABELS[idx], e.classes[lab])  # label k always means class classes[k]
        orders.add(tuple(e.classes))
    assert len(orders) > 5  # the class order changes between episodes


def test_queries_are_shuffled_not_grouped_by_class():
    e = draw().episodes[0]
    assert not np.array_equal(e.query_labels, np.sort(e.query_labels))


def test_tasks_carry_no_query_labels():
    es = draw()
    pool = torch.arange(len(LABELS), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 4, 4)
    batch = es.batch(pool, MEAN, STD)
    task = batch[0]
    names = {f.name for f in dataclasses.fields(Task)} | {f.name for f in dataclasses.fields(TaskBatch)}
    assert not any("query_label" in n or "pool" in n for n in names)
    for value in (getattr(task, n) for n in {f.name for f in dataclasses.fields(Task)}):
        if isinstance(value, torch.Tensor) and value.shape == es.episodes[0].query_labels.shape:
            assert not torch.equal(value, torch.as_tensor(es.episodes[0].query_labels))
    # the images are the episode's own, in its order: pixel value = pool index here
    assert task.query_images[:, 0, 0, 0].long().tolist() == es.episodes[0].query.tolist()
    assert task.support_images[:, 0, 0, 0].long().tolist() == es.episodes[0].support.tolist()


def test_batch_holds_only_the_episodes_images_in_an_order_unrelated_to_the_pool():
    es = draw(episodes=10)
    pool = torch.arange(len(LABELS), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 4, 4)
    batch = es.batch(pool, MEAN, STD)
    used = {int(i) for e in es.episodes for i in (*e.support, *e.query)}
    held = batch.images[:, 0, 0, 0].long().tolist()
    assert sorted(held) == sorted(used) and len(held) == len(set(held))  # each used image once, no other
    assert held != sorted(held)  # not in pool order (sorted by class)
    position = np.arange(len(held))  # an image's position in the batch is unrelated to its class
    assert abs(np.corrcoef(position, LABELS[held])[0, 1]) < 0.3
    assert len(batch) == 10 and batch[2:4].seeds == batch.seeds[2:4]
    for i in range(10):
        assert torch.equal(batch.images[batch.query[i]], batch[i].query_images)


def test_episode_fingerprint_covers_the_data():
    a = EpisodeSet.draw(LABELS, CLASSES, 5, 5, 15, 10, 0, data_fingerprint="copy-a", content=CONTENT)
    b = EpisodeSet.draw(LABELS, CLASSES, 5, 5, 15, 10, 0, data_fingerprint="copy-b", content=CONTENT)
    assert a.fingerprint() != b.fingerprint()


def test_accuracies_scored_by_harness():
    es = draw(episodes=3)
    perfect = [torch.as_tensor(e.query_labels) for e in es.episodes]
    assert es.accuracies(perfect).tolist() == [1.0, 1.0, 1.0]
    wrong = [(p + 1) % 5 for p in perfect]
    assert es.accuracies(wrong).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(ways=6), "ways=6 exceeds the 5 novel classes of the dataset"),
    (dict(shots=30, queries=15), r"shots \+ queries = 45 exceeds the 40 images"),
    (dict(shots=0), "shots must be a positive integer"),
    (dict(episodes=0), "episodes must be a positive integer"),
    (dict(queries=-1), "queries must be a positive integer"),
])
def test_protocol_validation(kwargs, message):
    args = dict(ways=5, shots=1, queries=15, episodes=10) | kwargs
    with pytest.raises(UsageError, match=message):
        validate_protocol([40] * 5, **args)


def test_episodes_come_from_the_run_seed_and_their_seeds_from_the_secret():
    """Two runs with the same seed score the same episodes; the seeds handed to strategies are a hash of the
    run's secret, so they differ between secrets and match no replay of the public sampler."""
    public, a, b = (EpisodeSet.draw(LABELS, CLASSES, 5, 1, 15, 30, 0, "", CONTENT, secret=s)
                    for s in ("", "a" * 32, "b" * 32))
    assert public.fingerprint() == a.fingerprint() == b.fingerprint()  # the same images, labels and order
    seeds = [tuple(e.seed for e in s.episodes) for s in (public, a, b)]
    assert len(set(seeds)) == 3 and not set(seeds[1]) & set(seeds[0])
    again = EpisodeSet.draw(LABELS, CLASSES, 5, 1, 15, 30, 0, "", CONTENT, secret="a" * 32)
    assert seeds[1] == tuple(e.seed for e in again.episodes)


def test_rounds_share_no_image_and_serve_every_episode():
    """Each round (one sealed batch) holds no image twice, by index or by pixels; every requested episode is
    served, over as many rounds as the pool needs."""
    pixels = np.random.default_rng(0).integers(0, 256, (len(LABELS), 3, 2, 2), dtype=np.uint8)
    pixels[1] = pixels[0]  # a duplicate picture under two indices
    es = EpisodeSet.draw(LABELS, CLASSES, 5, 5, 5, 30, 0, "", content_keys(pixels))
    assert len(es.episodes) == 30 and len(es.round_indices()) > 1
    for indices in es.round_indices():
        used = np.concatenate([np.concatenate([es.episodes[i].support, es.episodes[i].query]) for i in indices])
        assert len(set(used.tolist())) == len(used)
        assert len({pixels[k].tobytes() for k in used}) == len(used)


def test_a_sealed_batchs_first_episode_alone_holds_only_its_images():
    """The untimed warm-up of a sealed process adapts the first episode from a batch of its own images: the
    same pixels at its support and query positions, the same labels and seed, none of the round's other images."""
    pixels = np.random.default_rng(0).integers(0, 256, (len(LABELS), 3, 2, 2), dtype=np.uint8)
    es = EpisodeSet.draw(LABELS, CLASSES, 5, 5, 3, 6, 0, "", content_keys(pixels))
    batch = es.sealed(pixels)
    first = first_episode(batch)
    assert len(first.images) == 5 * (5 + 3) < len(batch.images) and first.seeds == batch.seeds[:1]
    np.testing.assert_array_equal(first.images[first.support[0]], batch.images[batch.support[0]])
    np.testing.assert_array_equal(first.images[first.query[0]], batch.images[batch.query[0]])
    np.testing.assert_array_equal(first.support_labels, batch.support_labels[:1])
    tasks, alone = batch.tasks("cpu", (0.5,) * 3, (0.25,) * 3), first.tasks("cpu", (0.5,) * 3, (0.25,) * 3)
    assert len(alone) == 1 and torch.equal(alone[0].query_images, tasks[0].query_images)
    assert torch.equal(alone[0].support_images, tasks[0].support_images)


def test_a_first_episode_carries_its_images_frozen_features():
    """Frozen features handed to a batch follow their images into the warm-up episode's batch."""
    pixels = np.random.default_rng(0).integers(0, 256, (len(LABELS), 3, 2, 2), dtype=np.uint8)
    batch = EpisodeSet.draw(LABELS, CLASSES, 5, 5, 3, 6, 0, "", content_keys(pixels)).sealed(pixels)
    batch = dataclasses.replace(batch, features=torch.randn(len(batch.images), 7))
    first = first_episode(batch)
    assert first.features.shape == (len(first.images), 7)
    assert torch.equal(first.features[first.support[0]], batch.features[batch.support[0]])
    assert torch.equal(first.features[first.query[0]], batch.features[batch.query[0]])


@dataclass
class CountingAdapter(Adapter):
    """Notes the size of every batch it adapts; predicts class 0."""

    calls: ClassVar[list[int]] = []

    def adapt(self, model, tasks, source, progress=lambda n: None):
        CountingAdapter.calls.append(len(tasks))
        progress(len(tasks))
        return [torch.zeros(tasks.query.shape[1], tasks.ways) for _ in range(len(tasks))]


@pytest.mark.parametrize(("episodes", "timed", "calls"), [(3, True, [1, 3]), (1, True, [1]), (1, False, [1])])
def test_a_sealed_process_warms_up_only_where_it_has_another_episode(episodes, timed, calls):
    """A batch warms up on its first episode alone, then runs whole, timed; a batch of one episode (a small
    pool's round) and a check episode are adapted once: a warm-up would double their work."""
    from harness.phases import Strategy
    from harness.units import SourceResult
    from harness.work import AdaptJob, RunSpec, adapt_job
    from strategies.pixels import RawPixels

    pixels = np.random.default_rng(0).integers(0, 256, (len(LABELS), 3, 2, 2), dtype=np.uint8)
    batch = EpisodeSet.draw(LABELS, CLASSES, 5, 1, 3, episodes, 0, "", content_keys(pixels)).sealed(pixels)
    strategy = Strategy("counting", RawPixels(), CountingAdapter())
    spec = RunSpec(protocol(queries=3, episodes=episodes), "cpu")
    CountingAdapter.calls.clear()
    threads = torch.get_num_threads()  # adapt_job sets them in its (here: this) process: keep this session's
    outputs, seconds, _, _ = adapt_job(AdaptJob(strategy, SourceResult("k", {"image_size": 2}, {}, {}), batch, spec,
                                                threads, (0.5,) * 3, (0.25,) * 3, timed=timed), lambda n: None)
    assert torch.get_num_threads() == threads
    assert CountingAdapter.calls == calls and len(outputs) == episodes
    assert (seconds > 0) == timed
