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
