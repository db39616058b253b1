"""``ss.io.write``: write a whole SpatialData to a new zarr store so that a failure leaves nothing half written."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write(sdata: Any, path: str | Path, *, overwrite: bool = False) -> None:
    """Write ``sdata`` to the zarr store ``path``, all or nothing.

    :meth:`spatialdata.SpatialData.write` writes element by element into ``path``: a failure half way (for example a
    class name with ``"/"`` used as a column or ``uns`` key, which zarr refuses) leaves a store that
    :func:`spatialdata.read_zarr` cannot open. Here every table is first checked for such names, the store is
    written next to ``path`` under a temporary name, and only a complete store is moved into place (replacing an
    existing one with ``overwrite=True``). The bookkeeping scvi-tools leaves in the table a model is bound to
    (``uns['_scvi_uuid']``, ``uns['_scvi_manager_uuid']``) stays in memory but is not written. Afterwards
    ``sdata.path`` is ``path``, so :func:`sslspatial.io.persist` updates single elements of it.

    Parameters
    ----------
    sdata
        The SpatialData to write.
    path
        The zarr store to create (a folder, e.g. ``"tissue.zarr"``).
    overwrite
        Replace an existing store at ``path``.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite=False``.
    ValueError
        A table holds a name with ``"/"`` (listed in the message); nothing is written.

    Examples
    --------
    >>> import sslspatial as ss
    >>> sdata = ss.datasets.synthetic_tissue(n_cells=200)  # doctest: +SKIP
    >>> ss.io.write(sdata, "tissue.zarr")  # doctest: +SKIP
    >>> ss.pp.build_graph(sdata, method="knn")  # doctest: +SKIP
    >>> ss.io.persist(sdata, "table")  # doctest: +SKIP
    """
    from .._devices import is_main_process
    from .._validate import check_storable

    if not is_main_process():  # the extra processes of distributed training write nothing
        return
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists already: pass overwrite=True, or write to another path.")
    for name, table in sdata.tables.items():
        check_storable(table, f"table {name!r}")
    tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    from .._warnings import quiet

    try:
        with quiet(), internal_fields_hidden(sdata.tables.values()):  # zarr's autosharding notice: nothing to act on
            sdata.write(tmp, overwrite=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        sdata.path = None
        raise
    backup = None
    if target.exists():
        backup = target.with_name(f"{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(backup)
    tmp.rename(target)
    sdata.path = target
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


@contextmanager
def internal_fields_hidden(tables: Iterable[Any]) -> Iterator[None]:
    """Take the models' bookkeeping (``Key.INTERNAL_OBS`` / ``INTERNAL_UNS``) out of ``tables``, put it back after.

    A model bound to a table needs it in memory; a store a user reads should not hold it.

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> t = ad.AnnData(np.ones((2, 1)), uns={"_scvi_uuid": "x"})
    >>> t.obs["_sslspatial_indices"] = [0, 1]
    >>> with internal_fields_hidden([t]):
    ...     list(t.obs), list(t.uns)
    ([], [])
    >>> list(t.obs), list(t.uns)
    (['_sslspatial_indices'], ['_scvi_uuid'])
    """
    from .._constants import Key

    taken = []
    for table in tables:
        obs = {k: table.obs.pop(k) for k in Key.INTERNAL_OBS if k in table.obs}
        uns = {k: table.uns.pop(k) for k in Key.INTERNAL_UNS if k in table.uns}
        taken.append((table, obs, uns))
    try:
        yield
    finally:
        for table, obs, uns in taken:
            for key, column in obs.items():
                table.obs[key] = column
            table.uns.update(uns)
