"""Versioned encoding of stored state: one schema byte, then a MessagePack body.

>>> import msgspec
>>> class Point(msgspec.Struct, array_like=True):
...     x: int
...     y: int
>>> codec = VersionedCodec(Point, schema=3, what="point")
>>> blob = codec.encode(Point(1, 2))
>>> blob[0], codec.decode(blob)
(3, Point(x=1, y=2))
>>> codec.decode(b"\\x01...")
Traceback (most recent call last):
...
liveprofile.errors.StateVersionError: point has schema 01, this version reads 3: replay the ...
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, Literal, TypeVar

import msgspec
import zstandard

from liveprofile.errors import DamagedState, StateVersionError

T = TypeVar("T")


class VersionedCodec(Generic[T]):
    """Encodes values of one type with a schema byte, optionally compressed (zstd at ``level``,
    or zlib at level 1)."""

    def __init__(
        self,
        kind: type[T],
        *,
        schema: int,
        what: str,
        compress: Literal["zstd", "zlib"] | None = None,
        level: int = 1,
    ) -> None:
        self.schema = schema
        self.level = level
        self.what = what
        self.compress = compress
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(kind)

    def encode(self, value: T) -> bytes:
        body = self._encoder.encode(value)
        if self.compress == "zstd":
            body = pack(body, self.level)
        elif self.compress == "zlib":
            body = zlib.compress(body, 1)
        return bytes([self.schema]) + body

    def accepts(self, blob: bytes) -> bool:
        """Whether ``blob`` has this codec's schema."""
        return blob[:1] == bytes([self.schema])

    def decode(self, blob: bytes, key: str | None = None) -> T:
        """The value of ``blob``; :class:`DamagedState` naming ``key`` if the bytes are
        corrupted."""
        if not blob or blob[0] != self.schema:
            name = self.what if key is None else f"{self.what} {key!r}"
            raise StateVersionError(
                f"{name} has schema {blob[:1].hex() or 'none'}, this version reads "
                f"{self.schema}: replay the events into a new store"
            )
        with damaged(self.what, key):
            body = blob[1:]
            if self.compress:
                body = unpack(body)
            return self._decoder.decode(body)


_ADVICE = "restore the store from a backup, or replay the events into a new store"
#: what decoding corrupted bytes raises (msgspec, zlib, zstd, and the checks of loaders)
_DECODE_ERRORS = (
    msgspec.DecodeError,
    msgspec.ValidationError,
    zlib.error,
    zstandard.ZstdError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    OverflowError,
)


@contextmanager
def damaged(what: str, key: str | None = None) -> Iterator[None]:
    """Turn a decoding failure inside the block into :class:`DamagedState` naming the row.

    >>> with damaged("profile", "u1"):
    ...     msgspec.msgpack.decode(b"\\xc1")
    Traceback (most recent call last):
    ...
    liveprofile.errors.DamagedState: profile 'u1' is damaged (...): restore the store ...
    """
    try:
        yield
    except DamagedState as exc:  # from a codec inside, which knew no key
        if key is None:
            raise
        raise DamagedState(f"{what} {key!r}: {exc}") from None
    except _DECODE_ERRORS as exc:
        name = what if key is None else f"{what} {key!r}"
        detail = str(exc) or type(exc).__name__
        raise DamagedState(f"{name} is damaged ({detail}): {_ADVICE}") from None


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def pack(body: bytes, level: int = 1) -> bytes:
    """``body`` compressed with zstd at ``level`` (negative: faster, larger; see
    :func:`unpack`, which reads any level)."""
    return zstandard.ZstdCompressor(level=level).compress(body)


def unpack(blob: bytes) -> bytes:
    """What :func:`pack` packed; also reads the zlib streams of stores written before.

    >>> unpack(pack(b"abc")), unpack(zlib.compress(b"abc"))
    (b'abc', b'abc')
    """
    if blob[:4] == _ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().decompress(blob)
    return zlib.decompress(blob)
