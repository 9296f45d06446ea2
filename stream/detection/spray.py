"""Password spraying: many different accounts failing from one client address. Pure.

Keycloak's brute-force detection is per account, so an attacker who tries one or two
passwords against many accounts never locks any of them (Keycloak's documentation names
this blind spot and points to intrusion prevention on client addresses). This detector
covers it: per (tenant, ``client_ip``), when ``distinct_users`` different accounts fail
to log in within ``window_seconds`` of event time, it decides one BRUTE_FORCE_SUSPECTED
alert. It locks nothing.

One alert per window: the alert's window starts at the oldest failure it counts and
lasts ``window_seconds``; failures inside an alerted window are not counted again, so
the next alert for the same address needs ``distinct_users`` new accounts after it.

Event time, lateness, duplicates and state round-trips follow the same rules as
:mod:`authtrail.stream.detection.lockout` (a
:class:`~authtrail.stream.detection.event_time.ReorderBuffer` per address).
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

from authtrail.errors import InvalidArgumentError
from authtrail.stream.detection.decisions import (
    BRUTE_FORCE_SUSPECTED,
    LOCKOUT_SERVICE,
    Decision,
    by_time,
    event_identity,
    keyed_identity,
    user_key,
)
from authtrail.stream.detection.event_time import EventOrder, new_order, order_from_state
from authtrail.stream.detection.lockout_policy import (
    DEFAULT_ALLOWED_LATENESS_SECONDS,
    SprayPolicy,
    native_policy_for,
)

__all__ = ["NativeSprayDetector", "SprayDetector", "best_spray_detector"]

_STATE_VERSION = 1


class _Address:
    """Failures from one client address inside the window, oldest first, and per account
    how many of them there are (so each failure costs O(1), however hard the address
    hammers one account)."""

    __slots__ = ("accounts", "failures", "order", "quiet_until", "rank")

    def __init__(self, rank: int = 0) -> None:
        # Creation order: the tenant's dict order, so visits sort by it instead of
        # scanning the dict.
        self.rank = rank
        self.order: EventOrder = new_order()
        self.failures: deque[tuple[int, str]] = deque()  # (occurred_at, user key)
        self.accounts: dict[str, list[Any]] = {}  # user key -> [name, failures in window]
        self.quiet_until: int | None = None  # end of the last alerted window

    def add(self, occurred_at: int, key: str, name: str) -> None:
        self.failures.append((occurred_at, key))
        self.accounts.setdefault(key, [name, 0])[1] += 1

    def failed(
        self, tenant_id: str, client_ip: str, now: int, event_id: str, payload: Mapping[str, Any],
        policy: SprayPolicy,
    ) -> Decision | None:  # fmt: skip
        window = policy.window_seconds * 1_000_000
        # Released in event-time order, so the window only ever slides forward.
        while self.failures and self.failures[0][0] <= now - window:
            _, key = self.failures.popleft()
            self.accounts[key][1] -= 1
            if not self.accounts[key][1]:
                del self.accounts[key]
        if self.quiet_until is not None and now < self.quiet_until:
            return None  # inside a window already alerted on
        self.add(now, payload["user_key"], payload["user_name"])
        if len(self.accounts) < policy.distinct_users:
            return None
        window_start = self.failures[0][0]
        decision = _spray_decision(tenant_id, client_ip, now, event_id, len(self.failures),
                                   window_start, self.accounts, policy.sample_size)  # fmt: skip
        self.quiet_until = window_start + window
        self.failures.clear()
        self.accounts.clear()
        return decision

    def empty_at(self, window: int) -> int | None:
        """The least ``now`` from which the detector's clean-up forgets this address (it
        holds from there on while the address is untouched); None while events are
        buffered or ids remembered, which only a release of the address changes."""
        order = self.order
        if order.oldest() is not None or order.recent_ids:
            return None
        at = max(order.watermark or 0, self.quiet_until or 0)
        # Failures are appended in event-time order: the last is the newest.
        return max(at, self.failures[-1][0] + window) if self.failures else at


# The decision and the state code below read an address's fields only: the same for an
# _Address and for the C one (authtrail._speedups.SprayAddress), which calls the first.


def _spray_decision(
    tenant_id: str, client_ip: str, now: int, event_id: str, failure_count: int,
    window_start: int, accounts: Mapping[str, list[Any]], sample_size: int,
) -> Decision:  # fmt: skip
    """The alert of a window whose failures (``failure_count``, the oldest at
    ``window_start``) came from ``accounts`` (user key -> [name, failures])."""
    names = [name for name, _ in accounts.values()]
    return Decision(
        kind=BRUTE_FORCE_SUSPECTED,
        tenant_id=tenant_id,
        reason="password_spraying",
        occurred_at=now,
        triggering_event_id=event_id,
        client_ip=client_ip,
        failure_count=failure_count,
        window_start=window_start,
        window_end=now,
        distinct_users=len(names),
        sample_user_names=tuple(names[:sample_size]),
    )


def _address_state(address: Any) -> dict[str, Any]:
    names = {key: name for key, (name, _) in address.accounts.items()}
    return {
        "order": address.order.to_state(),
        "failures": [[at, key, names[key]] for at, key in address.failures],
        "quiet_until": address.quiet_until,
    }


def _load_address(address: Any, state: Mapping[str, Any]) -> Any:
    """``address`` (new) with the failures and order of ``state`` (:func:`_address_state`)."""
    address.order = order_from_state(state["order"])
    for at, key, name in state["failures"]:
        address.add(at, key, name)
    address.quiet_until = state["quiet_until"]
    return address


class SprayDetector:
    """Decides BRUTE_FORCE_SUSPECTED per (tenant, client address); see the module doc.

    ``policy_for(tenant_id)`` is asked on every event. Raises
    :class:`InvalidArgumentError` for a negative ``allowed_lateness_seconds``.
    """

    def __init__(
        self,
        policy_for: Callable[[str], SprayPolicy],
        *,
        allowed_lateness_seconds: float = DEFAULT_ALLOWED_LATENESS_SECONDS,
    ) -> None:
        if not allowed_lateness_seconds >= 0:
            raise InvalidArgumentError(
                f"allowed_lateness_seconds must be >= 0, got {allowed_lateness_seconds}"
            )
        self._policy_for = policy_for
        self._lateness = round(allowed_lateness_seconds * 1_000_000)
        # Addresses are _Address, or the C one (NativeSprayDetector), whose core counts
        # into plain dicts.
        self._addresses: dict[str, dict[str, Any]] = {}
        self._floors: dict[str, int] = {}
        self._counters: dict[str, dict[str, int]] = {}
        # Per tenant, (due, client_ip) of addresses whose release may change something
        # (ReorderBuffer.due), a heap with stale entries: a time step visits only those.
        self._due: dict[str, list[tuple[int, str]]] = {}
        # Per tenant, the time of each address's newest entry in _due not yet taken off it:
        # an address sending many failures within the lateness keeps one entry.
        self._scheduled: dict[str, dict[str, int]] = {}
        # Per tenant, when each address becomes empty (_Address.empty_at): a heap with
        # stale entries, the live one per address in ``scheduled``, both for the window
        # they were computed with (a policy change of it rebuilds them), so the clean-up
        # visits only addresses whose time has come.
        self._empty: dict[str, _EmptyIndex] = {}
        self._created = 0

    @property
    def counters(self) -> dict[str, int]:
        """Events per outcome: ``accepted``, ``late``, ``duplicate``, ``irrelevant``."""
        total: Counter[str] = Counter()
        for counters in self._counters.values():
            total.update(counters)
        return dict(sorted(total.items()))

    def observe(self, event: Mapping[str, Any]) -> list[Decision]:
        """Take one AuthEvent; return the alerts it makes due, oldest first.

        Counts LOGIN_FAILED (and LOGIN with outcome FAILURE; MFA_FAILURE by policy) that
        name a ``client_ip`` and an account. Raises :class:`InvalidArgumentError` when
        ``tenant_id``, ``event_id`` or ``occurred_at`` is missing.
        """
        return self.observe_identified(event, *event_identity(event))

    def observe_identified(
        self, event: Mapping[str, Any], tenant_id: str, event_id: str, occurred_at: int
    ) -> list[Decision]:
        """:meth:`observe` of an event whose identity the caller has checked
        (:func:`~authtrail.stream.detection.decisions.event_identity`)."""
        counters = self._counters.get(tenant_id)
        if counters is None:
            counters = self._counters[tenant_id] = Counter()
        # Most events are of no type a failure can have: tell so before anything else.
        if event.get("event_type") not in _FAILURE_TYPES:
            counters["irrelevant"] += 1
            return []
        policy = self._policy_for(tenant_id)
        if (
            not policy.enabled
            or event.get("service") == LOCKOUT_SERVICE
            or not _is_failure(event, policy)
            # Sealed addresses differ in every event: count by their pseudonym (PRIVACY.md).
            or not (client_ip := keyed_identity(event, "client_ip"))
            or (key := user_key(event, policy.case_insensitive_user_names)) is None
        ):
            counters["irrelevant"] += 1
            return []
        addresses = self._addresses.get(tenant_id)
        if addresses is None:
            addresses = self._addresses[tenant_id] = {}
        address = addresses.get(client_ip)
        if address is None:  # not setdefault: that built an _Address for every failure
            self._created += 1
            address = addresses[client_ip] = _Address(self._created)
        payload = {"user_key": key, "user_name": event.get("user_name") or key}
        floor = self._floors.get(tenant_id)
        counters[address.order.offer(occurred_at, event_id, payload, self._lateness, floor)] += 1
        return self._release(tenant_id, client_ip, address, policy)

    def advance(self, tenant_id: str, now: int) -> list[Decision]:
        """Declare that ``tenant_id``'s event time reached ``now``: apply buffered failures
        up to ``now - allowed_lateness`` (same contract as ``LockoutDetector.advance``)."""
        floor = self._floors[tenant_id] = max(self._floors.get(tenant_id, now), now)
        policy = self._policy_for(tenant_id)
        decisions: list[Decision] = []
        addresses = self._addresses.get(tenant_id, {})
        lateness = self._lateness
        # Every address was released at its last event, with a watermark that has not
        # moved since, so only the floor can make its release do anything now: when the
        # cutoff reaches the address's due. Those are visited, in the tenant's address
        # order (which orders alerts of equal time); for the others a release is a no-op.
        cutoff, due, visit = floor - lateness, self._due.get(tenant_id), set()
        due_at = self._scheduled.get(tenant_id, {})
        while due and due[0][0] <= cutoff:
            at, client_ip = heapq.heappop(due)
            if due_at.get(client_ip) == at:
                del due_at[client_ip]  # visited now: indexed again below if still due
            visit.add(client_ip)
        visited = [ip for ip in visit if ip in addresses]
        for client_ip in sorted(visited, key=lambda ip: addresses[ip].rank):
            address = addresses[client_ip]
            # The release also forgets ids behind the cutoff, at this very floor.
            for occurred_at, event_id, payload in address.order.release(lateness, floor):
                decision = address.failed(
                    tenant_id, client_ip, occurred_at, event_id, payload, policy
                )
                if decision is not None:
                    decisions.append(decision)
            self._index(tenant_id, client_ip, address, policy)
        # An address with nothing buffered and only failures older than the window is
        # empty: forgotten once ``now`` reaches its empty_at (the empty index).
        index = self._empty_index(tenant_id, policy, addresses)
        heap, scheduled = index.heap, index.scheduled
        while heap and heap[0][0] <= now:
            at, client_ip = heapq.heappop(heap)
            if scheduled.get(client_ip) != at:
                continue  # stale: superseded by an earlier time, or already visited
            del scheduled[client_ip]
            empty_at = addresses[client_ip].empty_at(index.window)
            if empty_at is not None and empty_at <= now:
                del addresses[client_ip]
                due_at.pop(client_ip, None)
            elif empty_at is not None:
                scheduled[client_ip] = empty_at
                heapq.heappush(heap, (empty_at, client_ip))
        return by_time(decisions)

    def to_state(self) -> dict[str, Any]:
        """The whole detector as JSON-compatible data."""
        return {
            "version": _STATE_VERSION,
            "floors": dict(self._floors),
            "counters": {tenant: dict(counts) for tenant, counts in self._counters.items()},
            "addresses": {
                tenant: {ip: _address_state(address) for ip, address in addresses.items()}
                for tenant, addresses in self._addresses.items()
            },
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        policy_for: Callable[[str], SprayPolicy],
        *,
        allowed_lateness_seconds: float = DEFAULT_ALLOWED_LATENESS_SECONDS,
    ) -> SprayDetector:
        """Rebuild a detector from :meth:`to_state`; raises :class:`InvalidArgumentError`
        for a state of another version."""
        if state.get("version") != _STATE_VERSION:
            raise InvalidArgumentError(f"unknown spray state version {state.get('version')!r}")
        detector = cls(policy_for, allowed_lateness_seconds=allowed_lateness_seconds)
        # Filled in place: NativeSprayDetector's C core holds these very dicts.
        detector._floors.update(state["floors"])
        detector._counters.update({tenant: Counter(c) for tenant, c in state["counters"].items()})
        detector._addresses.update(
            {
                tenant: {
                    ip: _load_address(detector._new_address(), value)
                    for ip, value in addresses.items()
                }
                for tenant, addresses in state["addresses"].items()
            }
        )
        for addresses in detector._addresses.values():
            for address in addresses.values():
                address.rank = detector._next_rank()
        for tenant, addresses in detector._addresses.items():
            for ip, address in addresses.items():
                # The empty index is built at the tenant's first step (by its policy).
                detector._load_due(tenant, ip, address)
        return detector

    @staticmethod
    def _new_address() -> Any:
        return _Address()

    def _next_rank(self) -> int:
        self._created += 1
        return self._created

    def _load_due(self, tenant_id: str, client_ip: str, address: Any) -> None:
        """A loaded address's entry at its due, if a release could change it."""
        due = address.order.due()
        if due is not None:
            heapq.heappush(self._due.setdefault(tenant_id, []), (due, client_ip))
            self._scheduled.setdefault(tenant_id, {})[client_ip] = due

    def _index(
        self, tenant_id: str, client_ip: str, address: _Address, policy: SprayPolicy
    ) -> None:
        """Give ``address`` an entry at its due, if a release could ever change it, and
        keep its time in the empty index (after every release: only one changes it)."""
        due = address.order.due()
        if due is not None:
            due_at = self._scheduled.setdefault(tenant_id, {})
            entry = due_at.get(client_ip)
            if entry is None or due < entry:
                due_at[client_ip] = due
                heapq.heappush(self._due.setdefault(tenant_id, []), (due, client_ip))
        index = self._empty.get(tenant_id)
        window = policy.window_seconds * 1_000_000
        if index is None or index.window != window:
            self._empty_index(tenant_id, policy, self._addresses[tenant_id])
            return
        at = address.empty_at(window)
        if at is None:
            return  # its entry, if any, is kept: visited early, it is put back in time
        scheduled = index.scheduled.get(client_ip)
        # An entry no later than ``at`` stays: when visited it is put back at the time
        # then, so an address has one live entry and times only move it earlier.
        if scheduled is None or at < scheduled:
            index.scheduled[client_ip] = at
            heapq.heappush(index.heap, (at, client_ip))

    def _empty_index(
        self, tenant_id: str, policy: SprayPolicy, addresses: Mapping[str, _Address]
    ) -> _EmptyIndex:
        """The tenant's empty index for its policy's window, built anew when that changed."""
        window = policy.window_seconds * 1_000_000
        index = self._empty.get(tenant_id)
        if index is None or index.window != window:
            index = self._empty[tenant_id] = _EmptyIndex(window)
            for client_ip, address in addresses.items():
                at = address.empty_at(window)
                if at is not None:
                    index.scheduled[client_ip] = at
                    index.heap.append((at, client_ip))
            heapq.heapify(index.heap)
        return index

    def _release(
        self, tenant_id: str, client_ip: str, address: _Address, policy: SprayPolicy
    ) -> list[Decision]:
        floor = self._floors.get(tenant_id)
        decisions = []
        for occurred_at, event_id, payload in address.order.release(self._lateness, floor):
            decision = address.failed(tenant_id, client_ip, occurred_at, event_id, payload, policy)
            if decision is not None:
                decisions.append(decision)
        self._index(tenant_id, client_ip, address, policy)
        return decisions


