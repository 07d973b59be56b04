import json
import math

import numpy as np

from harness.io import atomic_write_json
from harness.results import load_run, record_path
from harness.schema import Record, RunHeader
from harness.stats import ci95


def test_ci95_formula():
    accs = np.array([0.2, 0.4, 0.6, 0.8, 1.0])
    mean = accs.mean()
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1))  # sample standard deviation
    t_975_4 = 2.7764451051977987  # Student t quantile 0.975 with 4 degrees of freedom (statistical tables)
    assert math.isclose(ci95(accs), t_975_4 * std / math.sqrt(5))
    assert ci95(np.full(10, 0.5)) == 0.0


def test_atomic_write_leaves_only_the_final_file(tmp_path):
    path = tmp_path / "sub" / "record.json"
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]


def test_a_record_names_its_twin_and_its_check_row_as_fields():
    """A newly written record of a Keras twin row carries ``twin_of``, one of a framework-check row ``check_of``
    (declared by the strategies, written by ``base_record``, without training); other rows carry neither."""
    import torch
    from protocols import protocol

    from harness.suite import get_row
    from harness.work import RunSpec, base_record

    spec = RunSpec(protocol(queries=3, episodes=4), "cpu")  # the Keras rows: TensorFlow is in the dev install
    expected = {"keras-frozen-features": ("frozen-features", None),
                "keras-partial-finetune": ("partial-finetune", None),
                "torch-probe-on-keras": (None, "keras-frozen-features"),
                "torch-finetune-on-keras": (None, "keras-partial-finetune"),
                "frozen-features": (None, None)}
    for name, relations in expected.items():
        record = base_record(get_row(name).build(), 1, spec, torch.device("cpu"))
        assert (record.twin_of, record.check_of) == relations, name
        written = Record.from_json(json.loads(json.dumps(record.to_json())))
        assert (written.twin_of, written.check_of) == relations, name  # the fields, not the settings, on reload


def test_an_old_record_gets_twin_of_and_check_of_from_its_settings(tmp_path):
    """Records written before ``twin_of`` / ``check_of`` existed name the rows in a settings entry: loading fills
    the fields from it, once, so the report reads fields only; an old record's budget scale is a float."""
    old = {k: v for k, v in Record(strategy="keras-frozen-features", shots=1).to_json().items()
           if k not in ("twin_of", "check_of")}
    twin = Record.from_json({**old, "schema_version": 4, "settings": {"PyTorch twin": "frozen-features"}})
    assert (twin.twin_of, twin.check_of) == ("frozen-features", None)
    check = Record.from_json({**old, "schema_version": 4, "strategy": "torch-probe-on-keras",
                              "settings": {"episode phase of": "keras-frozen-features"}})
    assert (check.twin_of, check.check_of) == (None, "keras-frozen-features")
    plain = Record.from_json({**old, "schema_version": 3, "settings": None, "budget_scale": None})
    assert (plain.twin_of, plain.check_of, plain.budget_scale) == (None, None, 1.0)
    assert isinstance(Record.from_json({**old, "budget_scale": 1}).budget_scale, float)
    # a record written with the fields keeps them as written, whatever its settings say
    new = Record.from_json({**old, "twin_of": None, "check_of": None, "settings": {"PyTorch twin": "x"}})
    assert new.twin_of is None
    # and through load_run, as the report reads a run directory
    path = record_path(tmp_path, "keras-frozen-features", 1)
    atomic_write_json(path, {**old, "schema_version": 4, "status": "skipped",
                             "settings": {"PyTorch twin": "frozen-features"}})
    atomic_write_json(tmp_path / "config.json", {**RunHeader().to_json(), "schema_version": 4})
    loaded = load_run(tmp_path)
    assert loaded.environment is None and loaded.name == tmp_path.name
    assert [(r.strategy, r.twin_of) for r in loaded.records] == [("keras-frozen-features", "frozen-features")]
