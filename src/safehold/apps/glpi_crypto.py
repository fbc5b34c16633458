"""GLPI's security key scheme (`src/GLPIKey.php`, glpi-project/glpi @0042059c): `glpicrypt.key` is 32 raw
bytes; `encrypt()` is libsodium's `crypto_aead_xchacha20poly1305_ietf` with a random 24-byte nonce that
is also the additional data, stored as `base64(nonce . ciphertext . tag)`. pycryptodome's
ChaCha20_Poly1305 with a 24-byte nonce is that same XChaCha20-Poly1305 construction."""

from __future__ import annotations

import base64
import binascii

KEY_BYTES = 32  # SODIUM_CRYPTO_AEAD_XCHACHA20POLY1305_IETF_KEYBYTES
NONCE_BYTES = 24  # SODIUM_CRYPTO_AEAD_XCHACHA20POLY1305_IETF_NPUBBYTES
TAG_BYTES = 16


def decrypt(stored: str, key: bytes) -> bytes | None:
    """The plaintext of a value GLPIKey::encrypt() wrote, or None when this key does not open it."""
    try:
        raw = base64.b64decode(stored, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(key) != KEY_BYTES or len(raw) < NONCE_BYTES + TAG_BYTES:
        return None
    nonce, body, tag = raw[:NONCE_BYTES], raw[NONCE_BYTES:-TAG_BYTES], raw[-TAG_BYTES:]
    # Imported here, not at the top: every command would pay for it at start (see safehold.cli).
    from Crypto.Cipher import ChaCha20_Poly1305

    cipher = ChaCha20_Poly1305.new(key=key, nonce=nonce)
    cipher.update(nonce)
    try:
        return cipher.decrypt_and_verify(body, tag)
    except ValueError:
        return None
