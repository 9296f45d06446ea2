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

def bytes_array(items: list[bytes], /) -> bytes | None: ...
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

class LockoutAccount:
    # stream/detection/lockout.py's _Account fields, held in C
    def __init__(self, tenant_id: str, key: str, /) -> None: ...
    key: str
    tenant_id: str
    order: ReorderBuffer
    failures: int
    temporary_lockouts: int
    last_failure: int | None
    window_start: int | None
    locked_until: int | None
    lock_trigger: str | None
    unlock_pending: bool
    permanent: bool
    user_id: str | None
    user_name: str | None
    client_ip: str | None

class LockoutTenant:
    # stream/detection/lockout.py's _Tenant, its indexes in C
    clock: int | None
    floor: int | None
    counters: dict[str, int]
    @property
    def accounts(self) -> dict[str, LockoutAccount]: ...
    def track(self, account: LockoutAccount, /) -> None: ...
    def forget(self, key: str, /) -> None: ...
    def index_sizes(self) -> tuple[int, int]: ...

class LockoutCore:
    def __init__(
        self,
        policy_for: Callable[[str], Any],
        lateness: int,
        tenants: dict[str, LockoutTenant],
        locked: Callable[[LockoutAccount, str, int], Any],
        unlocked: Callable[[LockoutAccount, str | None, int], Any],
        user_key: Callable[[Any, bool], str | None],
        by_time: Callable[[list[Any]], list[Any]],
        /,
    ) -> None: ...
    def observe_identified(
        self, event: Any, tenant_id: str, event_id: str, occurred_at: int, /
    ) -> list[Any]: ...
    def advance(self, tenant_id: str, now: int, /) -> list[Any]: ...
    def prune(self, tenant_id: str, /) -> int: ...

class SprayAddress:
    # stream/detection/spray.py's _Address fields, held in C
    def __init__(self, rank: int = 0, /) -> None: ...
    rank: int
    order: ReorderBuffer
    quiet_until: int | None
    @property
    def failures(self) -> list[tuple[int, str]]: ...
    @property
    def accounts(self) -> dict[str, list[Any]]: ...
    def add(self, occurred_at: int, key: str, name: str, /) -> None: ...

class SprayCore:
    def __init__(
        self,
        policy_for: Callable[[str], Any],
        lateness: int,
        addresses: dict[str, dict[str, Any]],
        floors: dict[str, int],
        counters: dict[str, dict[str, int]],
        decision: Callable[..., Any],
        keyed_identity: Callable[[Any, str], str | None],
        user_key: Callable[[Any, bool], str | None],
        by_time: Callable[[list[Any]], list[Any]],
        /,
    ) -> None: ...
    created: int
    def observe_identified(
        self, event: Any, tenant_id: str, event_id: str, occurred_at: int, /
    ) -> list[Any]: ...
    def advance(self, tenant_id: str, now: int, /) -> list[Any]: ...
    def load_due(self, tenant_id: str, client_ip: str, /) -> None: ...
    def index_sizes(self, tenant_id: str, /) -> tuple[int, int]: ...

class GuardCore:
    # stream/detection/guard.py's Guard.observe glue
    def __init__(
        self,
        lockout_observe: Callable[[Any, str, str, int], list[Any]],
        spray_observe: Callable[[Any, str, str, int], list[Any]],
        advanced: dict[str, int],
        advance: Callable[[str, int], list[Any]],
        decided: Callable[[list[Any]], list[dict[str, Any]]],
        slow: Callable[[Any], list[dict[str, Any]]],
        keys_service: str,
        lockout_service: str,
        step: int,
        end: int,
        /,
    ) -> None: ...
    def observe(self, event: Any, /) -> list[dict[str, Any]]: ...

def remember_layout(
    keys: tuple[object, ...], layout: tuple[tuple[str, bytes, bytes], ...], /
) -> None: ...
def leaf_known(event: Any, magic: bytes, mark: bytes, /) -> bytes | None: ...

class AdmissionCore:
    # stream/worker/admission.py's check_event for the usual event
    def __init__(
        self,
        admitted: set[tuple[object, ...]],
        max_record_bytes: int,
        max_id_chars: int,
        earliest_micros: int,
        max_future_seconds: int,
        /,
    ) -> None: ...
    def usual(
        self,
        event: Any,
        record_bytes: int,
        record_timestamp_micros: int | None,
        partition: int,
        partitions: int | None,
        /,
    ) -> bool: ...

class UsualPass:
    # stream/worker/sequencing.py's per-event steps for the usual events of an envelope
    # or of a run of bare messages
    def __init__(
        self,
        reader: FlatReader,
        admission: AdmissionCore,
        header: bytes,
        magic: bytes,
        mark: bytes,
        offer: Callable[..., Any],
        /,
    ) -> None: ...
    def run(
        self,
        sequencer: Any,
        events: list[bytes],
        start: int,
        offset: int | list[int],  # a list (and timestamps): bare messages, one each
        timestamp: int | list[int | None] | None,
        partition: int,
        partitions: int | None,
        epoch: int,
        observe: Callable[[dict[str, Any]], list[dict[str, Any]]] | None,
        filled: list[str],
        observed: dict[str, list[int]] | None,
        out: list[Any],
        /,
    ) -> tuple[int, int, Any]: ...

class PolicyLookup:
    def __init__(self, overrides: dict[str, Any], default: Any, /) -> None: ...
    def __call__(self, tenant_id: str, /) -> Any: ...
