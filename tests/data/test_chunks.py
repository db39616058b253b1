"""Stored chunks read straight from their files equal what zarr reads, for every layout the direct reader accepts."""

import numpy as np
import pytest
import zarr

from sslspatial.data._chunks import direct_chunk_reader


def _codecs(zarr_format, name):
    import numcodecs
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if name == "none":
        return None
    if zarr_format == 2:
        return {
            "lz4": numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE),
            "zstd": numcodecs.Zstd(3),
            "gzip": numcodecs.GZip(5),
        }[name]
    return {
        "lz4": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        "zstd": ZstdCodec(level=3),
        "gzip": GzipCodec(level=5),
    }[name]


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("compressor", ["lz4", "zstd", "gzip", "none"])
@pytest.mark.parametrize("dtype", ["f4", "i8", "u1"])
def test_direct_chunks_equal_zarr_reads(tmp_path, zarr_format, compressor, dtype):
    rng = np.random.default_rng(0)
    values = rng.poisson(3.0, 1000).astype(dtype)
    values[300:400] = 0  # a chunk of fill values: zarr writes no file for it
    array = zarr.create_array(
        str(tmp_path / "a.zarr"),
        shape=(1000,),
        chunks=(100,),
        dtype=dtype,
        fill_value=0,
        zarr_format=zarr_format,
        compressors=_codecs(zarr_format, compressor),
    )
    array[:] = values
    assert not (tmp_path / "a.zarr" / array.metadata.encode_chunk_key((3,))).exists()
    read = direct_chunk_reader(array)
    assert read is not None
    chunks = [read(i) for i in range(10)]
    assert all(c.dtype == np.dtype(dtype) for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), values)
    ragged = zarr.create_array(  # the last chunk is cut at the array's end
        str(tmp_path / "b.zarr"),
        shape=(250,),
        chunks=(100,),
        dtype=dtype,
        zarr_format=zarr_format,
        compressors=_codecs(zarr_format, compressor),
    )
    ragged[:] = values[:250]
    read = direct_chunk_reader(ragged)
    np.testing.assert_array_equal(read(2), values[200:250])


def test_layouts_only_zarr_reads_are_left_to_zarr(tmp_path):
    in_memory = zarr.create_array(zarr.storage.MemoryStore(), shape=(10,), chunks=(5,), dtype="f4")
    assert direct_chunk_reader(in_memory) is None
    sharded = zarr.create_array(str(tmp_path / "s.zarr"), shape=(100,), chunks=(10,), shards=(50,), dtype="f4")
    assert direct_chunk_reader(sharded) is None
    filtered = zarr.create_array(
        str(tmp_path / "f.zarr"),
        shape=(100,),
        chunks=(10,),
        dtype="f4",
        zarr_format=2,
        filters=[__import__("numcodecs").Delta(dtype="f4")],
    )
    assert direct_chunk_reader(filtered) is None
    big_endian = zarr.create_array(str(tmp_path / "e.zarr"), shape=(10,), chunks=(5,), dtype=">f4", zarr_format=2)
    assert direct_chunk_reader(big_endian) is None


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("compressor", ["lz4", "none"])
def test_take_reads_the_requested_values_and_survives_pickling(tmp_path, zarr_format, compressor):
    """Whole chunks, and ``take`` (the byte ranges of uncompressed chunks) equal indexing the values: positions in one
    range, over chunk borders, in ranges split by long gaps, in a chunk without a file; the reader pickles (DataLoader
    workers)."""
    import pickle

    rng = np.random.default_rng(1)
    values = rng.poisson(3.0, 40_000).astype("f4")
    values[20_000:30_000] = 0
    array = zarr.create_array(
        str(tmp_path / "a.zarr"),
        shape=values.shape,
        chunks=(10_000,),
        dtype="f4",
        fill_value=0,
        zarr_format=zarr_format,
        compressors=_codecs(zarr_format, compressor),
    )
    array[:] = values
    read = pickle.loads(pickle.dumps(direct_chunk_reader(array)))
    assert read.raw == (compressor == "none")
    for chunk in range(4):
        np.testing.assert_array_equal(read(chunk), values[chunk * 10_000 : (chunk + 1) * 10_000])
    if compressor != "none":
        with pytest.raises(ValueError, match="uncompressed chunks only"):
            read.take(np.array([1]))
        return
    for positions in (
        np.array([5]),
        np.arange(100, 140),
        np.arange(9_990, 10_010),  # over a chunk border
        np.sort(rng.choice(40_000, 3_000, replace=False)),  # every chunk, gaps above and below RAW_GAP
        np.r_[0:3, 9_990:10_000, 25_000:25_010],  # two ranges far apart in one chunk; the chunk without a file
    ):
        np.testing.assert_array_equal(read.take(positions), values[positions])
