"""Key store: one 0600 file per provider under <state_dir>/secrets (0700), written atomically."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from agentbox.settings import NAME_RE

ENV_BY_KIND = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
}
MAX_KEY_BYTES = 8192
BROKER_KEY = "mqtt"  # the entry holding the MQTT broker password (not a provider)


class KeyStoreError(Exception):
    """A key that cannot be stored or read; the message never contains the key."""


@dataclass(frozen=True)
class KeyInfo:
    name: str
    source: str  # "store", "credentials", "env:VAR" or "" when missing
    last4: str


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise KeyStoreError(f"invalid key name {name!r}: use lowercase letters, digits, '_' or '-'")


def clean_key(raw: str) -> str:
    """Strip what a paste or a pipe adds around a key; refuse what cannot be a key."""
    key = raw.strip()
    if not key:
        raise KeyStoreError("empty key: nothing was saved")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise KeyStoreError(f"key longer than {MAX_KEY_BYTES} bytes: nothing was saved")
    if any(c.isspace() or not c.isprintable() for c in key):
        raise KeyStoreError("key contains spaces or control characters: nothing was saved")
    return key


class KeyStore:
    """Keys kept as files; never logs, prints or raises with a key's value."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "secrets"

    def ensure_dir(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is masked by the umask and ignored for an existing directory.
        self.dir.chmod(0o700)
        owner = self._owner()
        if owner is not None:
            os.chown(self.dir, *owner)

    def _owner(self) -> tuple[int, int] | None:
        """The daemon's uid and gid when root writes into its state dir, so it can read them."""
        if os.geteuid() != 0:
            return None
        st = self.dir.parent.stat()
        return (st.st_uid, st.st_gid) if st.st_uid != 0 else None

    def path(self, name: str) -> Path:
        _check_name(name)
        return self.dir / name

    def set(self, name: str, raw: str) -> None:
        """Write the key atomically: a 0600 temp file from the start, fsync, rename, fsync dir."""
        key = clean_key(raw)
        target = self.path(name)
        self.ensure_dir()
        tmp = self.dir / f".{name}.tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            owner = self._owner()
            if owner is not None:
                os.fchown(fd, *owner)
            os.write(fd, key.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            tmp.replace(target)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def delete(self, name: str) -> bool:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return False
        return True

    def get(self, name: str) -> str | None:
        try:
            return self.path(name).read_text().strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyStoreError(f"cannot read key {name!r}: {exc.strerror}") from None

    def names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name for p in self.dir.iterdir() if NAME_RE.match(p.name))

    def loose_modes(self) -> list[str]:
        """Problems with file modes, for doctor: anything readable beyond the owner."""
        problems = []
        if self.dir.is_dir():
            mode = stat.S_IMODE(self.dir.stat().st_mode)
            if mode & 0o077:
                problems.append(f"{self.dir} is {mode:o}, expected 700")
            for p in self.dir.iterdir():
                fmode = stat.S_IMODE(p.lstat().st_mode)
                if fmode & 0o077:
                    problems.append(f"{p} is {fmode:o}, expected 600")
        return problems


def resolve(store: KeyStore, name: str, kind: str | None = None) -> tuple[str | None, str]:
    """The one place keys are looked up: store, then systemd credentials, then the usual env var."""
    value = store.get(name)
    if value:
        return value, "store"
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        with contextlib.suppress(OSError):
            value = (Path(cred_dir) / name).read_text().strip()
            if value:
                return value, "credentials"
    var = ENV_BY_KIND.get(kind or name)
    if var and os.environ.get(var, "").strip():
        return os.environ[var].strip(), f"env:{var}"
    return None, ""


def describe(store: KeyStore, name: str, kind: str | None = None) -> KeyInfo:
    value, source = resolve(store, name, kind)
    return KeyInfo(name=name, source=source, last4=value[-4:] if value and len(value) >= 12 else "")
