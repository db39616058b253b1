"""REAL DATA: every ```python block of the README, the quickstart and the guides executes, top to bottom, as a reader copies it.

Each page's blocks run in order with :func:`exec` in one namespace per page, in a temporary working directory where
``data`` links to the shared data folder (the pages read ``ss.datasets.<reader>(path="data/<dataset>")``; nothing
downloads). The only change injected is a cap on training: every :class:`scvi.train.Trainer` gets at most
:data:`MAX_EPOCHS` epochs, so a wrong gene name or key fails here while the module stays within a few minutes.

A ```python block whose first line starts with :data:`SKIP_MARKER`, and a ```{code-block} python block (MyST's
fence for code that is shown only), is not executed; :data:`NOT_EXECUTED` lists every such block, so a new
exception has to be added here on purpose.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = (
    "../README.md",
    "index.md",
    "quickstart.md",
    "guide/graphs.md",
    "guide/pretraining.md",
    "guide/hist2expr.md",
    "guide/superres.md",
)
MAX_EPOCHS = 2
SKIP_MARKER = "# not executed:"
NOT_EXECUTED = {  # page -> numbers (1-based, among the page's python blocks) of the blocks not executed
    "guide/pretraining.md": {8},  # multi-GPU DDP training: needs 4 GPUs
    "guide/hist2expr.md": {
        3
    },  # {code-block}: pretrain_image on her2st takes minutes (a tested call: test_pretrain_image)
    "guide/superres.md": {2},  # {code-block}: spatialdata-plot chain, an optional extra ("sslspatial[plot]")
}
FENCE = re.compile(r"^```(python|\{code-block\}[ \t]+python)[ \t]*\n(.*?)^```[ \t]*$", flags=re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[tuple[str, bool]]:
    """The python code blocks of a markdown (MyST) page, in order, and whether each is to be executed.

    Parameters
    ----------
    text
        Markdown (MyST) source.

    Returns
    -------
    ``(source, executed)`` per ```python or ```{code-block} python block, the source without its fences;
    ``executed`` is False for a ``{code-block}`` fence and for a block whose first line starts with
    :data:`SKIP_MARKER`.
    """
    blocks = []
    for m in FENCE.finditer(text):
        source = m.group(2)
        blocks.append((source, m.group(1) == "python" and not source.lstrip().startswith(SKIP_MARKER)))
    return blocks


def test_python_blocks_are_found():
    text = (
        "a\n```python\nx = 1\n```\n\n```bash\nls\n```\n```python\n# not executed: why\ny = 2\n```\n"
        "```{code-block} python\nz = 3\n```\n"
    )
    assert python_blocks(text) == [("x = 1\n", True), ("# not executed: why\ny = 2\n", False), ("z = 3\n", False)]


@pytest.fixture
def capped_epochs(monkeypatch):
    """Cap ``max_epochs`` of every scvi-tools / Lightning trainer the models build at :data:`MAX_EPOCHS`."""
    from scvi.train import Trainer

    original = Trainer.__init__

    def capped(self, *args, max_epochs: int = MAX_EPOCHS, **kwargs):
        original(self, *args, max_epochs=min(int(max_epochs), MAX_EPOCHS), **kwargs)

    monkeypatch.setattr(Trainer, "__init__", capped)


@pytest.fixture
def page_dir(tmp_path, shared_data, monkeypatch):
    """A working directory with ``data`` -> the shared data folder; matplotlib on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    (tmp_path / "data").symlink_to(shared_data, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


@pytest.mark.parametrize("page", PAGES)
def test_page_runs(page, page_dir, capped_epochs):
    import matplotlib.pyplot as plt

    blocks = python_blocks((DOCS / page).read_text())
    assert blocks, f"{page}: no ```python blocks found"
    skipped = {i for i, (_, executed) in enumerate(blocks, 1) if not executed}
    assert skipped == NOT_EXECUTED.get(page, set()), (
        f"{page}: the blocks not executed are {sorted(skipped)}, NOT_EXECUTED lists "
        f"{sorted(NOT_EXECUTED.get(page, set()))}"
    )
    namespace: dict = {"__name__": "__docs__"}
    try:
        for i, (source, executed) in enumerate(blocks, 1):
            if not executed:
                continue
            code = compile(source, f"{page} [block {i}]", "exec")
            try:
                exec(code, namespace)
            except Exception as err:
                raise AssertionError(
                    f"{page}, python block {i} of {len(blocks)} failed: {type(err).__name__}: {err}"
                ) from err
            plt.close("all")
    finally:
        plt.close("all")
        namespace.clear()
    assert os.getcwd() == str(page_dir)
