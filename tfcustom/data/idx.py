"""Read IDX files (the MNIST / Fashion-MNIST format) with NumPy.

The IDX format is a 4-byte magic number ``0x00 0x00 <dtype> <ndim>``, then
``ndim`` big-endian uint32 dimensions, then the data. Files may be gzipped.
Every malformed input raises [`tfcustom.errors.DataError`][tfcustom.errors.DataError] naming the
file and what is wrong with it.

Examples:
    >>> images = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    >>> images.shape
    (10000, 28, 28)
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from tfcustom.errors import data_error

# IDX type byte -> big-endian NumPy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: str) -> bytes:
    if not os.path.isfile(path):
        raise data_error("IDX file not found", path, "check the data directory or pass --data_dir")
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise data_error(
            f"IDX file {path} is corrupt or truncated ({type(e).__name__}: {e})",
            path,
            "re-download or reinstall the dataset (e.g. apt-get install --reinstall dataset-fashion-mnist)",
        ) from None


_TYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


def _type_name(code: int) -> str:
    return f"{_TYPE_NAMES[code]} (0x{code:02X})"


def read_idx(path: str, expected_ndim: int | None = None, expected_dtype=None, what: str = "IDX data") -> np.ndarray:
    """Parse one IDX file (optionally ``.gz``) into a NumPy array.

    Args:
      path: file path; ``.gz`` files are decompressed.
      expected_ndim: if given, the number of dimensions the file must have
        (3 for images, 1 for labels).
      expected_dtype: if given, the element type the header must declare
        (e.g. ``np.uint8``: MNIST and Fashion-MNIST images and labels are
        unsigned bytes, type 0x08); another type is refused, not converted.
      what: what the file should hold, for the error message.

    Returns:
      An array of the file's dtype (native byte order) and shape.

    Raises:
      DataError: the file is missing, corrupt, truncated, or not what
        ``expected_ndim`` / ``expected_dtype`` ask for.

    Examples:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte.gz")
        >>> write_idx(path, np.array([3, 1, 4], np.uint8))
        >>> read_idx(path, expected_ndim=1, expected_dtype=np.uint8)
        array([3, 1, 4], dtype=uint8)
        >>> read_idx(path, expected_ndim=3, what="images")
        Traceback (most recent call last):
        ...
        tfcustom.errors.DataError: IDX file ...labels-idx1-ubyte.gz has 1 dimensions, expected 3 (received: 1). ...
    """
    raw = _read_bytes(path)
    fix = "re-download or reinstall the dataset files"
    if len(raw) < 4:
        raise data_error(f"IDX file {path} is too short to hold a header", len(raw), fix)
    zero0, zero1, type_code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES:
        raise data_error(f"IDX file {path} has a bad magic number", raw[:4].hex(), fix)
    if ndim == 0 or (expected_ndim is not None and ndim != expected_ndim):
        raise data_error(
            f"IDX file {path} has {ndim} dimensions, expected {expected_ndim}", ndim, fix
        )
    if expected_dtype is not None and _IDX_DTYPES[type_code].newbyteorder("=") != np.dtype(expected_dtype):
        code = next(c for c, d in _IDX_DTYPES.items() if d.newbyteorder("=") == np.dtype(expected_dtype))
        raise data_error(
            f"IDX file {path} holds {_type_name(type_code)} elements, but {what} must be {_type_name(code)}",
            _type_name(type_code), "the file is not from this dataset or was written with the wrong type; reinstall it "
            "or rewrite it with tfcustom.data.write_idx(path, array.astype(np.uint8))")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise data_error(f"IDX file {path} is truncated inside its header", len(raw), fix)
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(dims)) * dtype.itemsize
    body = len(raw) - header
    if body != expected:
        raise data_error(
            f"IDX file {path} is truncated or has trailing bytes: header says {dims} "
            f"({expected} bytes of data) but the file holds {body}",
            body,
            fix,
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped if ``path`` ends in ``.gz``).

    Used to make small test fixtures and to export data in the MNIST format.

    Args:
      path: the file to write (replaced if it exists).
      array: an array of ``uint8``, ``int8``, ``int16``, ``int32``,
        ``float32`` or ``float64`` elements, at least one dimension; other
        dtypes raise [`DataError`][tfcustom.DataError].

    Examples:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "eye-idx2")
        >>> write_idx(path, np.eye(2, dtype=np.float32))
        >>> open(path, "rb").read(4).hex()  # magic: 0, 0, type 0x0D (float32), 2 dimensions
        '00000d02'
        >>> read_idx(path)
        array([[1., 0.],
               [0., 1.]], dtype=float32)
    """
    array = np.asarray(array)
    code = next((c for c, d in _IDX_DTYPES.items() if d.newbyteorder("=") == array.dtype.newbyteorder("=")), None)
    if code is None:
        raise data_error("dtype cannot be written as IDX", str(array.dtype), "cast to uint8, int8, int16, int32, float32 or float64")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(_IDX_DTYPES[code]).tobytes()
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(payload)
