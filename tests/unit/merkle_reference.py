"""Naive transcription of RFC 6962 §2.1, used ONLY to check authtrail.stream.core.merkle in tests.

Deliberately slow and obviously correct: recursion over list slices, recomputing every
subtree hash from raw entries, exactly as the RFC writes it. It imports nothing from the
code under test, so a shared bug cannot hide.

RFC 6962 §2.1, with D[n] the list of n inputs and k the largest power of two < n:
    MTH({})        = SHA-256()
    MTH({d(0)})    = SHA-256(0x00 || d(0))
    MTH(D[n])      = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
§2.1.1  PATH(m, D[n]):
    PATH(0, {d(0)}) = {}
    m < k:  PATH(m, D[0:k]) : MTH(D[k:n])
    m >= k: PATH(m - k, D[k:n]) : MTH(D[0:k])
§2.1.2  PROOF(m, D[n]) = SUBPROOF(m, D[n], true)
    SUBPROOF(m, D[m], true)  = {}
    SUBPROOF(m, D[m], false) = {MTH(D[m])}
    m <= k: SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
    m > k:  SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])

Also, step for step, the verification algorithms of RFC 9162 §2.1.3.2 (inclusion) and
§2.1.4.2 (consistency), to check that the real verifiers accept exactly what they accept.
"""

from __future__ import annotations

import hashlib


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def largest_power_of_two_below(n: int) -> int:
    """The k of RFC 6962 §2.1: the largest power of two strictly smaller than n (n > 1)."""
    assert n > 1
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(entries: list[bytes]) -> bytes:
    """MTH(D[n]) of raw entries."""
    n = len(entries)
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return _sha256(b"\x00" + entries[0])
    k = largest_power_of_two_below(n)
    return _sha256(b"\x01" + mth(entries[:k]) + mth(entries[k:]))


def path(m: int, entries: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of entry m, leaf level first."""
    n = len(entries)
    assert 0 <= m < n
    if n == 1:
        return []
    k = largest_power_of_two_below(n)
    if m < k:
        return [*path(m, entries[:k]), mth(entries[k:])]
    return [*path(m - k, entries[k:]), mth(entries[:k])]


def proof(m: int, entries: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) for 0 < m <= n (empty when m == n)."""
    assert 0 < m <= len(entries)
    return _subproof(m, entries, True)


def _subproof(m: int, entries: list[bytes], b: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if b else [mth(entries)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return [*_subproof(m, entries[:k], b), mth(entries[k:])]
    return [*_subproof(m - k, entries[k:], False), mth(entries[:k])]


# --------------------------------------------------------------------------------------
# RFC 9162 verification algorithms, step for step, to cross-check the real verifiers on
# arbitrary (also tampered) input. They return a result instead of raising, so a test can
# compare "accepted" with "accepted".
# --------------------------------------------------------------------------------------


def _node(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right)


def _lsb(value: int) -> bool:
    return value & 1 == 1


def rfc9162_root_from_inclusion(
    leaf_hash: bytes, leaf_index: int, tree_size: int, inclusion_path: list[bytes]
) -> bytes | None:
    """RFC 9162 §2.1.3.2 steps 1-5; the computed root, or None where the RFC says fail."""
    if leaf_index >= tree_size:  # step 1
        return None
    fn, sn = leaf_index, tree_size - 1  # step 2
    r = leaf_hash  # step 3
    for p in inclusion_path:  # step 4
        if sn == 0:  # 4a
            return None
        if _lsb(fn) or fn == sn:  # 4b
            r = _node(p, r)
            if not _lsb(fn):
                while not (_lsb(fn) or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1  # 4c
        sn >>= 1
    if sn != 0:  # step 5 (the root itself is compared by the caller)
        return None
    return r


def rfc9162_consistency_ok(
    first: int, second: int, first_hash: bytes, second_hash: bytes, consistency_path: list[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2 steps 1-7 for 0 < first < second (the RFC's domain)."""
    assert 0 < first < second
    if not consistency_path:  # step 1
        return False
    path = list(consistency_path)
    if first & (first - 1) == 0:  # step 2: first is an exact power of 2
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1  # step 3
    while _lsb(fn):  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:  # 6a
            return False
        if _lsb(fn) or fn == sn:  # 6b
            fr = _node(c, fr)
            sr = _node(c, sr)
            if not _lsb(fn):
                while not (_lsb(fn) or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1  # 6c
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0  # step 7
