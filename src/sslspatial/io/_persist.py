"""``ss.io.persist``: write elements of a SpatialData to its zarr store without ever losing the old version."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = ["persist"]


def persist(sdata: SpatialData, element_names: str | list[str]) -> None:
    """Write elements of an in-memory SpatialData to its zarr store without ever losing the previous version.

    A new element is simply written. An element that already exists on disk is first written in full under a
    temporary name; only then is the old directory moved aside, the new one moved into place (two renames), and the
    old one deleted. If writing fails at any point, the store still reads back with the old element intact (a new
    element that fails half way is removed). Tables are checked first for names that zarr cannot store (a ``"/"`` in
    a column or ``uns`` key), so such a table is refused before anything is written. The bookkeeping a model leaves
    in its table (``uns['_scvi_uuid']``) is not written. Under distributed training
    only the main process writes.

    Parameters
    ----------
    sdata
        A SpatialData backed by a zarr store (``sdata.path`` is set, e.g. after ``sdata.write`` or ``read_zarr``).
    element_names
        Element(s) to write.

    Examples
    --------
    >>> sdata.write("tissue.zarr")  # doctest: +SKIP
    >>> ss.pp.build_graph(sdata, method="knn")  # doctest: +SKIP
    >>> ss.io.persist(sdata, "table")  # doctest: +SKIP
    """
    names = [element_names] if isinstance(element_names, str) else list(element_names)
    if sdata.path is None:
        raise ValueError("This SpatialData is not backed by a zarr store: call `sdata.write(path)` first.")
    from .._devices import is_main_process
    from .._validate import check_storable

    if not is_main_process():  # the extra processes of distributed training write nothing
        return
    for name in names:  # every table checked before anything is written
        if name in sdata.tables:
            check_storable(sdata.tables[name], f"table {name!r}")
    from .._warnings import quiet
    from ._write import internal_fields_hidden

    tables = [sdata.tables[name] for name in names if name in sdata.tables]
    with quiet(), internal_fields_hidden(tables):  # zarr's autosharding notice: nothing a user can act on
        for name in names:
            _persist_one(sdata, name)


def _element_dir(sdata: SpatialData, name: str) -> tuple[str, Path]:
    for element_type, element_name, _ in sdata.gen_elements():
        if element_name == name:
            return element_type, Path(sdata.path) / element_type / name
    raise KeyError(f"Element {name!r} is not in the SpatialData.")


def _persist_one(sdata: SpatialData, name: str) -> None:
    element_type, target = _element_dir(sdata, name)
    if not target.exists():
        try:
            sdata.write_element(name)
        except BaseException:  # a half-written new element would make the store unreadable
            shutil.rmtree(target, ignore_errors=True)
            if sdata.has_consolidated_metadata():  # consolidated from what is on disk, without the element
                sdata.write_consolidated_metadata()
            raise
        return
    tmp_name = f"{name}.tmp-{uuid.uuid4().hex[:8]}"
    element = sdata[name]
    getattr(sdata, element_type)[tmp_name] = element
    try:
        sdata.write_element(tmp_name)
    except BaseException:
        _forget(sdata, element_type, tmp_name)
        shutil.rmtree(target.parent / tmp_name, ignore_errors=True)
        raise
    _forget(sdata, element_type, tmp_name)
    backup = target.parent / f"{name}.old-{uuid.uuid4().hex[:8]}"
    target.rename(backup)
    (target.parent / tmp_name).rename(target)
    shutil.rmtree(backup, ignore_errors=True)
    if sdata.has_consolidated_metadata():
        sdata.write_consolidated_metadata()


def _forget(sdata: SpatialData, element_type: str, name: str) -> None:
    container = getattr(sdata, element_type)
    if name in container:
        del container[name]
