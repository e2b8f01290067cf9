"""Secrets at rest: charger passwords salted and hashed, API tokens hashed.

Decision: passwords use scrypt (stdlib, memory-hard) with a per-secret salt, encoded as
``scrypt$n$r$p$salt$hash``. API tokens are 32 random bytes, so a plain SHA-256 is enough
and lets the API look a token up by its hash. Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_N, _R, _P = 2**14, 8, 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def new_api_token() -> str:
    return "co_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class VerifiedSecretCache:
    """Remembers recently verified (stored hash, password) pairs, keyed by an HMAC.

    A reconnect storm of thousands of chargers would otherwise pay one scrypt each.
    Only an HMAC under a per-process random key is kept, never the password; a changed
    stored hash changes the key, so a rotated password is never served from the cache.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._key = secrets.token_bytes(32)
        self._seen: dict[bytes, None] = {}
        self._max = max_entries

    def _mac(self, encoded: str, password: str) -> bytes:
        return hmac.new(self._key, f"{encoded}\x00{password}".encode(), "sha256").digest()

    def verify(self, password: str, encoded: str) -> bool:
        mac = self._mac(encoded, password)
        if mac in self._seen:
            return True
        if not verify_password(password, encoded):
            return False
        if len(self._seen) >= self._max:
            self._seen.pop(next(iter(self._seen)))
        self._seen[mac] = None
        return True
