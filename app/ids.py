"""Opaque ids: database integers shown to clients as 16 hex characters.

A keyed Feistel permutation of 64-bit integers (HMAC-SHA256 round function), like Galaxy's
Blowfish-encoded ids: ids are not guessable from one another, and decoding a made-up id
gives a number that simply does not exist (or fails the range check).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re

_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_ROUNDS = 4
_MASK32 = 0xFFFFFFFF


class IdEncoder:
    """Encodes and decodes ids with a secret."""

    def __init__(self, secret: str):
        self._keys = [
            hashlib.sha256(f"{secret}:{i}".encode()).digest() for i in range(_ROUNDS)
        ]
        # A response repeats the same few ids (history, user) thousands of times.
        self.encode = functools.lru_cache(maxsize=65_536)(self.encode)  # type: ignore[method-assign]

    def _round(self, i: int, half: int) -> int:
        return int.from_bytes(hmac.digest(self._keys[i], half.to_bytes(4, "big"), "sha256")[:4], "big")

    def encode(self, value: int) -> str:
        """The opaque id of a database integer."""
        left, right = value >> 32 & _MASK32, value & _MASK32
        for i in range(_ROUNDS):
            left, right = right, left ^ self._round(i, right)
        return f"{(left << 32) | right:016x}"

    def decode(self, opaque: str) -> int | None:
        """The database integer of an opaque id, or None when it is not a valid id."""
        if not isinstance(opaque, str) or not _HEX16.match(opaque):
            return None
        number = int(opaque, 16)
        left, right = number >> 32, number & _MASK32
        for i in reversed(range(_ROUNDS)):
            left, right = right ^ self._round(i, left), left
        value = (left << 32) | right
        return value if 0 < value < 2**53 else None
