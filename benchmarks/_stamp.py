"""Commit stamps for benchmark results: which code computed a row, and whether that code has changed since.

Every results JSON records, per row (or per run when one run computes every row), ``{"commit": <sha>, "dirty": bool}``:
the commit checked out when the row was computed, and whether ``src/`` or the script itself had uncommitted changes
(then the commit does not name the code exactly). The Markdown prints it (:func:`stamp_text`).

A ``--resume`` keeps a row only when :func:`is_current` says its code is today's: a clean stamp whose
``git diff --quiet <commit> HEAD -- src/ benchmarks/<script>`` finds no change, and no uncommitted change now.
A row without a stamp (written before stamps existed) or with a dirty one is recomputed.
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)


def _paths(script: str | Path) -> list[str]:
    return ["src/", str(Path(script).resolve().relative_to(ROOT))]


@cache
def stamp(script: str | Path) -> dict:
    """``{"commit", "dirty"}`` of the code running now: HEAD, and uncommitted changes under ``src/`` or in ``script``.

    Cached: call it once at the start of a run (before any file is edited) and it names the code the run imported.
    """
    head = _git("rev-parse", "HEAD")
    if head.returncode != 0:
        return {"commit": None, "dirty": True}
    dirty = bool(_git("status", "--porcelain", "--", *_paths(script)).stdout.strip())
    return {"commit": head.stdout.strip(), "dirty": dirty}


def is_current(row_stamp: dict | None, script: str | Path) -> bool:
    """Whether a row stamped ``row_stamp`` was computed by the code of ``src/`` and ``script`` checked out now."""
    if not row_stamp or not row_stamp.get("commit") or row_stamp.get("dirty", True):
        return False
    now = stamp(script)
    if now["dirty"] or now["commit"] is None:
        return False
    diff = _git("diff", "--quiet", row_stamp["commit"], "HEAD", "--", *_paths(script))
    return diff.returncode == 0  # 1: changed; 128: unknown commit (then recompute too)


def stamp_text(row_stamp: dict | None) -> str:
    """Short form for the Markdown: ``abc1234`` (``abc1234+dirty``), or ``not recorded`` for rows without one."""
    if not row_stamp or not row_stamp.get("commit"):
        return "not recorded"
    return row_stamp["commit"][:7] + ("+dirty" if row_stamp.get("dirty") else "")


def stamp_line(row_stamp: dict | None) -> str:
    """One Markdown sentence for results computed in one run."""
    return (
        f"Computed at commit `{stamp_text(row_stamp)}` (`+dirty`: with uncommitted changes to `src/` or the script; "
        "`not recorded`: written before the benchmarks stamped their commit)."
    )
