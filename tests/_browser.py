"""Rendering HTML in headless Chromium to a PNG, and reading the PNG's pixels back (PIL if installed, else zlib).

The flags keep Chromium off the network (no component updates, sync, QUIC or background requests),
so a render works on a machine with none. ``CHROMIUM`` (a path) overrides where it is looked for.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

__all__ = ["chromium", "pixels", "render_png"]

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium() -> str | None:
    """The Chromium executable (``$CHROMIUM``, else ``chromium`` or ``chromium-browser`` on PATH), or None."""
    named = os.environ.get("CHROMIUM")
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render_png(markup: str, png: Path, *, size: tuple[int, int] = (1000, 700), timeout: float = 60) -> Path:
    """``markup`` (a fragment or a whole page) rendered at ``size`` to ``png``; raises when Chromium writes nothing."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed")
    page = markup if markup.lstrip().lower().startswith("<!doctype") else (
        '<!doctype html><html><head><meta charset="utf-8"></head>'
        f'<body style="margin:12px;background:#ffffff">{markup}</body></html>'
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fw-chromium-") as tmp:
        source = Path(tmp) / "page.html"
        source.write_text(page, encoding="utf-8")
        png.unlink(missing_ok=True)
        done = subprocess.run(
            [
                exe,
                *_FLAGS,
                f"--user-data-dir={Path(tmp) / 'profile'}",
                f"--screenshot={png}",
                f"--window-size={size[0]},{size[1]}",
                source.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium exited {done.returncode} without a screenshot: {done.stderr[-1500:]}")
    return png


def pixels(png: Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """``(width, height, rgb pixels row by row)`` of an 8-bit RGB or RGBA PNG."""
    try:
        from PIL import Image
    except ImportError:
        return _decode_png(png.read_bytes())
    with Image.open(png) as image:
        rgb = image.convert("RGB")
        data = rgb.tobytes()
        return rgb.width, rgb.height, list(zip(data[0::3], data[1::3], data[2::3], strict=True))


def _decode_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """A plain PNG decoder: 8-bit truecolour (RGB or RGBA), not interlaced, which is what Chromium writes."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, width = 8, bytearray(), 0
    height = depth = colour = interlace = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour}, interlace {interlace}")
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(bytes(idat))
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        method = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if method == 1:
                line[x] = (line[x] + left) & 0xFF
            elif method == 2:
                line[x] = (line[x] + up) & 0xFF
            elif method == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif method == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                guess = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + guess) & 0xFF
        rows.append(line)
        previous = line
    out = [
        (row[x], row[x + 1], row[x + 2]) for row in rows for x in range(0, stride, channels)
    ]
    return width, height, out
