"""PNG codec: round trips and every filter type."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from agent.devices.imageio import ImageDecodeError, decode_png, encode_png, to_float


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filtered_png(image: np.ndarray, filters: list[int]) -> bytes:
    """An independent encoder applying the given filter per row (8-bit grayscale)."""
    h, w = image.shape
    raw = bytearray()
    prev = [0] * w
    for y in range(h):
        row = [int(v) for v in image[y]]
        kind = filters[y % len(filters)]
        out = []
        for x in range(w):
            left = row[x - 1] if x else 0
            up = prev[x]
            up_left = prev[x - 1] if x else 0
            pred = [0, left, up, (left + up) // 2, _paeth(left, up, up_left)][kind]
            out.append((row[x] - pred) % 256)
        raw += bytes([kind, *out])
        prev = row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(raw)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_round_trip(dtype: type) -> None:
    rng = np.random.default_rng(1)
    image: np.ndarray = rng.integers(0, np.iinfo(dtype).max, size=(17, 23), endpoint=True).astype(dtype)
    decoded = decode_png(encode_png(image))
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, image)


def test_all_filter_types() -> None:
    image = np.random.default_rng(2).integers(0, 256, size=(10, 9)).astype(np.uint8)
    np.testing.assert_array_equal(decode_png(_filtered_png(image, [0, 1, 2, 3, 4])), image)


def test_errors() -> None:
    with pytest.raises(ImageDecodeError):
        decode_png(b"GIF89a")
    with pytest.raises(ImageDecodeError):
        decode_png(encode_png(np.zeros((4, 4), np.uint8))[:40])
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4, 3), np.uint8))


def test_to_float_scales_to_unit_range() -> None:
    assert to_float(np.array([[0, 65535]], np.uint16)).tolist() == [[0.0, 1.0]]
    assert to_float(np.array([[255]], np.uint8)).dtype == np.float32
