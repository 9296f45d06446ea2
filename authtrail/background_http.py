"""An HTTP server on a background thread: bind, serve, stop — the part every server shares.

The analysts' front (sinks/http_front.py) and the witness (authtrail/witness.py) differ in
what they answer, not in how they start and stop; a subclass builds its handler class
and calls :meth:`BackgroundHttpServer._serve` from its own ``start()``.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

from authtrail.errors import InvalidArgumentError


def own_host_names(host: str, port: int) -> list[str]:
    """Host headers a server bound to every interface also answers to: this machine's
    names with ``port`` (a DNS-rebinding page can only send its own, which is none of
    them); none for a server bound to one address."""
    if host not in ("0.0.0.0", "::", ""):
        return []
    names = {socket.gethostname(), socket.getfqdn()}
    return [f"{name}:{port}" for name in sorted(names) if name]


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class BackgroundHttpServer:
    """Serves on ``host:port`` (port 0: any free port) from a daemon thread until :meth:`stop`."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The listening port. Requires ``start()``; raises InvalidArgumentError before."""
        if self._server is None:
            raise InvalidArgumentError(f"{type(self).__name__} knows its port only after start()")
        return int(self._server.server_address[1])

    @property
    def url_host(self) -> str:
        """The host as it goes into a URL or Host header (IPv6 literals in brackets)."""
        try:
            return f"[{self.host}]" if ipaddress.ip_address(self.host).version == 6 else self.host
        except ValueError:  # a host name
            return self.host

    def start(self) -> Self:
        """Bind and serve; returns self. Raises OSError if the address cannot be bound."""
        raise NotImplementedError

    def _serve(self, handler: type[BaseHTTPRequestHandler], thread_name: str) -> None:
        server_class = _IPv6Server if ":" in self.host else ThreadingHTTPServer
        self._server = server_class((self.host, self._requested_port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"{thread_name}:{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent); in-flight requests finish first."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
