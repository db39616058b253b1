"""The documentation: API pages cover every public name, the benchmarks page is generated, and the sphinx build
passes with warnings as errors (skipped when the docs extras are not installed)."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MODULES = ("pp", "tl", "pl", "datasets", "model", "metrics", "data", "io")

sys.path.insert(0, str(DOCS))
import build_benchmarks_page  # noqa: E402


def _public_names(module_name: str) -> list[str]:
    module = importlib.import_module(f"sslspatial.{module_name}")
    names = getattr(module, "__all__", None)
    if names is None:  # a plain module (metrics): its public functions and classes
        names = [
            n
            for n, obj in vars(module).items()
            if not n.startswith("_")
            and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == module.__name__
        ]
    return sorted(names)


@pytest.mark.parametrize("module_name", MODULES)
def test_api_page_lists_every_public_name(module_name):
    api = (DOCS / "api.md").read_text()
    listed = set(re.findall(rf"^\s+{module_name}\.(\w+)\s*$", api, flags=re.MULTILINE))
    missing = sorted(set(_public_names(module_name)) - listed)
    assert not missing, f"add to docs/api.md under sslspatial.{module_name}: {missing}"


def test_benchmarks_page_is_generated_from_markdown_results_only(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "alpha.md").write_text(
        "# Alpha bench (issue 12)\n\n## Targets of issue 12\n\n| method | ('osmfish', 'a->b', 0.1) | ('starmap', 'c->d', 1.0) |\n|---|---|---|\n"
        '| ours | 0.3123456789 | nan |\n| tuning: x | nan | nan |\n\n```\n{"fit": 1.23456789}\n```\n'
    )
    (results / "alpha.json").write_text(json.dumps({"r": 0.31}))
    (results / "alpha_quick.md").write_text("# Alpha bench (quick)\n")  # a quick run beside a full run: not rendered
    (results / "beta.json").write_text(json.dumps({"mean": 0.123456, "folds": ["A"]}))  # no Markdown: not rendered
    out = build_benchmarks_page.build(results, tmp_path / "benchmarks.md")
    text = out.read_text()
    assert text.startswith("# Benchmarks\n") and "tuning split" in text and "evaluation splits" in text
    assert "results/beta" not in text and "alpha_quick" not in text and "[Alpha bench](results/alpha.md)" in text
    assert sorted(p.name for p in (tmp_path / "results").glob("*.md")) == ["alpha.md"]
    page = (tmp_path / "results" / "alpha.md").read_text()
    assert page.startswith("# Alpha bench\n")  # no issue number in a heading
    assert "\n## Targets\n" in page  # nor a dangling "of" where one was taken off
    assert "**osmfish**" in page and "| method | a\u2192b, 10% labels |" in page  # readable columns, not tuples
    assert "| ours | 0.3123 |" in page and "nan" not in page and "tuning: x" not in page
    assert "| fit | 1.235 |" in page and "{" not in page  # a JSON block becomes a table
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "No benchmark results" in build_benchmarks_page.build(empty, tmp_path / "b2.md").read_text()


def test_benchmarks_page_summarises_every_capability(tmp_path):
    """On the committed results: one summary table per capability with a margin column, and no key/value dumps."""
    out = build_benchmarks_page.build(ROOT / "benchmarks" / "results", tmp_path / "benchmarks.md")
    text = out.read_text()
    for title, _ in build_benchmarks_page.SUMMARIES.values():
        section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
        assert "no table this summary can read" not in section, f"the {title} summary could not read its results"
        assert "|---|" in section and ("margin" in section.lower() or "Speed" in title), title
    for page in [out, *(tmp_path / "results").glob("*.md")]:
        body = page.read_text()
        assert "| key | value |" not in body and not re.search(r"\|\s*\('", body), page.name  # no dumps, no tuples
        assert not re.search(r"\|\s*nan\s*\|", body) and not re.search(r"\d\.\d{6,}", body), page.name
    assert not (tmp_path / "results" / "celltyping_previous_run.md").exists()


def test_demote_headings_leaves_code_alone():
    assert build_benchmarks_page.demote_headings("# T\n```\n# x\n```\n### S") == "## T\n```\n# x\n```\n#### S"


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    pytest.importorskip("sphinx_book_theme")
    pytest.importorskip("sphinx_autodoc_typehints")
    out = tmp_path / "html"
    pytest.importorskip("sphinx_gallery")
    # -n: every internal reference must resolve (docs/conf.py lists the other packages, unresolved without network)
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "-n",
        "--keep-going",
        "-q",
        "-b",
        "html",
        "-d",
        str(tmp_path / "doctrees"),
    ]
    proc = subprocess.run([*cmd, str(DOCS), str(out)], capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-5000:]
    for page in (
        "index",
        "quickstart",
        "api",
        "benchmarks",
        "citations",
        "tutorials",
        "guide/pretraining",
        "changelog",
    ):
        assert (out / f"{page}.html").exists(), page
    assert 'src="_images/landing.png"' in (out / "index.html").read_text()
    gallery = (out / "gallery" / "index.html").read_text()
    examples = sorted((DOCS / "examples").glob("plot_*.py"))
    assert len(examples) >= 6 and gallery.count("sphx-glr-thumbcontainer") == len(examples)  # one thumbnail each
    for example in examples:
        assert "<img" in (out / "gallery" / f"{example.stem}.html").read_text(), f"{example.name} drew no figure"
    assert "| key | value |" not in (out / "benchmarks.html").read_text()
    api = (out / "generated" / "sslspatial.tl.pretrain_mask.html").read_text()
    assert "Examples" in api and "likelihood" in api  # rendered from the docstring
    for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
        html = (out / "tutorials" / f"{notebook.stem}.html").read_text()
        assert "<img" in html, f"{notebook.name} is rendered without its stored figures"
    shutil.rmtree(out, ignore_errors=True)


NUMPYDOC_ORDER = (
    "Parameters", "Attributes", "Methods", "Returns", "Yields", "Receives", "Other Parameters", "Raises", "Warns",
    "Warnings", "See Also", "Notes", "References", "Examples",
)  # fmt: skip


def _sections(doc: str) -> list[str]:
    lines = inspect.cleandoc(doc).splitlines()
    return [
        lines[i].strip()
        for i in range(len(lines) - 1)
        if lines[i].strip() and re.fullmatch(r"-{3,}", lines[i + 1].strip())
    ]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_sections_in_numpydoc_order(module_name):
    """A section out of order renders wrongly (napoleon shows a second "Parameters" list after "Returns")."""
    module = importlib.import_module(f"sslspatial.{module_name}")
    wrong = []
    for name in _public_names(module_name):
        obj = getattr(module, name)
        members = [obj] + [
            getattr(v, "fget", None) or getattr(v, "__func__", v)
            for k, v in vars(obj).items()
            if inspect.isclass(obj) and not k.startswith("_")
        ]
        for member in members:
            sections = _sections(getattr(member, "__doc__", None) or "")
            if sections != sorted(sections, key=lambda s: NUMPYDOC_ORDER.index(s) if s in NUMPYDOC_ORDER else -1):
                wrong.append(f"{name}.{getattr(member, '__name__', '')}: {sections}")
            wrong += [f"{name}: unknown section {s!r}" for s in sections if s not in NUMPYDOC_ORDER]
    assert not wrong, wrong
