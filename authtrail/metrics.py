"""Counters of the worker and the sink in the Prometheus text format, over HTTP.

Operators watch rejections, throughput and fencing with the tools they already run: a
Prometheus scrape of ``http://<host>:<port>/metrics`` (``AUTHTRAIL_WORKER_METRICS_PORT``,
``AUTHTRAIL_SINK_METRICS_PORT``; 0, the default, serves nothing). The same numbers are in
the processes' logs every 10 s, and ``authtrail status`` counts what was stored.

Standard library only: one daemon thread, a handler that renders on each request.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from authtrail.errors import ConfigurationError

_LOG = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Family:
    """One metric: ``name``, help text, type, and its samples (labels -> value)."""

    name: str
    help: str
    kind: str = "counter"
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(families: Iterable[Family]) -> bytes:
    """The text exposition format (version 0.0.4) of ``families``."""
    lines: list[str] = []
    for family in families:
        help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {family.name} {help_text}", f"# TYPE {family.name} {family.kind}"]
        for labels, value in family.samples:
            inner = ",".join(
                f'{key}="{_escape_label(text)}"' for key, text in sorted(labels.items())
            )
            selector = f"{{{inner}}}" if inner else ""
            lines.append(f"{family.name}{selector} {_number(value)}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def counter_families(
    prefix: str, counters: Any, by_label: Mapping[str, Mapping[str, int]] | None = None
) -> list[Family]:
    """A counter family ``<prefix>_<field>_total`` per int field of dataclass ``counters``;
    ``by_label`` adds, per field name, its samples split by ``kind``."""
    families = []
    for spec in fields(counters):
        value = getattr(counters, spec.name)
        if not isinstance(value, int):
            continue
        split = (by_label or {}).get(spec.name)
        samples = (
            [({"kind": kind}, float(count)) for kind, count in sorted(split.items())]
            if split
            else [({}, float(value))]
        )
        name = f"{prefix}_{spec.name}_total"
        families.append(Family(name, f"{spec.name.replace('_', ' ')} so far", samples=samples))
    return families


class MetricsServer:
    """Serves ``collect()`` on ``GET /metrics`` at ``host:port`` until :meth:`close`."""

    def __init__(
        self, port: int, collect: Callable[[], Iterable[Family]], host: str = "0.0.0.0"
    ) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = render(collect())
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes every few seconds would drown the process log

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        _LOG.info("metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        """Stop serving (idempotent)."""
        self._server.shutdown()
        self._server.server_close()
