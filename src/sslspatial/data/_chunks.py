"""Stored chunks of a 1-D zarr array read straight from their files, without zarr's per-call machinery.

Reading one stored chunk through zarr (``array[a:b]``) costs about 1.3 ms for a 950 kB chunk of lz4-compressed
float32 counts, of which the decompression itself is about 0.3 ms: the rest is zarr's asynchronous indexing and codec
pipeline, paid on every call. :class:`~sslspatial.data.TileReader` reads several chunks per minibatch, so it reads
them with :func:`direct_chunk_reader` where the layout allows: the array lies in a local directory store, its chunks
are compressed by one codec that numcodecs decodes (blosc, zstd, gzip or none), and its values have the machine's
byte order. Every other layout (remote or in-memory stores, sharding, filters) is read through zarr as before. An
uncompressed chunk is not read whole: :meth:`ChunkFiles.take` reads only the byte ranges of the requested values.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ChunkFiles", "direct_chunk_reader"]

#: Requested values of an uncompressed chunk closer than this (in values) are read in one range.
RAW_GAP = 4096


class ChunkFiles:
    """The stored chunks of a 1-D zarr array in a local directory store, read from their files (picklable).

    Made by :func:`direct_chunk_reader`, which checks that the layout allows it.

    Parameters
    ----------
    root
        Directory of the array.
    metadata
        The array's zarr metadata (chunk keys, fill value).
    size, length
        Values per chunk and in the array.
    dtype
        The values' dtype (native byte order).
    decode
        Decompression of a chunk's bytes (a numcodecs codec's ``decode``), or ``None`` for uncompressed chunks.
    """

    def __init__(self, root: Path, metadata: Any, size: int, length: int, dtype: np.dtype, decode: Any):
        self.root, self.metadata, self.size, self.length = root, metadata, size, length
        self.dtype, self.decode = dtype, decode

    @property
    def raw(self) -> bool:
        """Whether the chunks are stored uncompressed (any range of values can be read alone)."""
        return self.decode is None

    def _path(self, i: int) -> Path:
        return self.root / self.metadata.encode_chunk_key((i,))

    def __call__(self, i: int) -> np.ndarray:
        """Chunk ``i``, decompressed, cut at the array's end (zarr stores the last chunk padded to full size)."""
        n = min(self.size, self.length - i * self.size)
        try:
            raw = self._path(i).read_bytes()
        except FileNotFoundError:  # zarr writes no file for a chunk holding only the fill value
            return np.full(n, self.metadata.fill_value, dtype=self.dtype)
        values = np.frombuffer(raw if self.decode is None else self.decode(raw), dtype=self.dtype)
        if values.size < n:
            raise ValueError(
                f"Stored chunk {i} of {self.root} holds {values.size} values, expected {n}: it is damaged."
            )
        return values[:n]

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Values at the increasing array ``positions``, reading only the byte ranges that hold them (uncompressed).

        Positions in one chunk closer than :data:`RAW_GAP` share a range; each range is read into place (one seek and
        one read), each chunk's file opened once. So a minibatch's few halo rows in a chunk cost a few small reads, not
        the chunk.
        """
        if not self.raw:
            raise ValueError("take reads uncompressed chunks only; decompress a compressed chunk whole (reader(i)).")
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size == 0:
            return np.empty(0, dtype=self.dtype)
        chunk = positions // self.size
        breaks = np.flatnonzero((np.diff(chunk) != 0) | (np.diff(positions) > RAW_GAP)) + 1
        heads = np.r_[0, breaks]
        firsts, lasts = positions[heads], positions[np.r_[breaks - 1, positions.size - 1]]
        lengths = lasts - firsts + 1
        where = np.r_[0, np.cumsum(lengths)[:-1]]  # each range's place in the buffer
        buffer = np.empty(int(lengths.sum()), dtype=self.dtype)
        view, item = memoryview(buffer).cast("B"), self.dtype.itemsize
        opened, file = -1, None
        try:
            ranges = zip(chunk[heads].tolist(), firsts.tolist(), lengths.tolist(), where.tolist(), strict=True)
            for c, first, length, at in ranges:
                if c != opened:
                    if file is not None:
                        file.close()
                    opened, file = c, _open_or_none(self._path(c))
                if file is None:  # no file: the fill value
                    buffer[at : at + length] = self.metadata.fill_value
                    continue
                file.seek((first - c * self.size) * item)
                if file.readinto(view[at * item : (at + length) * item]) != length * item:
                    raise ValueError(f"Stored chunk {c} of {self.root} is shorter than expected: it is damaged.")
        finally:
            if file is not None:
                file.close()
        return buffer[positions - np.repeat(firsts - where, np.diff(np.r_[heads, positions.size]))]


def _open_or_none(path: Path):
    """``path`` opened for unbuffered binary reads, or ``None`` if it does not exist."""
    try:
        return open(path, "rb", buffering=0)  # closed by the caller
    except FileNotFoundError:
        return None


def direct_chunk_reader(array: Any) -> ChunkFiles | None:
    """The stored chunks of a 1-D zarr ``array`` read from their files (:class:`ChunkFiles`); ``None`` where only zarr can.

    ``reader(i)`` is chunk ``i`` decompressed, as a read-only array of the array's dtype, cut at the array's end; a
    chunk with no file (zarr does not write chunks holding only the fill value) is the fill value.

    Examples
    --------
    >>> import tempfile, zarr
    >>> array = zarr.create_array(tempfile.mkdtemp(), shape=(10,), chunks=(4,), dtype="f4", compressors=None)
    >>> array[:] = np.arange(10)
    >>> read = direct_chunk_reader(array)
    >>> read(1).tolist(), read(2).tolist(), read.take(np.array([4, 7, 9])).tolist()  # take: uncompressed chunks
    ([4.0, 5.0, 6.0, 7.0], [8.0, 9.0], [4.0, 7.0, 9.0])
    """
    from zarr.storage import LocalStore

    store = getattr(array, "store", None)
    if not isinstance(store, LocalStore) or len(array.shape) != 1:
        return None
    dtype = np.dtype(array.dtype)
    if dtype.itemsize > 1 and not dtype.isnative:
        return None
    decode = _decoder(array.metadata)
    if decode is False:
        return None
    root = Path(store.root) / array.path
    return ChunkFiles(root, array.metadata, int(array.chunks[0]), int(array.shape[0]), dtype, decode)


def _decoder(metadata: Any) -> Callable[[bytes], Any] | None | bool:
    """The decompression of a chunk's bytes: a function, ``None`` (stored raw) or ``False`` (leave it to zarr)."""
    if metadata.zarr_format == 2:
        if metadata.filters:
            return False
        compressor = metadata.compressor
        return None if compressor is None else getattr(compressor, "decode", False)
    from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec

    codecs = tuple(metadata.codecs)
    if not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
        return False
    if codecs[0].endian is not None and codecs[0].endian.value != sys.byteorder:
        return False
    if len(codecs) == 1:
        return None
    import numcodecs

    kinds = {BloscCodec: numcodecs.Blosc, ZstdCodec: numcodecs.Zstd, GzipCodec: numcodecs.GZip}
    kind = kinds.get(type(codecs[1]))
    return False if kind is None else kind().decode
