"""The installation's export signing key (Ed25519) and the keys whose exports it trusts.

Exports travel (mailed to clients, copied between hosts, kept on USB disks), and their checksums prove
a file intact, not honest: anyone can edit one and write new checksums, and an `.age` export is
encrypted to a public key any export's config prints. So every export carries an Ed25519 signature
over its SHA256SUMS, made with a key created on first use in the state folder (0600), and a restore
from a file checks it against the keys this installation trusts — its own and those added with
`safehold trust add` — before it reads anything the file says.

Public keys are written as one line, `safehold-ed25519 <base64 of the 32 key bytes>`, and named by
their fingerprint, `SHA256:<base64 of the key's SHA-256>` (the form ssh uses), short enough to read
out over the phone and printed in the recovery kit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from safehold.errors import ConfigError, SafeholdError
from safehold.secrets import write_private

PREFIX = "safehold-ed25519"
FOLDER = "signing"
MAX_SIGNATURE_BYTES = 4096  # the signature member is about 300 bytes; more is not one safehold wrote


class SignatureRefused(SafeholdError):
    """An export whose signature is missing, damaged, wrong or made by a key this installation does not trust."""


@dataclass(frozen=True)
class PublicKey:
    """A signer's public key, as a line and by fingerprint."""

    raw: bytes

    @property
    def line(self) -> str:
        return f"{PREFIX} {base64.b64encode(self.raw).decode()}"

    @property
    def fingerprint(self) -> str:
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.raw).digest()).decode().rstrip("=")

    def verifier(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.raw)


def parse_public(text: str) -> PublicKey:
    """A public key from its one-line form (a file holding it is read by the caller)."""
    parts = text.strip().split()
    if len(parts) != 2 or parts[0] != PREFIX:
        raise ConfigError(f"not a safehold signing key: {text.strip()[:60]!r}",
                          f"give the line `{PREFIX} ...` that `safehold trust list` or the recovery kit shows, "
                          "or a file holding it")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise ConfigError("the signing key is damaged (not 32 bytes of base64)", "copy the whole line again")
    return PublicKey(raw)


def _folder(state_dir: Path) -> Path:
    return state_dir / FOLDER


def own_key(state_dir: Path) -> Ed25519PrivateKey:
    """The installation's signing key, created (0600) on first use."""
    path = _folder(state_dir) / "key.pem"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} is not an Ed25519 key", "move it away; a new key is made on the next export")
        return key
    key = Ed25519PrivateKey.generate()
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return key


def own_public(state_dir: Path) -> PublicKey:
    """The public half of the installation's signing key (created on first use)."""
    return PublicKey(own_key(state_dir).public_key().public_bytes(serialization.Encoding.Raw,
                                                                  serialization.PublicFormat.Raw))


def _trusted_file(state_dir: Path) -> Path:
    return _folder(state_dir) / "trusted.json"


def added_keys(state_dir: Path) -> dict[str, str]:
    """The keys added with `safehold trust add`: fingerprint → key line."""
    path = _trusted_file(state_dir)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {parse_public(line).fingerprint: line for line in data["keys"]}
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc})", "fix or remove it and add the keys again") from None


def trusted(state_dir: Path) -> dict[str, PublicKey]:
    """Every key whose exports this installation trusts, by fingerprint: its own and the added ones."""
    keys = {fp: parse_public(line) for fp, line in added_keys(state_dir).items()}
    own = own_public(state_dir)
    return {own.fingerprint: own, **keys}


def trust_add(state_dir: Path, key: PublicKey) -> None:
    """Trust exports signed by `key`."""
    keys = added_keys(state_dir)
    keys[key.fingerprint] = key.line
    write_private(_trusted_file(state_dir), json.dumps({"keys": sorted(keys.values())}, indent=2))


def trust_remove(state_dir: Path, fingerprint: str) -> None:
    """Stop trusting the added key with this fingerprint."""
    keys = added_keys(state_dir)
    if fingerprint == own_public(state_dir).fingerprint:
        raise ConfigError(f"{fingerprint} is this installation's own key", "its own exports are always trusted")
    if fingerprint not in keys:
        raise ConfigError(f"no trusted key {fingerprint}", "see `safehold trust list`")
    del keys[fingerprint]
    write_private(_trusted_file(state_dir), json.dumps({"keys": sorted(keys.values())}, indent=2))


def sign(state_dir: Path, message: bytes) -> bytes:
    """The signature member of an export: the signer's public key and its signature over `message`."""
    key = own_key(state_dir)
    public = own_public(state_dir)
    return json.dumps({"format": 1, "algorithm": "ed25519", "key": public.line, "fingerprint": public.fingerprint,
                       "signature": base64.b64encode(key.sign(message)).decode()}, indent=2).encode() + b"\n"


def signer(blob: bytes) -> tuple[PublicKey, bytes]:
    """The public key and signature a signature member holds; refused when it is not one safehold wrote."""
    try:
        if len(blob) > MAX_SIGNATURE_BYTES:
            raise ValueError("too large")
        data = json.loads(blob)
        key = parse_public(data["key"])
        signature = base64.b64decode(data["signature"], validate=True)
        if data["algorithm"] != "ed25519" or len(signature) != 64:
            raise ValueError("not an Ed25519 signature")
    except (ValueError, KeyError, TypeError, binascii.Error, ConfigError):
        raise SignatureRefused("the export's signature is damaged or truncated",
                               "use an intact copy; nothing was restored") from None
    return key, signature


def verify(state_dir: Path, message: bytes, blob: bytes | None, trust_signer: str | None = None,
           allow_unsigned: bool = False) -> str | None:
    """Check an export's signature over `message`; returns the signer's fingerprint (None when unsigned
    and `allow_unsigned`).

    Trusted: a key of `trusted()`, or the one whose fingerprint `trust_signer` gives (checked by hand
    against the recovery kit of the installation that made the export). `allow_unsigned` accepts an
    export without a valid signature at all (one made before exports were signed).
    """
    hint_flags = "--allow-unsigned restores it anyway (the config still decides where it goes)"
    if blob is None:
        if allow_unsigned:
            return None
        raise SignatureRefused("the export is not signed: it cannot be told from one anybody edited",
                               f"restore an export safehold signed, or {hint_flags}; nothing was restored")
    try:
        key, signature = signer(blob)
        key.verifier().verify(signature, message)
    except (SignatureRefused, InvalidSignature) as exc:
        if allow_unsigned:
            return None
        if isinstance(exc, SignatureRefused):
            raise
        raise SignatureRefused(f"the export's signature does not match its content (signer {key.fingerprint}): it "
                               "was changed after it was signed",
                               f"use an intact copy, or {hint_flags}; nothing was restored") from None
    if key.fingerprint in trusted(state_dir) or key.fingerprint == trust_signer:
        return key.fingerprint
    raise SignatureRefused(f"the export is signed by {key.fingerprint}, a key this installation does not trust",
                           "if the recovery kit of the installation that made it shows that fingerprint, run "
                           f"`safehold trust add '{key.line}'` or restore with --trust-signer {key.fingerprint}; "
                           "nothing was restored")
