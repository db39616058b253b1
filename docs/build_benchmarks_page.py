"""Generate ``docs/benchmarks.md`` from the files the benchmark scripts write to ``benchmarks/results/``.

Every ``<name>.md`` written by ``benchmarks/<name>.py`` becomes one section of the page (its headings moved one level
down); a ``<name>.json`` without a Markdown companion is rendered as a table of its scalar values. Nothing on the
page is typed by hand: ``docs/conf.py`` runs this script at every build, and it can be run alone::

    python docs/build_benchmarks_page.py [--results benchmarks/results] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = Path(__file__).resolve().parent / "benchmarks.md"

HEADER = """# Benchmarks

Accuracy and speed of each capability on real public data, against the simple baselines named in each table. Every
number on this page is written by a script in the repository's `benchmarks/` folder into `benchmarks/results/` and
copied here when the documentation is built; rerun a benchmark with `python benchmarks/<name>.py` (or `--quick` for a
reduced run) and rebuild the docs to update this page.
"""

EMPTY = """
```{note}
No benchmark results were found in `benchmarks/results/` when these pages were built. Run
`python benchmarks/<name>.py` for each script in `benchmarks/`, then rebuild the docs.
```
"""

_HEADING = re.compile(r"^(#{1,5})(\s)", flags=re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)")


def demote_headings(markdown: str) -> str:
    """Move every ATX heading one level down (``#`` -> ``##``), leaving fenced code untouched.

    Examples
    --------
    >>> demote_headings("# A\\n```\\n# comment\\n```\\n## B")
    '## A\\n```\\n# comment\\n```\\n### B'
    """
    out, in_fence = [], False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        out.append(line if in_fence else _HEADING.sub(r"#\1\2", line))
    return "\n".join(out)


def _scalar_rows(obj: object, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten the scalars of a JSON object into ``(dotted key, value)`` rows."""
    rows: list[tuple[str, str]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            rows += _scalar_rows(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            rows += _scalar_rows(value, f"{prefix}[{i}]")
    elif isinstance(obj, float):
        rows.append((prefix, f"{obj:.4g}"))
    elif obj is not None:
        rows.append((prefix, str(obj)))
    return rows


def json_section(name: str, data: object) -> str:
    """A Markdown section for a result file that has no Markdown companion.

    Examples
    --------
    >>> print(json_section("toy", {"mean_pcc": 0.25, "folds": ["A", "B"]}))
    ## toy
    <BLANKLINE>
    | key | value |
    |---|---|
    | mean_pcc | 0.25 |
    | folds[0] | A |
    | folds[1] | B |
    """
    rows = _scalar_rows(data)
    lines = [f"## {name}", "", "| key | value |", "|---|---|"]
    lines += [f"| {key} | {value} |".replace("\n", " ") for key, value in rows]
    return "\n".join(lines)


def build(results: Path = RESULTS, out: Path = OUT) -> Path:
    """Write the benchmarks page from ``results`` to ``out`` (only when its content changes) and return ``out``."""
    results = Path(results)
    names = sorted({p.stem for p in results.glob("*.md")} | {p.stem for p in results.glob("*.json")})
    sections = []
    for name in names:
        md, js = results / f"{name}.md", results / f"{name}.json"
        if md.exists():
            body = demote_headings(md.read_text(encoding="utf-8").strip())
            if not body.lstrip().startswith("## "):
                body = f"## {name}\n\n{body}"
        else:
            body = json_section(name, json.loads(js.read_text(encoding="utf-8")))
        script = f"`benchmarks/{name}.py`" if (results.parent / f"{name}.py").exists() else "its benchmark script"
        files = ", ".join(f"`benchmarks/results/{p.name}`" for p in (md, js) if p.exists())
        sections.append(f"{body}\n\n<small>Source: {files}, written by {script}.</small>\n")
    text = HEADER + ("\n" + "\n".join(sections) if sections else EMPTY)
    out = Path(out)
    if not out.exists() or out.read_text(encoding="utf-8") != text:
        out.write_text(text, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    print(build(args.results, args.out))


if __name__ == "__main__":
    main()
