"""Start-up time of the package and of the command line (issue 15, item 1).

Each figure is the wall time of a fresh Python process (so nothing is cached in ``sys.modules``), repeated
``--repeats`` times; the 1-minute load average (``os.getloadavg()``) is recorded before every run, because on a small
shared machine the load decides the figure more than the code does. The targets of the issue (``import sslspatial``
under 3 s, ``sslspatial --help`` under 1 s) hold on a 2-core machine whose 1-minute load is below 1; ``--wait-idle``
waits (up to the given seconds) for such a load before measuring.

Measured commands:

- ``import sslspatial`` and ``sslspatial --help`` / ``--version`` / ``dataset --help`` (the targets);
- first use of each capability (``ss.pp.build_graph``, ``ss.tl.pretrain_mask``, ...), which pays for its heavy
  dependencies; and ``eager``: touching every subpackage, which is what ``import sslspatial`` cost before it loaded
  lazily;
- the heavy dependencies alone (``import scvi``, ``import squidpy``, ...), for reference.

Run ``python benchmarks/startup.py [--repeats 5] [--quick] [--wait-idle 120]``; writes
``benchmarks/results/startup.json`` and ``.md``. The ``-X importtime`` breakdown of ``import sslspatial`` (the 15
slowest modules) goes into the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PY = sys.executable
CLI = shutil.which("sslspatial", path=str(Path(PY).parent)) or shutil.which("sslspatial")

TARGETS = {"import sslspatial": 3.0, "sslspatial --help": 1.0}


def _python(code: str) -> list[str]:
    return [PY, "-c", code]


def _cli(*argv: str) -> list[str]:
    if CLI is not None:
        return [CLI, *argv]
    return _python(f"import sys; from sslspatial.cli import main; sys.exit(main({list(argv)!r}))")


def commands(quick: bool) -> dict[str, tuple[str, list[str]]]:
    """Name -> (group, argv) of every measured command."""
    out = {
        "python -c pass": ("baseline", _python("pass")),
        "import sslspatial": ("target", _python("import sslspatial")),
        "sslspatial --help": ("target", _cli("--help")),
        "sslspatial --version": ("cli", _cli("--version")),
        "sslspatial dataset --help": ("cli", _cli("dataset", "--help")),
        "sslspatial pretrain --help": ("cli", _cli("pretrain", "--help")),
    }
    if quick:
        return out
    out |= {
        "first use: ss.pp.build_graph": ("first use", _python("import sslspatial as ss; ss.pp.build_graph")),
        "first use: ss.tl.pretrain_mask": ("first use", _python("import sslspatial as ss; ss.tl.pretrain_mask")),
        "first use: ss.datasets.synthetic_tissue": (
            "first use",
            _python("import sslspatial as ss; ss.datasets.synthetic_tissue"),
        ),
        "eager (every subpackage, the old import)": (
            "first use",
            _python(
                "import sslspatial as ss\nfor name in ss.__all__[:-1]:\n    module = getattr(ss, name)\n"
                "    for attr in getattr(module, '__all__', ()):\n        getattr(module, attr)"
            ),
        ),
        "import scvi": ("dependency", _python("import scvi")),
        "import squidpy": ("dependency", _python("import squidpy")),
        "import torch_geometric": ("dependency", _python("import torch_geometric")),
        "import lightning": ("dependency", _python("import lightning")),
        "import spatialdata": ("dependency", _python("import spatialdata")),
    }
    return out


def load1() -> float:
    return os.getloadavg()[0]


def wait_idle(max_seconds: float, threshold: float = 1.0) -> float:
    """Wait until the 1-minute load is below ``threshold`` or ``max_seconds`` have passed; return the load."""
    deadline = time.monotonic() + max_seconds
    while load1() >= threshold and time.monotonic() < deadline:
        time.sleep(5)
    return load1()


def time_once(argv: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds


def importtime_top(n: int = 15) -> list[dict]:
    """The ``n`` modules with the largest cumulative import time in ``import sslspatial`` (microseconds)."""
    done = subprocess.run([PY, "-X", "importtime", "-c", "import sslspatial"], capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, self_us, cumulative_us, name = (part.strip() for part in line.replace("import time:", "|").split("|"))
        rows.append({"module": name.strip(), "self_us": int(self_us), "cumulative_us": int(cumulative_us)})
    return sorted(rows, key=lambda r: -r["cumulative_us"])[:n]


def measure(name: str, argv: list[str], repeats: int) -> dict:
    time_once(argv)  # warm the file-system cache: every repeat then reads the same files from memory
    runs = []
    for _ in range(repeats):
        before = load1()
        seconds = time_once(argv)
        runs.append({"seconds": round(seconds, 3), "load1_before": round(before, 2)})
    seconds = [r["seconds"] for r in runs]
    loads = [r["load1_before"] for r in runs]
    row = {
        "command": name,
        "argv": argv,
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
        "load1_min": min(loads),
        "load1_max": max(loads),
        "runs": runs,
    }
    if name in TARGETS:
        row["target_s"] = TARGETS[name]
        row["meets_target"] = row["median_s"] < TARGETS[name]
        row["idle_when_measured"] = max(loads) < 1.0
    print(
        f"{name:<45} median {row['median_s']:7.3f} s  (min {row['min_s']:.3f}, load {min(loads):.2f}-{max(loads):.2f})"
    )
    return row


def write(rows: list[dict], meta: dict, top: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows, "importtime_top": top}, indent=2))
    lines = [
        "# Start-up time",
        "",
        f"`python benchmarks/startup.py{meta['args']}` on {meta['machine']}, {meta['date']}. Wall time of a fresh "
        f"process, median of {meta['repeats']} runs after one warm-up run; the 1-minute load average before the "
        "runs is given beside each figure (the targets are stated for a load below 1).",
        "",
        "| command | median (s) | min (s) | 1-min load | target |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        target = ""
        if "target_s" in row:
            verdict = "met" if row["meets_target"] else "missed"
            idle = "" if row["idle_when_measured"] else ", measured at load >= 1"
            target = f"< {row['target_s']:g} s: {verdict}{idle}"
        load = f"{row['load1_min']:.2f}-{row['load1_max']:.2f}"
        lines.append(f"| `{row['command']}` | {row['median_s']:.3f} | {row['min_s']:.3f} | {load} | {target} |")
    lines += [
        "",
        "`import sslspatial` loads no submodule and no heavy dependency: `ss.pp`, `ss.tl`, ... are imported on first "
        "access (PEP 562), and each capability pays for its dependencies (scvi-tools, squidpy, torch_geometric, "
        "lightning) when first used. The command line parses its arguments with argparse alone, so `--help`, "
        "`--version` and usage errors never import the stack.",
        "",
        'Slowest modules of `python -X importtime -c "import sslspatial"` (cumulative):',
        "",
        "| module | cumulative (ms) |",
        "|---|---:|",
        *[f"| `{r['module']}` | {r['cumulative_us'] / 1000:.1f} |" for r in top[:8]],
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument("--quick", action="store_true", help="targets and CLI only (no first-use / dependency rows)")
    parser.add_argument(
        "--wait-idle", type=float, default=0.0, help="wait up to this many seconds for a 1-minute load below 1"
    )
    parser.add_argument("--out", default=str(RESULTS / "startup"), help="output path without suffix")
    args = parser.parse_args(argv)
    if args.wait_idle:
        print(f"1-minute load {wait_idle(args.wait_idle):.2f} after waiting")
    rows = [measure(name, cmd, args.repeats) for name, (_, cmd) in commands(args.quick).items()]
    top = importtime_top()
    given = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    meta = {
        "args": f" {given}" if given else "",
        "repeats": args.repeats,
        "machine": f"{os.cpu_count()} CPU cores, {platform.platform()}, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cli": CLI or "python -c 'from sslspatial.cli import main'",
    }
    write(rows, meta, top, Path(args.out))
    print(f"wrote {args.out}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
