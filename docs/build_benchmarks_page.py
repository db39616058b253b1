"""Generate the benchmarks pages from the Markdown files the benchmark scripts write to ``benchmarks/results/``.

``docs/benchmarks.md`` holds one small summary table per capability (the default against the simple baselines and
the published method where the benchmark runs one, on the evaluation splits, with the margin), read from the tables of
the results files, and links to one page per results file under ``docs/results/``. Those pages are the results files
made readable: tuple column headers become ``dataset, split, labels``, long floats are rounded, ``nan`` cells are
blank and rows with nothing left are dropped, JSON blocks become tables. Only ``<name>.md`` files are rendered (a JSON
file without a Markdown companion is not), and ``<name>_quick.md`` is skipped when ``<name>.md`` exists. Nothing on
these pages is typed by hand: ``docs/conf.py`` runs this script at every build, and it can be run alone::

    python docs/build_benchmarks_page.py [--results benchmarks/results] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = Path(__file__).resolve().parent / "benchmarks.md"

HEADER = """# Benchmarks

Does the default beat the simple baselines, and by how much? Each table below answers it for one capability, on real
public data, with numbers read from the files that the scripts in the repository's `benchmarks/` folder write to
`benchmarks/results/` (rerun one with `python benchmarks/<name>.py` and rebuild the docs to update this page).

