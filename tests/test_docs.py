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


def test_benchmarks_page_is_generated_from_result_files(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "alpha.md").write_text("# Alpha bench\n\n| method | r |\n|---|---|\n| ours | 0.31 |\n")
    (results / "alpha.json").write_text(json.dumps({"r": 0.31}))
    (results / "beta.json").write_text(json.dumps({"mean": 0.123456, "folds": ["A"]}))
    out = build_benchmarks_page.build(results, tmp_path / "benchmarks.md")
    text = out.read_text()
    assert text.startswith("# Benchmarks\n")
    assert "## Alpha bench" in text and "| ours | 0.31 |" in text  # heading demoted, table kept verbatim
    assert "## beta" in text and "| mean | 0.1235 |" in text and "| folds[0] | A |" in text
    assert text.index("## Alpha bench") < text.index("## beta")
    assert "`benchmarks/results/alpha.md`, `benchmarks/results/alpha.json`" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "No benchmark results" in build_benchmarks_page.build(empty, tmp_path / "b2.md").read_text()


def test_demote_headings_leaves_code_alone():
    assert build_benchmarks_page.demote_headings("# T\n```\n# x\n```\n### S") == "## T\n```\n# x\n```\n#### S"


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    pytest.importorskip("sphinx_book_theme")
    pytest.importorskip("sphinx_autodoc_typehints")
    out = tmp_path / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees")]
    proc = subprocess.run([*cmd, str(DOCS), str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    for page in ("index", "quickstart", "api", "benchmarks", "citations", "tutorials", "guide/pretraining"):
        assert (out / f"{page}.html").exists(), page
    api = (out / "generated" / "sslspatial.tl.pretrain_mask.html").read_text()
    assert "Examples" in api and "likelihood" in api  # rendered from the docstring
    for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
        html = (out / "tutorials" / f"{notebook.stem}.html").read_text()
        assert "<img" in html, f"{notebook.name} is rendered without its stored figures"
    shutil.rmtree(out, ignore_errors=True)
