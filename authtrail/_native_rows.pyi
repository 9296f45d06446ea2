# Types of the C extension built from authtrail/_native_rows.c (see its header comment).
from typing import Any

def native_block(
    ops: tuple[tuple[int, int, Any], ...],
    headers: tuple[bytes, ...],
    body_ops: int,
    parts: list[tuple[list[bytes], bytes]],
    /,
) -> bytes: ...
