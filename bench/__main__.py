"""``python -m bench``: run the workloads, write BENCHMARKS.md and the JSON beside it."""

import argparse
import importlib
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType

from bench.harness import ROOT, Figure, bench, machine
from bench.report import markdown

WORKLOADS = ["append", "batch", "fanout", "capacity", "replay", "logquery", "rebuild", "peer"]


def load(name: str) -> ModuleType:
    return importlib.import_module(f"bench.{name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the suite runs")
    parser.add_argument("--only", action="append", choices=WORKLOADS, help="run only these")
    parser.add_argument("--out", type=Path, default=ROOT, help="folder for BENCHMARKS.md/json")
    args = parser.parse_args(argv)

    chosen = args.only or WORKLOADS
    results: dict[str, list[Figure]] = {}
    errors: dict[str, str] = {}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in chosen:
            module = load(name)
            print(f"== {name}: {module.TITLE}", file=sys.stderr, flush=True)
            with bench(Path(tmp) / name, args.smoke) as b:
                try:
                    results[name] = module.run(b)
                except Exception:
                    errors[name] = traceback.format_exc()
                    print(errors[name], file=sys.stderr)
            for figure in results.get(name, []):
                print(
                    f"   {figure.metric}: {figure.value:.4g} {figure.unit}"
                    + (f" ({figure.ratio:.3g}x {figure.baseline})" if figure.ratio else ""),
                    file=sys.stderr,
                )
    report = {
        "smoke": args.smoke,
        "started": started,
        "seconds": round(time.time() - started, 1),
        "machine": machine(),
        "workloads": {
            name: {"title": load(name).TITLE, "figures": [f.as_dict() for f in figures]}
            for name, figures in results.items()
        },
        "errors": errors,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "BENCHMARKS.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "BENCHMARKS.md").write_text(markdown(report))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
