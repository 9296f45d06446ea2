"""The backend interface the sink and ``verify`` use (implementations: sinks/clickhouse.py)."""

from authtrail.sinks.clickhouse import ClickHouseBackend, EmbeddedBackend, ServerBackend

__all__ = ["ClickHouseBackend", "EmbeddedBackend", "ServerBackend"]
