"""ITFlow's credential-vault cryptography, re-implemented to escrow and check the master key.

From itflow-org/itflow `functions/security.php`:
- per-user wrap `salt(16 chars) || iv(16 chars) || base64(AES-128-CBC(master key))`, the AES key
  being `hash_pbkdf2('sha256', password, salt, 100000, 16)`: PHP's non-raw output, i.e. the
  first 16 lowercase hex characters of the derived key used as 16 ASCII key bytes;
- credentials `iv(16 chars) || base64(AES-128-CBC(plaintext, key = master key))`, PKCS#7.
A wrong password or key shows up as a padding error (or, rarely, as garbage that is not a
16-character key), never as a silent success.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from safehold.engines.mariadb import client
from safehold.errors import SafeholdError
from safehold.models import Database
from safehold.secrets import Secret

PBKDF2_ROUNDS = 100_000
MAX_USERS_TRIED = 25


def kek(password: str, salt: str) -> bytes:
    """The key-encryption key PHP derives: 16 hex characters of PBKDF2-SHA256 as ASCII bytes."""
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), PBKDF2_ROUNDS)[:8].hex().encode()


def _cbc_decrypt(key: bytes, iv: str, body: str) -> bytes | None:
    # Imported here, not at the top: every command would pay for it at start (see safehold.cli).
    from Crypto.Cipher import AES
    from Crypto.Util.Padding import unpad

    try:
        return unpad(AES.new(key, AES.MODE_CBC, iv.encode()).decrypt(base64.b64decode(body)), AES.block_size)
    except (ValueError, binascii.Error):
        return None


def unwrap(ciphertext: str, password: str) -> str | None:
    """The master key from one user's wrapped copy, or None when the password does not fit."""
    if len(ciphertext) <= 32:
        return None
    plain = _cbc_decrypt(kek(password, ciphertext[:16]), ciphertext[16:32], ciphertext[32:])
    if plain is None or len(plain) != 16 or not plain.isascii() or not plain.decode().isprintable():
        return None
    return plain.decode()


def decrypt_credential(ciphertext: str, master: str) -> str | None:
    """One credential field in clear, or None when the key does not fit."""
    plain = _cbc_decrypt(master.encode(), ciphertext[:16], ciphertext[16:]) if len(ciphertext) > 16 else None
    try:
        return plain.decode() if plain is not None else None
    except UnicodeDecodeError:
        return None


def unwrap_from_users(db: Database, password: Secret, user: str | None) -> tuple[Secret, str]:
    """Try the password on the wrapped key of `user` (email) or of each agent account, oldest first."""
    query = ("SELECT user_email, user_specific_encryption_ciphertext FROM users WHERE user_archived_at IS NULL"
             " AND user_specific_encryption_ciphertext IS NOT NULL AND user_specific_encryption_ciphertext <> ''")
    args: tuple[object, ...] = ()
    if user:
        query += " AND user_email = %s"
        args = (user,)
    with client.cursor(db.connection, db.name) as cur:
        cur.execute(query + f" ORDER BY user_id LIMIT {MAX_USERS_TRIED}", args)
        rows = [(r[0].decode() if isinstance(r[0], bytes) else r[0],
                 r[1].decode() if isinstance(r[1], bytes) else r[1]) for r in cur.fetchall()]
    if not rows:
        who = f"user {user}" if user else "any ITFlow account"
        raise SafeholdError(f"{who} has no wrapped master key in {db.name}.users",
                            "give the email of an ITFlow admin (agent) account with --user")
    for email, wrapped in rows:
        master = unwrap(wrapped, password.reveal())
        if master is not None:
            return Secret(master, "itflow master key"), email
    who = f"account {user}" if user else f"any of {len(rows)} ITFlow account(s)"
    raise SafeholdError(f"the password does not unlock the master key of {who}",
                        "give the ITFlow login password of an admin account (add --user EMAIL to pick it)")


def prove(db: Database, database: str, master: Secret) -> int | None:
    """Decrypt one stored credential password with the key; its id, or None when none is stored."""
    with client.cursor(db.connection, database) as cur:
        cur.execute("SELECT credential_id, credential_password FROM credentials WHERE credential_password IS NOT NULL"
                    " AND credential_password <> '' ORDER BY credential_id LIMIT 1")
        row = cur.fetchone()
    if row is None:
        return None
    ciphertext = row[1].decode() if isinstance(row[1], bytes) else row[1]
    if decrypt_credential(ciphertext, master.reveal()) is None:
        raise SafeholdError(f"the escrowed ITFlow master key does not decrypt credential #{row[0]} in {database}",
                            "the key belongs to another install: run `safehold key escrow` again")
    return int(row[0])
