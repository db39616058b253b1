"""Atlas-scale benchmark: one epoch of the default masked pretraining (GAT, 2 layers, 20% of cells masked, NB) and the
embedding of every cell, on a synthetic tissue of 500 genes with a radius graph of mean degree about 6, on CPU.

Rows per size (``--cells``): ``memory`` (the zarr table read whole into memory), ``disk`` (``ss.io.read_backed``:
counts stay in the store, read per spatial tile; the store's first call, so its count check streams the whole store;
minibatches prefetched in a background thread only where ``default_prefetch`` finds a free core, the ``prefetch`` column
says how many), ``disk-prefetch`` (the same with 2 minibatches prefetched, the A/B of the prefetch in the same run) and
``disk-again`` (a second call on the same store: the count check is found in the store); ``disk-no-prefetch`` on
request. Sizes above 2,000,000 cells run only the ``disk`` row unless ``--kinds`` says otherwise. The data are generated
by a separate process into a temporary zarr store, cells in Z-order (a sorted store, as ``ss.io.sort_spatially`` +
``write_zarr`` gives), never a whole count matrix in memory. Each row runs the whole ``ss.tl.pretrain_mask`` call in a
fresh process, so the peak resident set size (``resource.getrusage``) is its own. Recorded per row: the whole call
(opening the store to the embedding written), training alone, embedding alone, setup (the rest), peak RSS, the
store's chunking and compressor, torch threads, the 1-minute load average before and after (other jobs sharing the
CPUs make the figures lower bounds), and the commit (``_stamp``). The Markdown ends with the targets of issue 32,
met or not.

Run: ``python benchmarks/atlas_scale.py --cells 1000000`` then ``--cells 5000000`` (rows of other sizes measured by
the same code are kept in the results files); ``--quick`` is ``--cells 100000`` written to ``atlas_scale_quick.*``.

``--compressors lz4,zstd,none --cells 200000``: the store rewritten with ``ss.io.write_backed`` (1,024 rows per chunk)
per compressor, and the ``disk`` row trained from each and from the store as generated (``write_zarr``), in
``results/atlas_scale_compressors.{json,md}``.

``--store-options [--store PATH | --cells N]`` rewrites the store's counts per chunk size and compressor (and in
random row order) and times the reads of 150 training minibatches from each: ``results/atlas_scale_store.*``.

``--batch-sweep 256,512,1024,2048`` trains the in-memory row once per batch size (``--cells``, default 1,000,000) and
writes ``results/atlas_scale_batch.{json,md}``: the measurement behind :func:`sslspatial.data.default_batch_size`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _atlas_data import RESULTS, generate, store_layout, store_options, table_lines, write_store_options
from _stamp import is_current, stamp, stamp_text


def train(path: str, mode: str, threads: int, batch_size: int | None, prefetch: int | None = None) -> dict:
    """The whole ``ss.tl.pretrain_mask`` call (1 epoch, default model) on the store, read as ``mode`` says.

    ``memory`` reads the table into memory (``anndata.read_zarr``), ``disk`` opens it with ``ss.io.read_backed``; the
    whole call is timed (opening the store, setup with its checks, training, embedding of every cell), and training
    and embedding alone by wrapping the model's ``train`` and ``get_latent_representation``. ``prefetch`` overrides
    the number of minibatches built ahead (``0`` / ``2``: prefetching off / on, for the A/B rows).
    """
    code = stamp(__file__)  # the code this process imports (taken before the import, not when the row is written)
    import torch

    torch.set_num_threads(threads)
    import anndata as ad

    import sslspatial as ss
    from sslspatial.data import _loaders
    from sslspatial.model import SpatialPretrainModel

    if prefetch is not None:
        _loaders.default_prefetch = lambda collate: prefetch
    timings: dict[str, float] = {}

    def timed(name, method):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                timings[name] = time.perf_counter() - t

        return wrapper

    SpatialPretrainModel.train = timed("train", SpatialPretrainModel.train)
    SpatialPretrainModel.get_latent_representation = timed("embed", SpatialPretrainModel.get_latent_representation)
    counted = {"passes": 0}
    from sslspatial import _validate

    blocks = _validate._value_blocks

    def counting(x, *args):
        counted["passes"] += 1
        return blocks(x, *args)

    _validate._value_blocks = counting
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    table = ad.read_zarr(path) if mode == "memory" else ss.io.read_backed(path)
    ss.tl.pretrain_mask(table, max_epochs=1, batch_size=batch_size, train_kwargs={"enable_progress_bar": False})
    t_whole = time.perf_counter() - t0
    n = table.n_obs
    degree = float(table.obsp["spatial_connectivities"].getnnz(1).mean())
    return {
        "stamp": code,
        "path": mode,
        "prefetch": f"default ({_loaders.disk_prefetch() if mode == 'disk' else 0})" if prefetch is None else prefetch,
        "n_cells": n,
        "n_genes": table.n_vars,
        "mean_degree": round(degree, 2),
        "batch_size": batch_size or ss.data.default_batch_size(n),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        **store_layout(path),
        "count_check": "full pass" if counted["passes"] else "cached in the store",
        "seconds_whole_call": round(t_whole, 1),
        "whole_call_cells_per_second": round(n / t_whole),
        "seconds_setup": round(t_whole - timings["train"] - timings["embed"], 1),
        "seconds_train_one_epoch": round(timings["train"], 1),
        "train_cells_per_second": round(n / timings["train"]),
        "seconds_embed_all": round(timings["embed"], 1),
        "embed_cells_per_second": round(n / timings["embed"]),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "model": "encoder=gat (2 layers, 128 hidden, latent 32), objective=mask, likelihood=nb",
    }


def batch_sweep(me: list[str], batch_sizes: list[int], n_cells: int) -> None:
    """The in-memory row once per batch size on one store; writes ``results/atlas_scale_batch.{json,md}``."""
    results = []
    with tempfile.TemporaryDirectory(prefix="atlas_scale_") as tmp:
        store = os.path.join(tmp, "atlas.zarr")
        subprocess.run([*me, "--_generate", store, str(n_cells)], check=True)
        for batch_size in batch_sizes:
            results.append(_train_subprocess([*me, "--batch-size", str(batch_size)], store, "memory"))
            print(json.dumps(results[-1]), flush=True)
    keys = ["batch_size", "n_cells", "seconds_train_one_epoch", "train_cells_per_second", "peak_rss_gb"]
    keys.append("load_average_1min_before_after")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "atlas_scale_batch.json").write_text(json.dumps({"rows": results}, indent=2) + "\n")
    lines = [
        "# Atlas scale: batch size",
        "",
        f"One epoch of the default `pretrain_mask` model on {n_cells:,} synthetic cells x 500 genes held in memory, "
        "per batch size (seeds per minibatch), each in a fresh process, torch threads = "
        f"{results[0]['threads']}. Written by `benchmarks/atlas_scale.py --batch-sweep`; the measurement behind "
        "`sslspatial.data.default_batch_size`. A 1-minute load average above the thread count means other jobs "
        "shared the CPUs.",
        "",
        *table_lines(keys, results),
    ]
    (RESULTS / "atlas_scale_batch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


#: row kind -> (path, prefetch override); ``disk-prefetch`` / ``disk-no-prefetch`` force the prefetch on / off (A/B).
KINDS = {
    "memory": ("memory", None),
    "disk": ("disk", None),
    "disk-prefetch": ("disk", 2),
    "disk-no-prefetch": ("disk", 0),
    "disk-again": ("disk", None),
}
LARGE = 2_000_000  # above: only the disk row by default (the in-memory table alone would take most of the RAM)


def label(n: int) -> str:
    """``1M``, ``5M``, ``200k``: the size in a row name."""
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k"


def _train_subprocess(me: list[str], store: str, mode: str, prefetch: int | None = None) -> dict:
    """Train one row in a fresh process (so its peak RSS is its own) and return its result."""
    extra = [] if prefetch is None else ["--_prefetch", str(prefetch)]
    proc = subprocess.run([*me, *extra, "--_train", store, mode], capture_output=True, text=True)
    line = [row for row in proc.stdout.splitlines() if row.startswith("RESULT ")]
    if proc.returncode or not line:
        raise RuntimeError(f"{mode} training failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[0][7:])


def _rewrite(source: str, path: str, compressor: str) -> None:
    """``ss.io.write_backed`` of the store at ``source`` (opened on disk) to ``path`` with ``compressor``."""
    import sslspatial as ss

    ss.io.write_backed(ss.io.read_backed(source), path, compressor=compressor)


def _targets(rows: dict[str, dict]) -> list[tuple[str, str, str, str, str]]:
    """``(what, today, target, measured, met)`` for every target of issue 32 (``not measured`` without its rows)."""
    out = []
    disk, again, memory, big = (rows.get(k) for k in ("disk-1M", "disk-again-1M", "memory-1M", "disk-5M"))

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "not met")

    measured = "not measured"
    if disk:
        measured = f"{disk['whole_call_cells_per_second']:,} cells/s ({disk['seconds_whole_call']} s, first call)"
        if again:
            measured += f"; again: {again['whole_call_cells_per_second']:,} cells/s"
    out.append(
        (
            "whole `pretrain_mask` call, 1M cells from a sorted zarr store, 1 epoch (+ embedding)",
            "10,900-13,700 cells/s",
            ">= 30,000 cells/s",
            measured,
            verdict(disk and disk["whole_call_cells_per_second"] >= 30_000),
        )
    )
    ratio = disk["train_cells_per_second"] / memory["train_cells_per_second"] if disk and memory else None
    out.append(
        (
            "training alone from disk (1M)",
            "21,060 cells/s (in memory 37,027)",
            "within 15% of in-memory",
            "not measured"
            if ratio is None
            else f"{disk['train_cells_per_second']:,} vs {memory['train_cells_per_second']:,} cells/s ({ratio:.0%})",
            verdict(None if ratio is None else ratio >= 0.85),
        )
    )
    out.append(
        (
            "embedding from disk (1M)",
            "32,993 cells/s",
            ">= 80,000 cells/s",
            f"{disk['embed_cells_per_second']:,} cells/s" if disk else "not measured",
            verdict(disk and disk["embed_cells_per_second"] >= 80_000),
        )
    )
    out.append(
        (
            "peak RSS, 1M cells from disk",
            "1.1-1.3 GB",
            "< 2 GB (keep)",
            f"{disk['peak_rss_gb']} GB" if disk else "not measured",
            verdict(disk and disk["peak_rss_gb"] < 2),
        )
    )
    out.append(
        (
            "5M cells from disk, 1 epoch + embedding",
            "284 s + 155 s, 2.6 GB",
            "<= 200 s + 70 s, < 4 GB",
            f"{big['seconds_train_one_epoch']} s + {big['seconds_embed_all']} s, {big['peak_rss_gb']} GB "
            f"(whole call {big['seconds_whole_call']} s)"
            if big
            else "not measured",
            verdict(
                big
                and big["seconds_train_one_epoch"] <= 200
                and big["seconds_embed_all"] <= 70
                and big["peak_rss_gb"] < 4
            ),
        )
    )
    return out


def _position(row: dict) -> tuple[int, int]:
    """Rows by size, then in the order of :data:`KINDS` (other rows, e.g. compressors, after them)."""
    kind = row["row"].rsplit("-", 1)[0]
    return row["n_cells"], list(KINDS).index(kind) if kind in KINDS else len(KINDS)


def write_results(stem: str, title: str, results: list[dict], threads: int, targets: bool, text: str) -> None:
    """``results/<stem>.{json,md}``: the rows (with rows of earlier runs of the same code kept), then the targets."""
    RESULTS.mkdir(exist_ok=True)
    here = Path(__file__)
    if (RESULTS / f"{stem}.json").exists():  # rows not rerun keep their measurement if the code is the same
        rerun = {r["row"] for r in results}
        earlier = json.loads((RESULTS / f"{stem}.json").read_text())["rows"]
        earlier = [r for r in earlier if r["row"] not in rerun and is_current(r.get("stamp"), here)]
        results = sorted(earlier + results, key=_position)
    environment = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    (RESULTS / f"{stem}.json").write_text(json.dumps({"rows": results, **environment}, indent=2) + "\n")
    keys = [k for k in results[0] if k not in ("row", "model", "stamp")]
    lines = [f"# {title}", "", text.format(cpus=environment["cpu_count"], threads=threads, model=results[0]["model"])]
    lines += ["", "| " + " | ".join(["row", *keys, "commit"]) + " |", "|" + "---|" * (len(keys) + 2)]
    lines += [
        "| " + " | ".join([*(str(r.get(k, "")) for k in ["row", *keys]), stamp_text(r.get("stamp"))]) + " |"
        for r in results
    ]
    if targets:
        lines += [
            "",
            "## Targets of issue 32",
            "",
            "Measured on the rows above (the 1M and 5M `disk` rows are the "
            "store's first call). The issue asks for an idle machine: see each row's load average.",
            "",
            "| what | today (issue 32) | target | measured | met |",
            "|---|---|---|---|---|",
        ]
        lines += ["| " + " | ".join(t) + " |" for t in _targets({r["row"]: r for r in results})]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


MAIN_TEXT = (
    "The whole `ss.tl.pretrain_mask` call, 1 epoch of the default model ({model}) plus the embedding of every cell, "
    "CPU, torch threads = {threads}, {cpus} CPUs. Written by `benchmarks/atlas_scale.py --cells N`: data generated by "
    "a separate process into a zarr store (cells in Z-order: a sorted store), each row run in a fresh process, so the "
    "peak RSS is the row's own. `memory` reads the table with `anndata.read_zarr`; `disk` opens it with "
    "`ss.io.read_backed` (counts stay in the store, read per spatial tile; `prefetch`: minibatches built ahead in a "
    "background thread, by default 2 where a CPU core is free for it and 0 otherwise, `disk-prefetch` forces 2). "
    "The whole call is from opening the "
    "store to the embedding written; setup is the whole call minus training and embedding (reading the table, count "
    "check, graph checks, split); `count_check` says whether the row streamed every stored value (a store's first "
    "call) or found the check recorded in the store by an earlier call (`disk-again`). A 1-minute load average above "
    "about {threads} before or after a row means other jobs shared the CPUs and its throughput is a lower bound."
)
COMPRESSOR_TEXT = (
    "The `disk` row ({model}; whole `ss.tl.pretrain_mask` call, 1 epoch + embedding, torch threads = {threads}, "
    "{cpus} CPUs, a fresh process per row) trained from the same synthetic atlas stored in different ways: as "
    "generated (`write_zarr` of the sorted table, anndata's chunking and compressor) and rewritten with "
    "`ss.io.write_backed` (1,024 rows per stored chunk) per compressor (blosc lz4 or zstd with byte shuffle, or none). "
    "`X_megabytes` is the size of the stored counts. Written by `benchmarks/atlas_scale.py --compressors "
    "lz4,zstd,none --cells N`; a 1-minute load average above about {threads} means other jobs shared the CPUs."
)


def compressors(me: list[str], n: int, names: list[str], threads: int) -> None:
    """The disk row per store layout (as generated, ``write_backed`` per compressor) on ``n`` cells."""
    results = []
    with tempfile.TemporaryDirectory(prefix="atlas_scale_") as tmp:
        generated = os.path.join(tmp, "generated.zarr")
        subprocess.run([*me, "--_generate", generated, str(n)], check=True)
        for name in ["as-generated", *names]:
            store = generated
            if name != "as-generated":
                store = os.path.join(tmp, f"{name}.zarr")
                subprocess.run([*me, "--_rewrite", generated, store, name], check=True)
            size = sum(f.stat().st_size for f in Path(store, "X").rglob("*") if f.is_file())
            row = {
                "row": f"disk-{label(n)}-{name}",
                **_train_subprocess(me, store, "disk"),
                "X_megabytes": size // 10**6,
            }
            results.append(row)
            print(json.dumps(results[-1]), flush=True)
            write_results(
                "atlas_scale_compressors", "Atlas scale: compressors", results, threads, False, COMPRESSOR_TEXT
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", default="1000000", help="comma-separated sizes, e.g. 1000000,5000000")
    parser.add_argument("--quick", action="store_true", help="--cells 100000, written to atlas_scale_quick.*")
    parser.add_argument("--kinds", default=None, help="comma-separated rows per size (default: see the docstring)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the package default")
    parser.add_argument("--n-genes", type=int, default=500)
    parser.add_argument("--batch-sweep", default=None, help="comma-separated batch sizes (in-memory row)")
    parser.add_argument("--compressors", default=None, help="compare compressors, e.g. lz4,zstd,none")
    parser.add_argument("--store", default=None, help="--store-options: an existing store instead of generating one")
    parser.add_argument("--store-options", action="store_true", help="measure chunk sizes and compressors")
    parser.add_argument("--_generate", nargs=2, metavar=("PATH", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--_rewrite", nargs=3, metavar=("SOURCE", "PATH", "COMPRESSOR"), help=argparse.SUPPRESS)
    parser.add_argument("--_train", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--_prefetch", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._generate:
        return generate(args._generate[0], int(args._generate[1]), args.n_genes)
    if args._rewrite:
        return _rewrite(*args._rewrite)
    if args._train:
        result = train(args._train[0], args._train[1], args.threads, args.batch_size, args._prefetch)
        return print("RESULT " + json.dumps(result))
    stamp(__file__)  # the code this run imports, before anything is written
    sizes = [100_000] if args.quick else [int(c) for c in args.cells.split(",")]
    me = [sys.executable, __file__, "--threads", str(args.threads), "--n-genes", str(args.n_genes)]
    if args.batch_size:
        me += ["--batch-size", str(args.batch_size)]
    if args.store_options:
        with tempfile.TemporaryDirectory(prefix="atlas_store_") as tmp:
            store = args.store or os.path.join(tmp, "atlas.zarr")
            if not args.store:
                subprocess.run([*me, "--_generate", store, str(sizes[0])], check=True)
            return write_store_options(store_options(store, args.threads), args.threads)
    if args.batch_sweep:
        return batch_sweep(me, [int(b) for b in args.batch_sweep.split(",")], sizes[0])
    if args.compressors:
        return compressors(me, sizes[0], args.compressors.split(","), args.threads)
    results = []
    for n in sizes:
        kinds = args.kinds or ("disk" if n > LARGE else "memory,disk,disk-prefetch,disk-again")
        with tempfile.TemporaryDirectory(prefix="atlas_scale_") as tmp:
            store = os.path.join(tmp, f"atlas_{n}.zarr")
            t = time.perf_counter()
            subprocess.run([*me, "--_generate", store, str(n)], check=True)
            print(f"generated {n:,} cells in {time.perf_counter() - t:.0f} s", flush=True)
            for kind in kinds.split(","):
                mode, prefetch = KINDS[kind]
                row = {"row": f"{kind}-{label(n)}", **_train_subprocess(me, store, mode, prefetch)}
                results.append(row)
                print(json.dumps(results[-1]), flush=True)
                stem = "atlas_scale_quick" if args.quick else "atlas_scale"  # after every row: a timeout keeps them
                title = "Atlas scale" + (" (quick)" if args.quick else "")
                write_results(stem, title, results, args.threads, True, MAIN_TEXT)


if __name__ == "__main__":
    main()
