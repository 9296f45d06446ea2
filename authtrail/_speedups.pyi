# Types of the C extension built from authtrail/_speedups.c (see its header comment).
from collections.abc import Callable, Sequence
from typing import Any

class FlatReader:
    # (name, kind, optional, extra): extra the enum's symbols, the fixed's size, the record's reader
    def __init__(
        self, fields: Sequence[tuple[str, int, bool, tuple[str, ...] | int | FlatReader | None]]
    ) -> None: ...
    def __call__(self, data: bytes, pos: int, /) -> dict[str, Any] | None: ...

def leaf_v1(event: object, layout: tuple[Any, ...], magic: bytes, /) -> bytes | None: ...

class FlatWriter:
    def __init__(
        self,
        fields: Sequence[tuple[str, int, bool, bytes | None, Any]],
        slow: Callable[[Any], bytes],
    ) -> None: ...
    slow: Callable[[Any], bytes]
    def __call__(self, record: Any, /) -> bytes: ...

def chained_body(
    value: bytes,
    header: bytes,
    link: tuple[int, bytes, bytes, bytes],
    partition: int,
    offset: int,
    epoch: int,
    index: int | None,
    /,
) -> bytes | None: ...

class ReorderBuffer:
    # stream/detection/event_time.py's ReorderBuffer (EventOrder) in C
    @property
    def watermark(self) -> int | None: ...
    @property
    def frontier(self) -> tuple[int, str] | None: ...
    @property
    def recent_ids(self) -> dict[str, int]: ...
    def offer(
        self,
        occurred_at: int,
        event_id: str,
        payload: dict[str, Any],
        lateness: int,
        floor: int | None,
        /,
    ) -> str: ...
    def release(
        self, lateness: int, floor: int | None, /
    ) -> list[tuple[int, str, dict[str, Any]]]: ...
    def forget(self, lateness: int, floor: int | None, /) -> None: ...
    def cutoff(self, lateness: int, floor: int | None, /) -> int | None: ...
    def oldest(self) -> int | None: ...
    def due(self) -> int | None: ...
    def to_state(self) -> dict[str, Any]: ...
    def _load(
        self,
        watermark: int | None,
        frontier: tuple[int, str] | None,
        pending: list[tuple[int, str, dict[str, Any]]],
        recent_ids: dict[str, int],
        /,
    ) -> None: ...
