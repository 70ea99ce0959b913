"""The shape of an API key: `dk_live_` + 8 hex (the public part of the prefix) + 43 url-safe characters.

256 bits of randomness after the prefix: a sha256 of the key is a safe thing to store (there is nothing to
guess), and a key that does not have this shape is refused before any database read.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

KEY_PREFIX = "dk_live_"
PREFIX_LENGTH = len(KEY_PREFIX) + 8
_KEY_RE = re.compile(r"dk_live_[0-9a-f]{8}[A-Za-z0-9_-]{43}")
_PREFIX_RE = re.compile(r"dk_live_[0-9a-f]{8}")


def new_key() -> str:
    return f"{KEY_PREFIX}{secrets.token_hex(4)}{secrets.token_urlsafe(32)}"


def key_prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def is_well_formed(key: str) -> bool:
    return _KEY_RE.fullmatch(key) is not None


def is_prefix(text: str) -> bool:
    return _PREFIX_RE.fullmatch(text) is not None


def matches(key: str, stored_hash: str) -> bool:
    """Constant-time: how long the compare takes says nothing about how much of the key was right."""
    return hmac.compare_digest(hash_key(key), stored_hash)