class _EmptyIndex:
    """One tenant's addresses by the time they become empty, for one window length."""

    __slots__ = ("heap", "scheduled", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.heap: list[tuple[int, str]] = []  # (empty_at, client_ip), stale ones included
        self.scheduled: dict[str, int] = {}  # client_ip -> its live entry's time


_FAILURE_TYPES = frozenset(("LOGIN_FAILED", "LOGIN", "MFA_FAILURE"))  # what _is_failure looks at


def _is_failure(event: Mapping[str, Any], policy: SprayPolicy) -> bool:
    event_type = event.get("event_type")
    if event_type == "LOGIN_FAILED" or (
        event_type == "LOGIN" and event.get("outcome") == "FAILURE"
    ):
        return True
    return event_type == "MFA_FAILURE" and policy.count_mfa_failures


try:  # the hot paths in C (authtrail/_speedups.c), over addresses held in C
    from authtrail._speedups import SprayAddress
    from authtrail._speedups import SprayCore as _CSprayCore

    SprayCore: type[_CSprayCore] | None = _CSprayCore
except ImportError:  # pragma: no cover - a build without a C compiler
    SprayCore = None


class NativeSprayDetector(SprayDetector):
    """:class:`SprayDetector` with ``observe_identified`` and ``advance`` in C, over
    addresses held in C: the same alerts, counters and state (this class's other methods
    are the Python ones). Event times must fit in 64 bits (the worker admits no other);
    beyond, ValueError. Requires the built extension (``SprayCore`` is None without it)."""

    def __init__(
        self,
        policy_for: Callable[[str], SprayPolicy],
        *,
        allowed_lateness_seconds: float = DEFAULT_ALLOWED_LATENESS_SECONDS,
    ) -> None:
        policy_for = native_policy_for(policy_for)
        super().__init__(policy_for, allowed_lateness_seconds=allowed_lateness_seconds)
        assert SprayCore is not None
        self._core = SprayCore(
            policy_for, self._lateness, self._addresses, self._floors, self._counters,
            _spray_decision, keyed_identity, user_key, by_time,
        )  # fmt: skip
        # Bound C methods on the instance: no Python frame per event.
        self.observe_identified = self._core.observe_identified  # type: ignore[method-assign,assignment]
        self.advance = self._core.advance  # type: ignore[method-assign,assignment]

    @staticmethod
    def _new_address() -> Any:
        return SprayAddress()

    def _next_rank(self) -> int:
        self._core.created += 1
        return self._core.created

    def _load_due(self, tenant_id: str, client_ip: str, address: Any) -> None:
        self._core.load_due(tenant_id, client_ip)


def best_spray_detector() -> type[SprayDetector]:
    """:class:`NativeSprayDetector` when the extension is built, else the Python one."""
    return NativeSprayDetector if SprayCore is not None else SprayDetector
