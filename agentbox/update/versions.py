"""Release versions ordered as PEP 440 orders them (packaging is not on a box: no dependency
for one comparison). Handles epoch, release, a/b/rc, post, dev and local segments in their
normal spellings (`1.2.0`, `1.2.0rc1`, `1.2.0.post1`, `1.2.0.dev3`, `1.2.0+box.1`)."""

from __future__ import annotations

import re
from typing import Any

_PEP440 = re.compile(
    r"^v?(?:(?P<epoch>[0-9]+)!)?(?P<release>[0-9]+(?:\.[0-9]+)*)"
    r"(?:[-_.]?(?P<pre_l>a|alpha|b|beta|c|rc|pre|preview)[-_.]?(?P<pre_n>[0-9]+)?)?"
    r"(?P<post>-(?P<post_n1>[0-9]+)|[-_.]?(?:post|rev|r)[-_.]?(?P<post_n2>[0-9]+)?)?"
    r"(?P<dev>[-_.]?dev[-_.]?(?P<dev_n>[0-9]+)?)?"
    r"(?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?$",
    re.IGNORECASE,
)
# Pre-release ranks; a dev release of a final sorts below all of them, the final above.
_PRE = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}
_DEV_ONLY, _FINAL = (-1, 0), (3, 0)
_NO_DEV = 1 << 62


class VersionError(ValueError):
    """A version that PEP 440 cannot order."""


def key(version: str) -> tuple[Any, ...]:
    """A sort key: key(a) < key(b) exactly when PEP 440 says a is older than b."""
    m = _PEP440.match(version.strip())
    if m is None:
        raise VersionError(f"{version!r} is not a PEP 440 version")
    release = tuple(int(x) for x in m["release"].split("."))
    while len(release) > 1 and release[-1] == 0:  # 1.0 == 1.0.0
        release = release[:-1]
    if m["pre_l"]:
        pre = (_PRE[m["pre_l"].lower()], int(m["pre_n"] or 0))
    elif m["dev"] and not m["post"]:
        pre = _DEV_ONLY  # 1.0.dev1 comes before 1.0a1
    else:
        pre = _FINAL  # a final release comes after its pre-releases
    post = int(m["post_n1"] or m["post_n2"] or 0) if m["post"] else -1
    dev = int(m["dev_n"] or 0) if m["dev"] else _NO_DEV
    parts = re.split(r"[-_.]", m["local"]) if m["local"] else []
    # Numeric local segments sort above alphanumeric ones.
    local = tuple((int(p), "") if p.isdigit() else (-1, p.lower()) for p in parts)
    return (int(m["epoch"] or 0), release, pre, post, dev, local)


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as a is older than, equal to or newer than b."""
    ka, kb = key(a), key(b)
    return (ka > kb) - (ka < kb)
