"""age v1 passphrase (scrypt) encryption as a stream, for exports of any size.

pyrage streams only for public-key recipients; its passphrase API takes and returns whole byte
strings, which would put a many-gigabyte export in memory. This module writes and reads the same
format (age-encryption.org/v1 with one scrypt stanza, STREAM payload in 64 KiB chunks) so `age -d`
opens the file by hand, with the primitives of pycryptodome.
"""

from __future__ import annotations

import base64
import io
import os
from typing import IO

from Crypto.Cipher import ChaCha20_Poly1305
from Crypto.Hash import HMAC, SHA256
from Crypto.Protocol.KDF import HKDF, scrypt

from safehold.secrets import Secret

INTRO = b"age-encryption.org/v1"
CHUNK = 64 * 1024
TAG = 16
LOG_N = 18  # age's own default work factor
MAX_LOG_N = 22


class AgeError(Exception):
    """Not an age file, wrong passphrase, or damaged data."""


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)


def _wrap_key(passphrase: Secret, salt: bytes, log_n: int) -> bytes:
    return scrypt(passphrase.reveal().encode(), b"age-encryption.org/v1/scrypt" + salt, 32, N=1 << log_n, r=8,
                  p=1)  # type: ignore[return-value]


def _hkdf(file_key: bytes, salt: bytes, label: bytes) -> bytes:
    return HKDF(file_key, 32, salt, SHA256, context=label)  # type: ignore[return-value]


def _mac(file_key: bytes, header: bytes) -> bytes:
    return HMAC.new(_hkdf(file_key, b"", b"header"), header, SHA256).digest()


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class Encryptor(io.RawIOBase):
    """A writable stream: bytes written are encrypted to `sink`; `close()` writes the last chunk."""

    def __init__(self, sink: IO[bytes], passphrase: Secret, log_n: int = LOG_N) -> None:
        super().__init__()
        self.sink = sink
        file_key, salt = os.urandom(16), os.urandom(16)
        cipher = ChaCha20_Poly1305.new(key=_wrap_key(passphrase, salt, log_n), nonce=bytes(12))
        body = b"".join(cipher.encrypt_and_digest(file_key))
        header = INTRO + b"\n-> scrypt " + _b64(salt) + b" " + str(log_n).encode() + b"\n" + _b64(body) + b"\n---"
        nonce = os.urandom(16)
        sink.write(header + b" " + _b64(_mac(file_key, header)) + b"\n" + nonce)
        self.key = _hkdf(file_key, nonce, b"payload")
        self.buffer = bytearray()
        self.counter = 0

    def writable(self) -> bool:
        return True

    def _emit(self, chunk: bytes, last: bool) -> None:
        cipher = ChaCha20_Poly1305.new(key=self.key, nonce=_nonce(self.counter, last))
        self.sink.write(b"".join(cipher.encrypt_and_digest(chunk)))
        self.counter += 1

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.buffer += data
        # Keep at least one byte back: only the final chunk may be short, and it must not be empty.
        while len(self.buffer) > CHUNK:
            self._emit(bytes(self.buffer[:CHUNK]), False)
            del self.buffer[:CHUNK]
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._emit(bytes(self.buffer), True)
            self.buffer.clear()
            self.sink.flush()
        super().close()


def is_passphrase_file(source: IO[bytes]) -> bool:
    """True when a buffered age file's first stanza is scrypt (peeks, consumes nothing)."""
    head = source.peek(len(INTRO) + 12)[: len(INTRO) + 12]  # type: ignore[attr-defined]
    return head.startswith(INTRO + b"\n-> scrypt ")


class Decryptor(io.RawIOBase):
    """A readable stream of the plaintext of a passphrase-encrypted age file."""

    def __init__(self, source: IO[bytes], passphrase: Secret) -> None:
        super().__init__()
        self.source = source
        lines = [source.readline(), source.readline(), source.readline()]
        if lines[0].rstrip(b"\n") != INTRO or not lines[1].startswith(b"-> scrypt "):
            raise AgeError("not an age passphrase file")
        args = lines[1].split()
        body = lines[2].rstrip(b"\n")
        while len(lines[-1].rstrip(b"\n")) == 64:  # a stanza body ends with a line shorter than 64 columns
            lines.append(source.readline())
            body += lines[-1].rstrip(b"\n")
        footer = source.readline()
        if len(args) != 4 or not footer.startswith(b"--- "):
            raise AgeError("an age file with more than one stanza or a damaged header")
        salt, log_n = _unb64(args[2]), int(args[3])
        if log_n > MAX_LOG_N:
            raise AgeError(f"scrypt work factor 2^{log_n} is too large")
        cipher = ChaCha20_Poly1305.new(key=_wrap_key(passphrase, salt, log_n), nonce=bytes(12))
        try:
            file_key = cipher.decrypt_and_verify(_unb64(body)[:-TAG], _unb64(body)[-TAG:])
        except ValueError:
            raise AgeError("wrong passphrase") from None
        header = b"".join(lines) + b"---"
        if _mac(file_key, header) != _unb64(footer[4:].rstrip(b"\n")):
            raise AgeError("the header was altered")
        nonce = source.read(16)
        if len(nonce) != 16:
            raise AgeError("truncated")
        self.key = _hkdf(file_key, nonce, b"payload")
        self.counter = 0
        self.pending = source.read(CHUNK + TAG)
        self.plain = b""
        self.done = False

    def readable(self) -> bool:
        return True

    def _next(self) -> None:
        following = self.source.read(CHUNK + TAG)
        last = not following
        if len(self.pending) < TAG or (not last and len(self.pending) != CHUNK + TAG):
            raise AgeError("truncated")
        cipher = ChaCha20_Poly1305.new(key=self.key, nonce=_nonce(self.counter, last))
        try:
            self.plain = cipher.decrypt_and_verify(self.pending[:-TAG], self.pending[-TAG:])
        except ValueError:
            raise AgeError("damaged or truncated data (chunk authentication failed)") from None
        self.counter += 1
        self.pending = following
        self.done = last

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        out = bytearray()
        while size < 0 or len(out) < size:
            if not self.plain:
                if self.done:
                    break
                self._next()
            take = len(self.plain) if size < 0 else min(size - len(out), len(self.plain))
            out += self.plain[:take]
            self.plain = self.plain[take:]
        return bytes(out)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
