"""CPU per event of sealing at the source and of the worker's check of it:
``python -m benchmarks.sealing_cpu`` (docs/PRIVACY.md, "Cost").

Three functions on the same events (default privacy policy, the directory key store in a
temporary directory, ``--subjects`` distinct users): the producer's
:meth:`~authtrail.producers.sdk.sealing.SourceSealing.seal`, and the worker's
:meth:`~authtrail.stream.worker.shredding.Sealer.seal` of the clear event (the worker seals)
and of the producer-sealed one (the worker opens and checks). No broker, no encoding:
only what sealing adds. CPU time of this process, best of ``--repeat``; the machine may be
shared.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from authtrail.privacy_keys import DirectoryKeyStore
from authtrail.producers.sdk.sealing import PrivacyPolicies, PrivacyPolicy, SourceSealing
from authtrail.stream.worker.shredding import Sealer

_POLICIES = PrivacyPolicies(tenants={"acme": PrivacyPolicy()})


def _events(count: int, subjects: int) -> list[dict[str, Any]]:
    return [
        {"event_id": f"e{n}", "tenant_id": "acme", "event_type": "LOGIN_FAILED",
         "outcome": "FAILURE", "occurred_at": 1_700_000_000_000_000 + n,
         "user_id": f"u{n % subjects}", "user_name": f"user{n % subjects}@example.com",
         "client_ip": "192.0.2.7", "user_agent": "curl/8", "attributes": {}}
        for n in range(count)
    ]  # fmt: skip


def _cpu_micros(function: Callable[[dict[str, Any]], Any], events: list[dict[str, Any]]) -> float:
    started = time.process_time()
    for event in events:
        function(event)
    return (time.process_time() - started) / len(events) * 1e6


def measure(count: int, subjects: int, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` CPU µs per event of each step."""
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as directory:
        store = DirectoryKeyStore(Path(directory))
        source = SourceSealing(_POLICIES, store)
        clear = _events(count, subjects)
        sealed = [dict(source.seal(event)) for event in clear]  # creates every key first
        for _ in range(repeat):
            worker = Sealer(_POLICIES, store)
            worker.seal(dict(clear[0]))  # pseudonym key and the first subject key cached
            runs = {
                "producer_seal_us": _cpu_micros(source.seal, clear),
                "worker_seals_clear_us": _cpu_micros(worker.seal, clear),
                "worker_checks_producer_sealed_us": _cpu_micros(worker.seal, sealed),
            }
            best = {name: min(value, best.get(name, value)) for name, value in runs.items()}
    return {name: round(value, 1) for name, value in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    print(json.dumps(measure(arguments.events, arguments.subjects, arguments.repeat)))


if __name__ == "__main__":
    main()
