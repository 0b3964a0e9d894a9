"""The benchmark suite runs end to end with tiny sizes, so it cannot rot. Nothing measured
here is asserted: figures are for BENCHMARKS.md, not for CI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import WORKLOADS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)
def test_every_workload_runs_and_reports_its_figures(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    report = json.loads((tmp_path / "BENCHMARKS.json").read_text())
    assert report["errors"] == {}
    assert set(report["workloads"]) == set(WORKLOADS)
    for name, workload in report["workloads"].items():
        assert workload["figures"], f"{name} reported no figure"
        for figure in workload["figures"]:
            assert figure["value"] == figure["value"], f"{name}: {figure['metric']} is NaN"
            assert figure["value"] >= 0
            if figure["baseline"]:
                assert figure["baseline_value"] > 0, f"{name}: {figure['metric']} has no baseline"
    table = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| workload | figure | value | baseline | ratio | target | met |" in table
