"""A bundle fetched over http(s) into a temporary file beside the releases, size bounded."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx

MAX_BYTES = 2 << 30  # a bundle is about 60 MB; this only stops a server that never ends
REPORT_EVERY = 8 << 20  # a progress line per 8 MB
CHUNK = 1 << 20


class DownloadError(Exception):
    """The bundle could not be fetched whole; nothing was kept."""


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def check_url(url: str) -> str:
    """The URL itself, or DownloadError unless it is http(s) with a host (never shown with a
    password it may hold)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError("the bundle's URL must be http:// or https:// with a host")
    return url


def shown(url: str) -> str:
    """The URL without user:password@ and without its query (a token may ride in either)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@contextlib.contextmanager
def fetched(
    url: str,
    into: Path,
    progress: Callable[[str], None],
    *,
    max_bytes: int = MAX_BYTES,
    timeout_s: float = 30.0,
) -> Iterator[Path]:
    """Download url into a temporary file under `into` (the releases' file system, so no
    second copy lands on a small tmpfs), yield its path, remove it afterwards whatever happens."""
    check_url(url)
    fd, name = tempfile.mkstemp(prefix=".download-", suffix=".bundle", dir=into)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            _get(url, out, progress, max_bytes, timeout_s)
        yield path
    finally:
        path.unlink(missing_ok=True)


def _get(
    url: str, out: IO[bytes], progress: Callable[[str], None], max_bytes: int, timeout_s: float
) -> None:
    where = shown(url)
    progress(f"downloading {where}")
    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as resp:
            if resp.status_code != 200:
                raise DownloadError(f"{where}: HTTP {resp.status_code} {resp.reason_phrase}")
            expected = _length(resp)
            if expected is not None and expected > max_bytes:
                raise DownloadError(f"{where}: {expected} bytes is more than {max_bytes}")
            got, next_report = 0, REPORT_EVERY
            for chunk in resp.iter_bytes(CHUNK):
                got += len(chunk)
                if got > max_bytes:
                    raise DownloadError(f"{where}: more than {max_bytes} bytes")
                out.write(chunk)
                if got >= next_report:
                    total = f" of {expected >> 20}" if expected else ""
                    progress(f"downloaded {got >> 20}{total} MB")
                    next_report += REPORT_EVERY
    except httpx.TimeoutException:
        raise DownloadError(f"{where}: timed out after {timeout_s:g} s") from None
    except httpx.ConnectError as exc:
        raise DownloadError(f"{where}: unreachable ({exc})") from None
    except httpx.RemoteProtocolError as exc:  # the server closed before Content-Length
        raise DownloadError(f"{where}: the download was cut short ({exc})") from None
    except httpx.HTTPError as exc:
        raise DownloadError(f"{where}: {type(exc).__name__}: {exc}") from None
    if expected is not None and got != expected:
        raise DownloadError(f"{where}: the download was cut short ({got} of {expected} bytes)")
    out.flush()
    os.fsync(out.fileno())
    progress(f"downloaded {got} bytes")


def _length(resp: httpx.Response) -> int | None:
    value = resp.headers.get("content-length")
    if value is None or resp.headers.get("content-encoding"):
        return None
    try:
        return int(value)
    except ValueError:
        raise DownloadError("the server sent a Content-Length that is not a number") from None
