"""The stream processor, by role: what is pure and what does I/O.

* :mod:`authtrail.stream.core` — the integrity core: canonical leaves, hash chains, Merkle
  trees, signed notes and checkpoints, proofs, the auditor's checks. Pure; anyone holding
  the public key verifies with this alone.
* :mod:`authtrail.stream.detection` — brute-force and spraying detectors and their
  policies. Pure: events in, decisions out.
* :mod:`authtrail.stream.worker` — the Faust worker: the app, Kafka in and out, recovery,
  snapshots, fencing, and the steps it runs on each batch (admission, sealing, batching).
"""
