"""The characters a Linux console font can draw: the Unicode map inside a PSF1/PSF2 file."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

PSF1_MAGIC = b"\x36\x04"
PSF2_MAGIC = b"\x72\xb5\x4a\x86"
PSF1_MODE512 = 0x01
PSF1_MODEHASTAB = 0x02
PSF2_HAS_UNICODE_TABLE = 0x01

# Where Debian's console-setup fonts live: the installed package, or the copy that
# scripts/setup unpacks into the venv from the same Debian package.
FONT_DIRS = (Path("/usr/share/consolefonts"), Path(".venv/share/consolefonts"))
# console-setup's defaults: CODESET Lat15 (most Latin locales) or Uni2, FONTFACE Fixed, 8x16.
DEFAULT_FONTS = ("Lat15-Fixed16.psf.gz", "Uni2-Fixed16.psf.gz")


def find_font(name: str) -> Path | None:
    for d in FONT_DIRS:
        if (d / name).is_file():
            return d / name
    return None


def unicode_map(path: Path) -> frozenset[str]:
    """Every single character the font maps to a glyph (sequences are left out)."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if data[:2] == PSF1_MAGIC:
        return _psf1(data)
    if data[:4] == PSF2_MAGIC:
        return _psf2(data)
    raise ValueError(f"{path} is not a PSF font")


def _psf1(data: bytes) -> frozenset[str]:
    mode, charsize = data[2], data[3]
    if not mode & PSF1_MODEHASTAB:
        raise ValueError("PSF1 font without a Unicode table")
    glyphs = 512 if mode & PSF1_MODE512 else 256
    table = data[4 + glyphs * charsize :]
    chars: set[str] = set()
    in_sequence = False
    for (code,) in struct.iter_unpack("<H", table[: len(table) // 2 * 2]):
        if code == 0xFFFF:  # end of this glyph's entries
            in_sequence = False
        elif code == 0xFFFE:  # what follows are multi-character sequences
            in_sequence = True
        elif not in_sequence:
            chars.add(chr(code))
    return frozenset(chars)


def _psf2(data: bytes) -> frozenset[str]:
    _magic, _version, headersize, flags, length, charsize = struct.unpack("<4sIIIII", data[:24])
    if not flags & PSF2_HAS_UNICODE_TABLE:
        raise ValueError("PSF2 font without a Unicode table")
    table = data[headersize + length * charsize :]
    chars: set[str] = set()
    for entry in table.split(b"\xff")[:length]:
        singles = entry.split(b"\xfe")[0]  # after 0xFE come sequences
        chars.update(singles.decode("utf-8", "replace"))
    chars.discard("\ufffd")
    return frozenset(chars)
