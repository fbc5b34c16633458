"""`restic init` by the real restic, then the new repository's key sealed again with cheap scrypt.

Called by tests/tools/restic (see there why). The key file keeps its master key, format and checks;
only the password hash gets weaker (scrypt N=1024), as in restic's own tests. Local repositories and
SFTP ones on 127.0.0.1 (their files are local too); S3 ones keep restic's key.
"""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

CHEAP = {"N": 1024, "r": 8, "p": 1}


def _keys(password: bytes, salt: bytes, params: dict) -> tuple[bytes, bytes, bytes]:
    derived = hashlib.scrypt(password, salt=salt, n=params["N"], r=params["r"], p=params["p"],
                             maxmem=1 << 30, dklen=64)
    return derived[:32], derived[32:48], derived[48:]  # AES-256 key, Poly1305-AES k and r


def _mac(k: bytes, r: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(k), modes.ECB()).encryptor()
    return Poly1305.generate_tag(r + encryptor.update(nonce) + encryptor.finalize(), ciphertext)


def _open(doc: dict, password: bytes) -> bytes | None:
    encryption, k, r = _keys(password, base64.b64decode(doc["salt"]), doc)
    data = base64.b64decode(doc["data"])
    nonce, ciphertext, tag = data[:16], data[16:-16], data[-16:]
    if _mac(k, r, nonce, ciphertext) != tag:
        return None
    decryptor = Cipher(algorithms.AES(encryption), modes.CTR(nonce)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def _seal(doc: dict, plain: bytes, password: bytes) -> dict:
    salt, nonce = os.urandom(64), os.urandom(16)
    encryption, k, r = _keys(password, salt, CHEAP)
    encryptor = Cipher(algorithms.AES(encryption), modes.CTR(nonce)).encryptor()
    ciphertext = encryptor.update(plain) + encryptor.finalize()
    data = nonce + ciphertext + _mac(k, r, nonce, ciphertext)
    return {**doc, **CHEAP, "salt": base64.b64encode(salt).decode(), "data": base64.b64encode(data).decode()}


def cheapen_keys(repository: Path, password_file: Path) -> None:
    """Seal each key file of a local repository again with CHEAP scrypt parameters."""
    raw = password_file.read_bytes()
    for key_file in (repository / "keys").iterdir():
        doc = json.loads(key_file.read_bytes())
        for password in (raw.strip(), raw.rstrip(b"\r\n"), raw):  # however this restic trims the file
            plain = _open(doc, password)
            if plain is not None:
                break
        else:
            sys.exit(f"tests/tools/cheap_init.py: cannot open {key_file} to make it cheaper")
        mode = key_file.stat().st_mode
        key_file.chmod(0o600)
        key_file.write_text(json.dumps(_seal(doc, plain, password)))
        key_file.chmod(mode)


def _repository(args: list[str]) -> str:
    for index, arg in enumerate(args):
        if arg in ("-r", "--repo") and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--repo="):
            return arg.split("=", 1)[1]
    return os.environ.get("RESTIC_REPOSITORY", "")


def _local_path(url: str) -> Path:
    """Where a repository's files are on this machine: a local path, or an SFTP URL to 127.0.0.1."""
    match = re.fullmatch(r"sftp://[^@/]+@(?:127\.0\.0\.1|localhost)(?::\d+)?/(/.*)", url)
    return Path(match.group(1)) if match else Path(url)


def main() -> None:
    args = sys.argv[1:]
    # close_fds=False: the password may be an inherited /dev/fd/N (safehold passes secrets as memfds)
    done = subprocess.run([os.environ["TESTS_REAL_RESTIC"], *args], close_fds=False)
    repository, password_file = _local_path(_repository(args)), os.environ.get("RESTIC_PASSWORD_FILE")
    if done.returncode == 0 and password_file and (repository / "keys").is_dir():
        cheapen_keys(repository, Path(password_file))
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
