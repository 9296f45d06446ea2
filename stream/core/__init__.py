"""The integrity core: pure functions and state machines, no Kafka, Faust or ClickHouse.

Everything a verifier needs — canonical leaves, the per-tenant hash chain, RFC 6962 Merkle
trees and proofs, C2SP signed notes and checkpoints, key rotation, proof bundles, the
auditor's checks — lives here and imports only the standard library, ``cryptography`` and
:mod:`authtrail.errors` (tests/unit/test_core_imports.py keeps it so).
"""