Every default of the package was chosen on a **tuning split**: one dataset, section or direction named in each table
and marked "(tuning)" (or "(chose ...)" where it made one choice). The **evaluation splits** entered no choice, so their margins are the ones to trust for new
data; a positive margin means the default is better than the best baseline.
"""

EMPTY = """
```{note}
No benchmark results were found in `benchmarks/results/` when these pages were built. Run
`python benchmarks/<name>.py` for each script in `benchmarks/`, then rebuild the docs.
```
"""

_HEADING = re.compile(r"^(#{1,5})(\s)", flags=re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)")
_LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{5,}(?![\d.])")
_ISSUE = re.compile(
    r"\s*\(\s*[Ii]ssue \d+\s*\)|\s*\b(?:of |for )?[Ii]ssue \d+(?=\s*$)"
)  # "(issue 12)" anywhere, or "issue 12" (with a leading "of" / "for") at the end
_NUMBER = re.compile(r"^\s*\**([-+]?\d+(?:\.\d+)?)")


# -- Markdown tables -----------------------------------------------------------------------------------------------
def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _is_rule(line: str) -> bool:
    return bool(re.fullmatch(r"\s*\|?(\s*:?-{3,}:?\s*\|)+\s*:?-*:?\s*\|?\s*", line))


def tables(markdown: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """The pipe tables of a Markdown text as ``(heading above it, columns, rows)``.

    Examples
    --------
    >>> tables("# T\\n\\n| a | b |\\n|---|---|\\n| 1 | x |\\n")
    [('T', ['a', 'b'], [['1', 'x']])]
    """
    found, heading, lines = [], "", markdown.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = lines[i].lstrip("#").strip()
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and _is_rule(lines[i + 1]):
            columns, rows, i = _cells(lines[i]), [], i + 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            found.append((heading, columns, rows))
            continue
        i += 1
    return found


def number(cell: str) -> float | None:
    """The leading number of a cell (``"0.561 ± 0.028"`` -> 0.561, ``"0.395 (PCA)"`` -> 0.395), else None."""
    m = _NUMBER.match(cell)
    return float(m.group(1)) if m else None


def _tuple(cell: str) -> tuple | None:
    """The Python tuple a column header spells (``"('osmfish', 'lower->upper', 0.01)"``), else None."""
    if not (cell.startswith("(") and cell.endswith(")")):
        return None
    try:
        parts = ast.literal_eval(cell)
    except (ValueError, SyntaxError):
        return None
    return parts if isinstance(parts, tuple) and parts else None


def _words(parts: tuple) -> str:
    """``('lower->upper', 0.01)`` -> ``lower->upper, 1% labels``."""
    words = (f"{100 * p:g}% labels" if isinstance(p, float) and 0 < p <= 1 else str(p) for p in parts)
    return ", ".join(words).replace("->", "\u2192")  # an arrow that does not break across lines


def _table_lines(columns: list[str], rows: list[list[str]]) -> list[str]:
    """A table without its empty (``nan``) cells and rows; tuple headers split into one table per first element."""
    parts = [_tuple(c) for c in columns[1:]]
    if all(p is not None and len(p) > 1 for p in parts) and len({p[0] for p in parts}) > 1:
        out: list[str] = []
        for group in dict.fromkeys(p[0] for p in parts):
            keep = [0] + [i + 1 for i, p in enumerate(parts) if p[0] == group]
            sub_columns = [columns[0]] + [_words(parts[i - 1][1:]) for i in keep[1:]]
            out += [f"**{group}**", "", *_table_lines(sub_columns, [[r[i] for i in keep] for r in rows]), ""]
        return out[:-1]
    columns = [_words(p) if p is not None else c for p, c in zip([None, *parts], columns, strict=True)]
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for cells in rows:
        if not all(_empty(c) for c in cells[1:]):
            out.append(
                "| " + " | ".join("" if _empty(c) else _round(c).replace(" ± ", "\u00a0±\u00a0") for c in cells) + " |"
            )
    return out


def _round(text: str) -> str:
    return _LONG_FLOAT.sub(lambda m: f"{float(m.group()):.4g}", text)


def _empty(cell: str) -> bool:
    return cell.strip().lower() in {"", "nan", "nan ± nan", "none"}


def _json_block_as_table(block: str) -> str | None:
    """A fenced JSON object (timings) as a two-column table of its flattened, rounded values."""
    try:
        data = json.loads(block)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    rows = []
    for key, value in data.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {_round(str(v))}" for k, v in value.items())
        rows.append(f"| {key} | {_round(str(value))} |")
    return "\n".join(["| step | seconds |", "|---|---|", *rows])


def readable(markdown: str) -> str:
    """A results file made readable: column headers, rounding, no ``nan`` rows, JSON blocks as tables.

    Examples
    --------
    >>> print(readable("| m | ('a', 0.1) | ('b', 1.0) |\\n|---|---|---|\\n| x | 0.1234567 | nan |\\n| y | nan | nan |"))
    **a**
    <BLANKLINE>
    | m | 10% labels |
    |---|---|
    | x | 0.1235 |
    <BLANKLINE>
    **b**
    <BLANKLINE>
    | m | 100% labels |
    |---|---|
    """
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            end = next((j for j in range(i + 1, len(lines)) if _FENCE.match(lines[j])), len(lines) - 1)
            table = _json_block_as_table("\n".join(lines[i + 1 : end]))
            out.extend([table] if table else lines[i : end + 1])
            i = end + 1
            continue
        if line.lstrip().startswith("|") and i + 1 < len(lines) and _is_rule(lines[i + 1]):
            columns, rows, i = _cells(line), [], i + 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out += _table_lines(columns, rows)
            continue
        out.append(_round(_ISSUE.sub("", line) if line.startswith("#") else line))
        i += 1
    return "\n".join(out)


# -- summaries ------------------------------------------------------------------------------------------------------
def _find(markdown: str, *needles: str) -> tuple[list[str], list[list[str]]] | None:
    """The first table whose columns contain every needle (case-insensitive)."""
    for _, columns, rows in tables(markdown):
        lowered = [c.lower() for c in columns]
        if all(any(n.lower() == c for c in lowered) for n in needles):
            return columns, rows
    return None


def _col(columns: list[str], name: str) -> int:
    return [c.lower() for c in columns].index(name.lower())


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def _labels(cell: str) -> str:
    x = number(cell)
    return f"{100 * x:g}%" if x is not None and 0 < x <= 1 else cell


def _evaluation(split: str) -> bool:
    """Whether a split label names an evaluation split (not ``(tuning)``, not ``(chose ...)``)."""
    return not re.search(r"\((tuning|chose)", split)


def _verdict(margins: list[tuple[str, float]], unit: str, where: str = "On the evaluation splits") -> str:
    """One sentence on the evaluation margins (``(split, margin)`` pairs, tuning rows excluded)."""
    if not margins:
        return ""
    wins = sum(m > 0 for _, m in margins)
    lo, hi = min(m for _, m in margins), max(m for _, m in margins)
    return (
        f"{where} the default beats the best baseline in {wins} of {len(margins)} settings; the margin ranges from "
        f"{_signed(lo)} to {_signed(hi)} {unit}."
    )


def _table(columns: list[str], rows: list[list[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + ["| " + " | ".join(r) + " |" for r in rows]
    )


def summary_celltyping(md: str) -> str | None:
    found = _find(md, "split", "labels", "default", "baseline", "scanvi")
    if found is None:
        return None
    columns, rows = found
    margin = next((c for c in columns if c.lower().startswith("default - max")), None)
    out, margins = [], []
    for r in rows:
        d, b, s = (number(r[_col(columns, k)]) for k in ("default", "baseline", "scANVI"))
        if d is None or b is None:
            continue
        m = number(r[_col(columns, margin)]) if margin else d - max(b, s if s is not None else b)
        out.append([r[0], _labels(r[1]), f"{d:.3f}", f"{b:.3f}", f"{s:.3f}" if s is not None else "", _signed(m)])
        if _evaluation(r[0]):
            margins.append((r[0], m))
    header = ["split (train->test)", "labelled cells", "default", "PCA + logreg", "scANVI (published)", "margin"]
    return (
        "Macro-F1 on a held-out section (or half of one), from a fraction of the other's labels. `default` = "
        "`ss.tl.pretrain_pseudolabel` then `ss.tl.annotate`; margin = default minus the better of PCA + logistic "
        "regression and scANVI.\n\n" + _table(header, out) + "\n\n" + _verdict(margins, "macro-F1")
    )


def summary_reference_mapping(md: str) -> str | None:
    found = _find(md, "split", "panel", "labels", "map_query", "best baseline", "margin")
    if found is None:
        return None
    columns, rows = found
    out, margins = [], []
    for r in rows:
        get = {c.lower(): r[i] for i, c in enumerate(columns)}
        m = number(get["margin"])
        if m is None:
            continue
        out.append(
            [get["split"], get["panel"], _labels(get["labels"]), get["map_query"], get["best baseline"], get["margin"]]
        )
        if _evaluation(get["split"]):
            margins.append((get["split"], m))
    header = ["split (reference->query)", "query genes", "reference labels", "map_query", "best baseline", "margin"]
    return (
        "Macro-F1 on a query section that no model saw in training (`half` = the query measures half of the "
        "reference's genes). Baselines: PCA + logistic regression and scANVI (published).\n\n"
        + _table(header, out)
        + "\n\n"
        + _verdict(margins, "macro-F1")
    )


def summary_domains(md: str) -> str | None:
    for _, columns, rows in tables(md):
        lowered = [c.lower() for c in columns]
        if lowered[:2] != ["split", "default"] or "margin" not in lowered:
            continue
        i = lowered.index("margin")
        out = [[r[0], r[1], r[i - 1], r[i]] for r in rows if number(r[i]) is not None]
        margins = [(r[0], number(r[3])) for r in out if _evaluation(r[0])]
        header = ["split (evaluation)", "default ARI", "best training-free baseline", "margin"]
        return (
            "Adjusted Rand index of `ss.tl.domains` (defaults) against the annotated layers or regions, mean ± sd "
            "over clustering seeds; tuned on STARmap BZ5 only.\n\n"
            + _table(header, out)
            + "\n\n"
            + _verdict(margins, "ARI")
        )
    return None


_H2E_ROLES = {
    "hist2expr": "default",
    "ridge_stats": "baseline: ridge on colour / texture statistics",
    "hest_stats": "baseline: HEST-Benchmark-style probe",
    "oracle_neighbour_mean": "reference: mean of the measured neighbours",
    "noise_ceiling": "ceiling: counting noise",
}


def summary_hist2expr(md: str) -> str | None:
    for heading, columns, rows in tables(md):
        if not heading.lower().startswith("headline") or columns[0].lower() != "method":
            continue
        by_method = {r[0]: r for r in rows}
        if "hist2expr" not in by_method:
            return None
        out = [
            [m, role, f"{number(by_method[m][1]):.3f}", f"{number(by_method[m][2]):.3f}"]
            for m, role in _H2E_ROLES.items()
            if m in by_method
        ]
        default = number(by_method["hist2expr"][1])
        baselines = [number(by_method[m][1]) for m in ("ridge_stats", "hest_stats") if m in by_method]
        margin = default - max(b for b in baselines if b is not None) if baselines and default is not None else None
        text = (
            f"Mean Pearson correlation per gene between predicted and measured expression on held-out her2st "
            f"sections ({columns[1].split()[-1]}), over all genes and over the 50 best "
            "predicted.\n\n" + _table(["method", "role", columns[1], columns[2]], out)
        )
        if margin is not None:
            text += f"\n\nOn the held-out sections the margin of the default over the better baseline is {_signed(margin)} mean Pearson."
        return text
    return None


def summary_superres(md: str) -> str | None:
    out, margins = [], []
    for heading, columns, rows in tables(md):
        lowered = [c.lower() for c in columns]
        if lowered[0] != "method" or "mean pearson" not in lowered:
            continue
        i = lowered.index("mean pearson")
        values = {r[0]: number(r[i]) for r in rows}
        default = values.get("superres_count_aware", values.get("superres"))
        baselines = {k: values[k] for k in ("uniform", "kernel", "kernel_split") if values.get(k) is not None}
        if default is None or not baselines:
            continue
        best = max(baselines, key=baselines.get)
        m = default - baselines[best]
        oracle = values.get("oracle_point_split")
        dataset = heading.split(" (")[0]
        out.append(
            [
                dataset,
                f"{default:.3f}",
                f"{baselines[best]:.3f} ({best})",
                _signed(m),
                f"{oracle:.3f}" if oracle else "",
            ]
        )
        margins.append((dataset, m))
    if not out:
        return None
    header = ["dataset", "default", "best baseline", "margin", "ceiling: oracle split"]
    return (
        "Mean Pearson correlation per gene between enhanced sub-spots and the true sub-spot counts (pseudo-spots "
        "binned from single-cell data, so the truth is known). Baselines: uniform split of each spot, kernel "
        "interpolation, kernel-shaped split; the oracle knows where the cells lie.\n\n"
        + _table(header, out)
        + "\n\n"
        + _verdict(margins, "Pearson", where="Over these datasets")
    )


def summary_atlas_scale(md: str) -> str | None:
    found = _find(md, "row", "n_cells", "train_cells_per_second", "peak_rss_gb")
    if found is None:
        return None
    columns, rows = found
    keep = ["path", "n_cells", "train_cells_per_second", "embed_cells_per_second", "peak_rss_gb"]
    idx = [_col(columns, k) for k in keep if k in [c.lower() for c in columns]]
    header = ["counts", "cells", "training (cells / s)", "embedding (cells / s)", "peak memory (GB)"][: len(idx)]
    return (
        "One epoch of the default `ss.tl.pretrain_mask` and the embedding of every cell on 2 CPU cores (`memory`: "
        "table in memory; `disk`: opened with `ss.io.read_backed`).\n\n"
        + _table(header, [[r[i] for i in idx] for r in rows])
    )


SUMMARIES: dict[str, tuple[str, Callable[[str], str | None]]] = {
    "celltyping": ("Cell-type annotation", summary_celltyping),
    "reference_mapping": ("Reference mapping", summary_reference_mapping),
    "domains": ("Spatial domains", summary_domains),
    "hist2expr_her2st": ("Expression from histology", summary_hist2expr),
    "superres": ("Super-resolution", summary_superres),
    "atlas_scale": ("Speed at atlas scale", summary_atlas_scale),
}


def verdicts(results: Path = RESULTS) -> dict[str, str]:
    """One sentence per capability on its margin (``verdict_<name>``), for the guides (MyST substitutions).

    The sentence is the last paragraph of the capability's summary; a capability whose results are missing or
    unreadable gets a pointer to the benchmarks page instead, so a guide never shows a stale number.
    """
    out = {}
    for name, (_, summarise) in SUMMARIES.items():
        path = Path(results) / f"{name}.md"
        try:
            body = summarise(path.read_text(encoding="utf-8")) if path.exists() else None
        except (ValueError, IndexError, KeyError, TypeError):
            body = None
        last = body.strip().split("\n\n")[-1] if body else ""
        out[f"verdict_{name}"] = (
            last if "margin" in last.lower() else "See the benchmarks page for the measured margin."
        )
    return out


# -- pages ---------------------------------------------------------------------------------------------------------
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


def result_names(results: Path) -> list[str]:
    """The results files to render: every ``<name>.md``, without ``<name>_quick`` when ``<name>`` exists."""
    names = sorted(p.stem for p in Path(results).glob("*.md"))
    return [n for n in names if not (n.endswith("_quick") and n[: -len("_quick")] in names)]


def _title(markdown: str, name: str) -> str:
    first = markdown.lstrip().splitlines()[0] if markdown.strip() else ""
    return _ISSUE.sub("", first.lstrip("#").strip()) if first.startswith("# ") else name


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def build(results: Path = RESULTS, out: Path = OUT) -> Path:
    """Write the benchmarks page to ``out`` and one page per results file to ``out.parent / "results"``.

    Files are rewritten only when their content changes (incremental builds stay fast); pages of results files that
    no longer exist are removed. Returns ``out``.
    """
    results, out = Path(results), Path(out)
    pages = out.parent / "results"
    names = result_names(results)
    if names:
        pages.mkdir(exist_ok=True)
    texts = {name: (results / f"{name}.md").read_text(encoding="utf-8").strip() for name in names}
    sections = []
    for name, (title, summarise) in SUMMARIES.items():
        if name not in texts:
            continue
        try:
            body = summarise(texts[name])
        except (ValueError, IndexError, KeyError, TypeError):
            body = None
        body = body or "The results file has no table this summary can read; see the full results."
        sections.append(f"## {title}\n\n{body}\n\nFull results: [{_title(texts[name], name)}](results/{name}.md).\n")
    titles = {n: _title(texts[n], n) for n in names}
    repeated = {t for t in titles.values() if list(titles.values()).count(t) > 1}
    titles = {n: f"{t} ({n})" if t in repeated else t for n, t in titles.items()}  # one sidebar entry each
    listing = [f"- [{titles[n]}](results/{n}.md) (`benchmarks/results/{n}.md`)" for n in names]
    text = HEADER
    if names:
        text += "\n" + "\n".join(sections) + "\n## All results files\n\n" + "\n".join(listing) + "\n"
        text += "\n```{toctree}\n:hidden:\n\n" + "\n".join(f"results/{n}" for n in names) + "\n```\n"
    else:
        text += EMPTY
    for name in names:
        script = f"`benchmarks/{name}.py`" if (results.parent / f"{name}.py").exists() else "its benchmark script"
        page = readable(texts[name])
        if page.lstrip().startswith("# "):  # the page title without issue numbers, unique among the pages
            page = page.lstrip().split("\n", 1)[1] if "\n" in page.lstrip() else ""
        page = f"# {titles[name]}\n\n{page}"
        _write(
            pages / f"{name}.md",
            f"{page}\n\n<small>Source: `benchmarks/results/{name}.md`, written by {script}.</small>\n",
        )
    if pages.exists():
        for stale in pages.glob("*.md"):
            if stale.stem not in names:
                stale.unlink()
    _write(out, text)
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
