"""Reading a run directory in tests: its records by (strategy, shots)."""

from __future__ import annotations

import json
from pathlib import Path


def records(run_dir: Path) -> dict[tuple[str, int], dict]:
    """Every record file of ``run_dir`` (``records/*.json``), by (strategy, shots)."""
    found = {}
    for p in (run_dir / "records").glob("*.json"):
        r = json.loads(p.read_text())
        found[(r["strategy"], r["shots"])] = r
    return found


def heavy_modules_of_report(argv: list[str], root: Path) -> tuple[int, list[str]]:
    """Run ``python -m harness report *argv`` in a fresh interpreter; (exit status, the torch, strategies and
    tensorflow modules it imported)."""
    import ast
    import subprocess
    import sys

    code = ("import runpy, sys\n"
            f"sys.argv = ['harness', 'report', *{argv!r}]\n"
            "rc = 0\n"
            "try:\n    runpy.run_module('harness', run_name='__main__')\nexcept SystemExit as e:\n    rc = e.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'strategies', 'tensorflow'))\n"
            "print('RC', rc, 'HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    rc, heavy = line.split(" HEAVY ")
    return int(rc.split()[1]), ast.literal_eval(heavy)
