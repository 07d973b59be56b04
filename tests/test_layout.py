"""The tests' folders mirror the packages (tests/test_harness for harness/, tests/test_strategies for strategies/)
without taking their names: a test folder named like a package would be a namespace package that an import of it
could resolve to from the tests' sys.path."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_test_folder_is_named_like_a_package_of_the_project():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    folders = {p.name for p in (ROOT / "tests").rglob("*") if p.is_dir() and p.name != "__pycache__"}
    assert {"harness", "strategies"} <= packages
    assert not packages & folders, f"rename the test folders {sorted(packages & folders)}"

