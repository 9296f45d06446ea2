"""The endpoint file of a running ``authtrail up`` holds the analyst token: owner-only.

It is replaced whole (a reader never sees half a file), never written through a file or
symlink someone planted, and a process that wants to *write* is not sent to the front.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from authtrail.errors import ConfigurationError
from authtrail.settings import Settings
from authtrail.sinks.service import (
    announce_endpoint,
    open_backend,
    running_endpoint,
    write_private_file,
)

URL = "http://analyst:the-token@127.0.0.1:1/"


def _settings(data_dir: Path) -> Settings:
    return Settings.from_env({"AUTHTRAIL_DATA_DIR": str(data_dir)})


def test_the_endpoint_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    (tmp_path / "clickhouse.endpoint").write_text("old, world-readable\n")
    os.chmod(tmp_path / "clickhouse.endpoint", 0o644)
    path = announce_endpoint(settings, URL)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["url"] == URL
    assert running_endpoint(settings) == URL
    assert [p.name for p in tmp_path.iterdir()] == ["clickhouse.endpoint"]  # no temporary left


def test_a_planted_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("not yours\n")
    endpoint = tmp_path / "clickhouse.endpoint"
    endpoint.symlink_to(elsewhere)
    write_private_file(endpoint, "secret\n")
    assert not endpoint.is_symlink() and endpoint.read_text() == "secret\n"
    assert elsewhere.read_text() == "not yours\n"


def test_a_writer_is_not_sent_to_the_read_only_front(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    announce_endpoint(settings, URL)  # this process is alive: the announcement counts
    with pytest.raises(ConfigurationError, match="read-only"):
        open_backend(settings)
