"""Transparent decompression of delivered files.

Sources compress what they deliver in a handful of ways; readers should not care. One codec per file,
chosen by the declared compression or else by the file suffix, and always streamed so that memory does
not grow with the file.
"""

from __future__ import annotations

import bz2
import gzip
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import BinaryIO, Literal, cast

import zstandard

from resources.files.config import Compression

Codec = Literal["none", "gzip", "bz2", "zip", "zstd"]

_CODEC_BY_SUFFIX: dict[str, Codec] = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".bz2": "bz2",
    ".zip": "zip",
    ".zst": "zstd",
    ".zstd": "zstd",
}

DAMAGED_DATA_ERRORS: tuple[type[Exception], ...] = (
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    zipfile.BadZipFile,
    zstandard.ZstdError,
)
"""What the codecs raise on truncated or corrupt data (bz2 raises a plain OSError, not listed: too broad;
see `is_damaged_bz2`)."""


def is_damaged_bz2(exc: OSError) -> bool:
    """Whether an OSError is bz2's on corrupt data (`Invalid data stream`, no errno), not an I/O error."""
    return exc.errno is None and exc.args == ("Invalid data stream",)


def damaged_reason(codec: Codec, exc: Exception) -> str:
    """What to say, after the file's name, when `codec` raised one of `DAMAGED_DATA_ERRORS` reading it."""
    return (
        f"cannot be decompressed as {codec} ({type(exc).__name__}: {exc}): the file is truncated or damaged. "
        f"Deliver it again."
    )


class ArchiveContentError(ValueError):
    """A zip archive that does not hold exactly one file: which member to read would be a guess."""


def codec_for(path: str, compression: Compression) -> Codec:
    """The codec to read `path` with: the declared one, or the one its suffix names (none if unknown)."""
    if compression != "infer":
        return compression
    return _CODEC_BY_SUFFIX.get(PurePosixPath(path).suffix.lower(), "none")


@contextmanager
def decompressed(raw: BinaryIO, codec: Codec, name: str) -> Iterator[BinaryIO]:
    """A binary stream of the decompressed content of `raw` (which stays open: the caller owns it).

    `name` only serves error messages. A zip archive must hold exactly one file (directories aside).
    """
    if codec == "none":
        yield raw
    elif codec == "gzip":
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            yield cast(BinaryIO, stream)
    elif codec == "bz2":
        with bz2.BZ2File(raw, mode="rb") as stream:
            yield cast(BinaryIO, stream)
    elif codec == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
        with reader:
            yield cast(BinaryIO, reader)
    else:
        with zipfile.ZipFile(raw) as archive, archive.open(_single_member(archive, name)) as stream:
            yield cast(BinaryIO, stream)


def _single_member(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    members = [member for member in archive.infolist() if not member.is_dir()]
    if len(members) != 1:
        listed = ", ".join(member.filename for member in members[:10]) or "nothing"
        raise ArchiveContentError(
            f"{name} is a zip archive holding {len(members)} files ({listed}); a delivered archive must hold "
            f"exactly one file. Re-deliver one file per archive, or deliver the files uncompressed."
        )
    return members[0]
