"""ed25519 release keys: the operator's pair (PEM files) and the box's trusted public keys."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# Where an image puts the public keys it trusts; `update.keys_dir` moves it.
KEYS_DIR = Path("/usr/share/agentbox/release-keys")


class KeyFileError(Exception):
    """A key file that cannot be used; one line naming the file (never its contents)."""


def generate(private_path: Path) -> Path:
    """A new pair: PRIVATE (0600, PKCS#8 PEM) and PRIVATE.pub (PEM); the public file's path."""
    public_path = private_path.with_name(private_path.name + ".pub")
    for p in (private_path, public_path):
        if p.exists():
            raise KeyFileError(f"{p} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public_path.write_bytes(public_pem(key.public_key()))
    return public_path


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the signing key: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise KeyFileError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an ed25519 key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the public key: {exc.strerror}") from None
    except ValueError:
        raise KeyFileError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an ed25519 public key")
    return key


def trusted(keys_dir: Path) -> list[tuple[str, Ed25519PublicKey]]:
    """(file name, key) of every *.pub in keys_dir; an unreadable one is an error, not skipped."""
    try:
        files = sorted(keys_dir.glob("*.pub"))
    except OSError as exc:
        raise KeyFileError(f"{keys_dir}: cannot list release keys: {exc.strerror}") from None
    return [(f.name, load_public(f)) for f in files]


def verify(signature: bytes, data: bytes, keys: list[tuple[str, Ed25519PublicKey]]) -> str | None:
    """The name of the trusted key that made signature over data, else None."""
    for name, key in keys:
        try:
            key.verify(signature, data)
        except InvalidSignature:
            continue
        return name
    return None
