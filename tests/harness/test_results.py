import json
import math

import numpy as np

from harness.io import atomic_write_json
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
