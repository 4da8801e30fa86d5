"""Grayscale PNG encoding and decoding for acquired images, with numpy only.

The simulator stores each acquisition as a 16-bit grayscale PNG (lossless, readable by every image tool);
:func:`decode_png` reads 8- and 16-bit grayscale PNGs with any filter type, which is what the autofocus and
ROI adapters need to turn a downloaded artifact back into an array.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt

__all__ = ["ImageDecodeError", "decode_png", "encode_png", "to_float"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageDecodeError(ValueError):
    """The bytes are not a PNG this module can read (grayscale, 8 or 16 bit, not interlaced)."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def encode_png(image: npt.NDArray[np.uint8] | npt.NDArray[np.uint16], *, compression: int = 1) -> bytes:
    """Encode a 2-D uint8 or uint16 array as a grayscale PNG (filter type 0; fast zlib level by default)."""
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a 2-D uint8/uint16 array, got {image.dtype} with shape {image.shape}")
    height, width = image.shape
    depth = 8 if image.dtype == np.uint8 else 16
    rows = (
        np.ascontiguousarray(image.astype(">u2") if depth == 16 else image).view(np.uint8).reshape(height, -1)
    )
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return (
        _SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, compression))
        + _chunk(b"IEND", b"")
    )


def _unfilter(data: bytes, height: int, stride: int, bpp: int) -> npt.NDArray[np.uint8]:
    if len(data) != height * (stride + 1):
        raise ImageDecodeError("PNG image data has the wrong length")
    rows = np.frombuffer(data, np.uint8).reshape(height, stride + 1)
    filters = rows[:, 0]
    out = rows[:, 1:].copy()
    if not filters.any():
        return out
    prev = np.zeros(stride, np.int32)
    for y in range(height):
        line = out[y].astype(np.int32)
        kind = int(filters[y])
        if kind == 1:  # Sub: each byte adds the byte bpp to its left, so cumulative sums per byte lane.
            for lane in range(bpp):
                line[lane::bpp] = np.cumsum(line[lane::bpp]) % 256
        elif kind == 2:
            line = (line + prev) % 256
        elif kind in (3, 4):
            for x in range(stride):
                left = int(line[x - bpp]) if x >= bpp else 0
                up = int(prev[x])
                if kind == 3:
                    line[x] = (line[x] + (left + up) // 2) % 256
                else:
                    up_left = int(prev[x - bpp]) if x >= bpp else 0
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                    line[x] = (line[x] + pred) % 256
        elif kind != 0:
            raise ImageDecodeError(f"unknown PNG filter type {kind}")
        out[y] = line.astype(np.uint8)
        prev = line
    return out


def decode_png(blob: bytes) -> npt.NDArray[np.uint8] | npt.NDArray[np.uint16]:
    """Decode a grayscale (8/16-bit, non-interlaced) PNG into a 2-D uint8/uint16 array."""
    if not blob.startswith(_SIGNATURE):
        raise ImageDecodeError("not a PNG file")
    pos = len(_SIGNATURE)
    header: tuple[int, ...] | None = None
    idat = bytearray()
    while pos + 8 <= len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        kind = blob[pos + 4 : pos + 8]
        data = blob[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat += data
        elif kind == b"IEND":
            break
    if header is None:
        raise ImageDecodeError("PNG has no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if colour != 0 or depth not in (8, 16) or interlace != 0:
        raise ImageDecodeError(
            f"unsupported PNG (colour type {colour}, depth {depth}, interlace {interlace})"
        )
    try:
        raw = zlib.decompress(bytes(idat))
    except zlib.error as exc:
        raise ImageDecodeError(f"corrupt PNG data: {exc}") from exc
    bpp = depth // 8
    pixels = _unfilter(raw, height, width * bpp, bpp)
    if depth == 8:
        return pixels.reshape(height, width)
    return pixels.view(">u2").reshape(height, width).astype(np.uint16)


def to_float(image: npt.NDArray[np.uint8] | npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """Scale an integer image to float32 in [0, 1] (by its dtype's full range)."""
    scale = 255.0 if image.dtype == np.uint8 else 65535.0
    return (image.astype(np.float32) / np.float32(scale)).astype(np.float32)
