"""The per-event SHA-256 of the chain and the Merkle trees (and the sink's tile roots), the
id window's BLAKE2b key and the sequencer's usual offer, from C when it is built. (The
compact trees' C storage is imported by stream/core/compact.py itself.)

``authtrail._hashing`` (authtrail/_hashing.c) calls OpenSSL's SHA-256 directly: ~0.1 µs a
hash where hashlib and the Python around it spend ~0.5, four times per event sequenced.
It hashes the same bytes with the same library, so nothing it returns can differ from the
Python code's result; it returns None for any input it leaves to that code, which callers
fall back to with ``native(...) or python(...)`` (a digest is never empty). Built without
OpenSSL's headers (hatch_build.py), every function here returns None and hashlib does all.
"""

from __future__ import annotations

__all__ = [
    "BUILT", "chain_hash", "configure_offer", "id_key", "leaf_hash", "node_hash",
    "sequencer_offer", "tile_roots",
]  # fmt: skip

try:
    from authtrail._hashing import (
        chain_hash,
        configure_offer,
        id_key,
        leaf_hash,
        node_hash,
        sequencer_offer,
        tile_roots,
    )

    BUILT = True
except ImportError:  # pragma: no cover - a build without OpenSSL's headers
    BUILT = False

    def _left_to_python(*args: object) -> None:
        return None

    chain_hash = configure_offer = id_key = leaf_hash = node_hash = sequencer_offer = tile_roots = (
        _left_to_python
    )
