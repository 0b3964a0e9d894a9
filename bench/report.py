"""The Markdown table of a run."""

from pathlib import Path
from typing import Any

# Written by hand, kept across runs: what changed between runs and what bounds the figures
# that fall short, beyond what each figure's note says.
FINDINGS = Path(__file__).with_name("findings.md")


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`); every ratio compares two figures measured"
        " in the same run on the same machine. CI runs a smoke pass with tiny sizes"
        " (`tests/test_bench_smoke.py`) and gates on nothing measured here.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GiB; {m['platform']}",
        f"- Python {m['python']}; {m['redis']}",
        f"- Packages: {packages}",
        f"- Run: {'smoke (tiny sizes)' if report['smoke'] else 'full'}, {report['seconds']} s",
        "",
        "| workload | figure | value | baseline | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for workload in report["workloads"].values():
        for f in workload["figures"]:
            met = {True: "yes", False: "**no**", None: ""}[f["met"]]
            baseline = f"{_number(f['baseline_value'])} ({f['baseline']})" if f["baseline"] else ""
            ratio = f"{f['ratio']:.3g}x" if f["ratio"] is not None else ""
            lines.append(
                f"| {workload['title']} | {f['metric']} | {_number(f['value'])} {f['unit']} "
                f"| {baseline} | {ratio} | {f['target']} | {met} |"
            )
    if FINDINGS.exists():
        lines += ["", FINDINGS.read_text().strip()]
    notes = [
        f"- **{w['title']}, {f['metric']}**: {f['note']}"
        for w in report["workloads"].values()
        for f in w["figures"]
        if f["note"]
    ]
    if notes:
        lines += ["", "## Notes", "", *notes]
    if report["errors"]:
        lines += ["", "## Workloads that failed", ""]
        lines += [f"- {name}: see BENCHMARKS.json" for name in report["errors"]]
    return "\n".join(lines) + "\n"
