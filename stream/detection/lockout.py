"""Account lockout decisions with Keycloak's brute-force semantics, in event time. Pure.

:class:`LockoutDetector` watches LOGIN / LOGIN_FAILED (and, by policy, MFA_FAILURE)
events per (tenant, account) and decides, as Keycloak's ``DefaultBruteForceProtector``
would, when an account is temporarily or permanently locked and when a temporary lock
ends. The algorithm and every rule authtrail had to choose are in docs/LOCKOUT.md; the
short version:

* Time is the events' ``occurred_at`` (microseconds), never the wall clock, so replaying
  the same input yields the same decisions; unlocks are decided when event time (any
  event of the tenant, or :meth:`LockoutDetector.advance`) reaches ``locked_until``.
* Events may arrive up to ``allowed_lateness`` out of order: each account's events wait
  in a :class:`~authtrail.stream.detection.event_time.ReorderBuffer` until its watermark has moved
  ``allowed_lateness`` past them, then are applied in (occurred_at, event_id) order.
  Older events are "late": counted, never applied. An event id already seen is a
  duplicate: no new decision.
* All state is plain JSON-compatible data (:meth:`LockoutDetector.to_state`), so a
  restart from a stored state decides exactly what an uninterrupted run decides.

:func:`authtrail.stream.detection.decisions.decision_to_event` turns a decision into an AuthEvent.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from authtrail.errors import InvalidArgumentError
from authtrail.stream.detection.decisions import (
    ACCOUNT_LOCKED,
    ACCOUNT_UNLOCKED,
    LOCKOUT_SERVICE,
    Decision,
    by_time,
    event_identity,
    user_key,
)
from authtrail.stream.detection.event_time import EventOrder, new_order, order_from_state
from authtrail.stream.detection.lockout_policy import (
    DEFAULT_ALLOWED_LATENESS_SECONDS,
    LockoutPolicy,
    native_policy_for,
)

__all__ = ["LockoutDetector", "NativeLockoutDetector", "best_lockout_detector"]

_FAILURE, _SUCCESS, _SOURCE_UNLOCK = "failure", "success", "source_unlock"
_STATE_VERSION = 1

_ACCOUNT_FIELDS = (
    "failures", "temporary_lockouts", "last_failure", "window_start", "locked_until",
    "lock_trigger", "unlock_pending", "permanent", "user_id", "user_name", "client_ip",
)  # fmt: skip


class _Account:
    """Keycloak's UserLoginFailure record for one account, its algorithm, its event buffer."""

    __slots__ = ("key", "order", "tenant_id", *_ACCOUNT_FIELDS)

    def __init__(self, tenant_id: str, key: str) -> None:
        self.tenant_id, self.key = tenant_id, key
        self.order: EventOrder = new_order()
        self.failures = 0  # Keycloak's numFailures ("count" in its documentation)
        self.temporary_lockouts = 0  # numTemporaryLockouts
        self.last_failure: int | None = None
        self.window_start: int | None = None  # first failure counted since the last reset
        self.locked_until: int | None = None  # failedLoginNotBefore; kept after it passed
        self.lock_trigger: str | None = None
        self.unlock_pending = False  # a temporary lock whose end is not yet announced
        self.permanent = False
        self.user_id: str | None = None
        self.user_name: str | None = None
        self.client_ip: str | None = None

    def clear_failures(self) -> None:
        """Keycloak's clearFailures(): count, temporary lockouts and last failure."""
        self.failures = self.temporary_lockouts = 0
        self.last_failure = self.window_start = None

    def expiry_due(self, now: int) -> bool:
        """Whether the temporary lock ended at or before ``now`` and is not yet announced."""
        return self.unlock_pending and self.locked_until is not None and self.locked_until <= now

    def apply(
        self, now: int, event_id: str, payload: Mapping[str, Any], policy: LockoutPolicy
    ) -> tuple[list[Decision], str | None]:
        """Apply one event in event-time order; return its decisions and what to count."""
        decisions: list[Decision] = []
        self.user_id = payload["user_id"] or self.user_id
        self.user_name = payload["user_name"] or self.user_name
        if self.expiry_due(now):
            decisions.append(self.unlocked(None, now))
        kind = payload["kind"]
        temporarily_locked = self.locked_until is not None and now < self.locked_until
        if kind == _SOURCE_UNLOCK:
            # An administrator re-enabled the account at the source; Keycloak resets the
            # count when an account is enabled.
            if self.permanent or (temporarily_locked and self.unlock_pending):
                decisions.append(self.unlocked(event_id, now))
            self.clear_failures()
            self.permanent, self.locked_until, self.unlock_pending = False, None, False
            return decisions, None
        if self.permanent or temporarily_locked:
            # Keycloak refuses a disabled account before checking credentials: the attempt
            # neither counts as a failure nor (had the source let it in) resets the count.
            return decisions, f"{kind}_while_locked"
        if kind == _SUCCESS:
            self.clear_failures()
            return decisions, None
        lock = self.failed(now, event_id, payload["client_ip"], policy)
        return decisions + ([lock] if lock else []), None

    def failed(
        self, now: int, event_id: str, client_ip: str | None, policy: LockoutPolicy
    ) -> Decision | None:
        """One counted login failure: Keycloak's algorithm for the policy's mode."""
        only_permanent = policy.mode == "permanent"
        since_last = None if self.last_failure is None else now - self.last_failure
        reset_after = policy.failure_reset_time_seconds * 1_000_000
        if not only_permanent and since_last is not None and since_last > reset_after:
            self.clear_failures()
        self.last_failure = now  # "The timer runs from the last failed login."
        self.failures += 1
        self.client_ip = client_ip or self.client_ip
        self.window_start = now if self.window_start is None else self.window_start
        wait = 0 if only_permanent else _strategy_wait(policy, self.failures)
        quick = (
            wait <= 0
            and since_last is not None
            and since_last < policy.quick_login_check_milliseconds * 1000
        )
        if quick:
            wait = policy.minimum_quick_login_wait_seconds
        lock: Decision | None = None
        if wait > 0:
            if not only_permanent:
                wait = min(wait, policy.max_failure_wait_seconds)
            if not quick:
                self.temporary_lockouts += 1
            if (
                quick
                or not policy.permanent_lockout
                or self.temporary_lockouts <= policy.max_temporary_lockouts
            ):
                self.locked_until = now + wait * 1_000_000
                self.lock_trigger, self.unlock_pending = event_id, True
                lock = self.locked(now, "quick_login" if quick else "max_login_failures")
        if policy.permanent_lockout and (
            self.temporary_lockouts > policy.max_temporary_lockouts
            or (only_permanent and self.failures >= policy.max_login_failures)
        ):
            # A permanent lock supersedes a temporary one decided by the same failure.
            self.permanent, self.locked_until, self.unlock_pending = True, None, False
            self.lock_trigger = event_id
            reason = "max_login_failures" if only_permanent else "max_temporary_lockouts"
            lock = self.locked(now, reason)
        return lock

    def locked(self, now: int, reason: str) -> Decision:
        return _locked_decision(self, reason, now)

    def unlocked(self, source_event_id: str | None, now: int) -> Decision:
        """The end of the current lock: by expiry (at ``locked_until``) or by the source."""
        self.unlock_pending = False
        return _unlocked_decision(self, source_event_id, now)


# The decisions, states and prune below read an account's fields only: the same for an
# _Account and for the C one (authtrail._speedups.LockoutAccount), which calls the first
# two to decide.


def _locked_decision(account: Any, reason: str, now: int) -> Decision:
    return Decision(
        kind=ACCOUNT_LOCKED,
        reason=reason,
        occurred_at=now,
        triggering_event_id=account.lock_trigger or "",
        window_end=now,
        locked_until=account.locked_until,
        permanent=account.permanent,
        **_about(account),
    )


def _unlocked_decision(account: Any, source_event_id: str | None, now: int) -> Decision:
    expired = source_event_id is None
    return Decision(
        kind=ACCOUNT_UNLOCKED,
        reason="lock_expired" if expired else "unlocked_by_source",
        occurred_at=account.locked_until if expired and account.locked_until else now,
        triggering_event_id=source_event_id or account.lock_trigger or "",
        window_end=account.last_failure,
        locked_until=account.locked_until,
        **_about(account),
    )


def _about(account: Any) -> dict[str, Any]:
    return {
        "tenant_id": account.tenant_id,
        "user_key": account.key,
        "user_id": account.user_id,
        "user_name": account.user_name,
        "client_ip": account.client_ip,
        "failure_count": account.failures,
        "window_start": account.window_start,
        "temporary_lockouts": account.temporary_lockouts,
    }


def _account_state(account: Any) -> dict[str, Any]:
    state = {name: getattr(account, name) for name in _ACCOUNT_FIELDS}
    state["order"] = account.order.to_state()
    return state


def _load_account(account: Any, state: Mapping[str, Any]) -> Any:
    """``account`` (new) with the fields of ``state`` (:func:`_account_state`)."""
    for name in _ACCOUNT_FIELDS:
        setattr(account, name, state[name])
    account.order = order_from_state(state["order"])
    return account


class _Tenant:
    __slots__ = (
        "accounts", "buffered", "clock", "counters", "due", "expiries", "floor", "locked",
        "scheduled",
    )  # fmt: skip

    def __init__(self) -> None:
        self.accounts: dict[str, _Account] = {}
        self.clock: int | None = None  # newest event time seen or advanced to
        self.floor: int | None = None  # newest time promised by advance()
        self.counters: Counter[str] = Counter()
        # Indexes (rebuilt on load, not stored) so that an event costs O(its account),
        # not O(accounts of the tenant): who has buffered events, whose lock may expire.
        self.buffered: set[str] = set()
        # Accounts whose temporary lock awaits its announcement, with its locked_until, and
        # a heap of (locked_until, key) over them with stale entries: an event looks at the
        # heap's top only, not at every locked account. An account whose expiry waits for
        # its buffered events leaves both until their release tracks it again.
        self.locked: dict[str, int] = {}
        self.expiries: list[tuple[int, str]] = []
        # (due, key) of buffered accounts (ReorderBuffer.due), a heap with stale entries:
        # a time step visits only accounts whose release would change something, not
        # every buffered one. Each buffered account has an entry no later than its due.
        self.due: list[tuple[int, str]] = []
        # The time of each account's newest entry in ``due`` not yet taken off it: an
        # account offered many events within the lateness keeps one entry, not one each.
        self.scheduled: dict[str, int] = {}

    def track(self, account: _Account) -> None:
        key = account.key
        if account.order.oldest() is not None:
            self.buffered.add(key)
            due = account.order.due() or 0
            scheduled = self.scheduled.get(key)
            if scheduled is None or due < scheduled:
                self.scheduled[key] = due
                heapq.heappush(self.due, (due, key))
        else:
            self.buffered.discard(key)
        if account.unlock_pending:
            until = account.locked_until or 0
            if self.locked.get(key) != until:
                self.locked[key] = until
                heapq.heappush(self.expiries, (until, key))
        else:
            self.locked.pop(key, None)

    def forget(self, key: str) -> None:
        """Forget the account of ``key`` and its index entries (the heaps' turn stale)."""
        del self.accounts[key]
        self.buffered.discard(key)
        self.scheduled.pop(key, None)
        self.locked.pop(key, None)


class LockoutDetector:
    """Decides ACCOUNT_LOCKED / ACCOUNT_UNLOCKED per (tenant, account); see the module doc.

    ``policy_for(tenant_id)`` is asked on every event, so policy changes apply at once.
    ``allowed_lateness_seconds`` (>= 0) bounds how far out of order events may arrive.
    Raises :class:`InvalidArgumentError` for a negative lateness.
    """

    def __init__(
        self,
        policy_for: Callable[[str], LockoutPolicy],
        *,
        allowed_lateness_seconds: float = DEFAULT_ALLOWED_LATENESS_SECONDS,
    ) -> None:
        if not allowed_lateness_seconds >= 0:
            raise InvalidArgumentError(
                f"allowed_lateness_seconds must be >= 0, got {allowed_lateness_seconds}"
            )
        self._policy_for = policy_for
        self._lateness = round(allowed_lateness_seconds * 1_000_000)
        self._tenants: dict[str, Any] = {}  # _Tenant, or the C one (NativeLockoutDetector)

    @property
    def counters(self) -> dict[str, int]:
        """Events per outcome: ``accepted``, ``late``, ``duplicate``, ``irrelevant``,
        ``failure_while_locked``, ``success_while_locked``."""
        total: Counter[str] = Counter()
        for tenant in self._tenants.values():
            total.update(tenant.counters)
        return dict(sorted(total.items()))

    def observe(self, event: Mapping[str, Any]) -> list[Decision]:
        """Take one AuthEvent; return the decisions it makes due, oldest first.

        Requires ``tenant_id``, ``event_id`` (strings) and ``occurred_at`` (int micros);
        raises :class:`InvalidArgumentError` otherwise. Events of authtrail's own
        decisions (service ``authtrail-lockout``) are ignored.
        """
        tenant_id, event_id, occurred_at = event_identity(event)
        if event.get("service") == LOCKOUT_SERVICE:
            return []
        return self.observe_identified(event, tenant_id, event_id, occurred_at)

    def observe_identified(
        self, event: Mapping[str, Any], tenant_id: str, event_id: str, occurred_at: int
    ) -> list[Decision]:
        """:meth:`observe` of an event whose identity the caller has checked
        (:func:`~authtrail.stream.detection.decisions.event_identity`) and which is no
        decision of authtrail's own."""
        # _release() and _expire()'s test inlined, most events' types told from _classify()'s
        # at once: asked for every event.
        policy = self._policy_for(tenant_id)
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            tenant = self._tenants[tenant_id] = _Tenant()
        clock = tenant.clock
        if clock is None or occurred_at > clock:
            tenant.clock = clock = occurred_at
        kind = (
            _classify(event, policy)
            if policy.enabled and event.get("event_type") in _CLASSIFIED_TYPES
            else None
        )
        decisions: list[Decision] = []
        if kind is None or (key := user_key(event, policy.case_insensitive_user_names)) is None:
            tenant.counters["irrelevant"] += 1
        else:
            account = tenant.accounts.get(key)
            if account is None:
                account = tenant.accounts[key] = _Account(tenant_id, key)
            payload = {
                "kind": kind,
                "user_id": event.get("user_id"),
                "user_name": event.get("user_name"),
                "client_ip": event.get("client_ip"),
            }
            order = account.order
            tenant.counters[
                order.offer(occurred_at, event_id, payload, self._lateness, tenant.floor)
            ] += 1
            released = order.release(self._lateness, tenant.floor)
            if released:
                decisions = self._apply(tenant, account, released, policy)
            else:
                tenant.track(account)
        expiries = tenant.expiries
        if expiries and expiries[0][0] <= clock:
            decisions += self._expire(tenant)
        if len(decisions) < 2:
            return decisions
        return by_time(decisions)

    def advance(self, tenant_id: str, now: int) -> list[Decision]:
        """Declare that ``tenant_id``'s event time reached ``now`` (micros): apply buffered
        events up to ``now - allowed_lateness`` and announce the locks that expired.

        From then on events older than ``now - allowed_lateness`` are late for every
        account of the tenant, so ``now`` must be event time the sources have reached
        (for a live source, the wall clock; never for a replay of old logs).
        """
        tenant = self._tenants.get(tenant_id) or self._tenants.setdefault(tenant_id, _Tenant())
        tenant.floor = now if tenant.floor is None else max(tenant.floor, now)
        tenant.clock = now if tenant.clock is None else max(tenant.clock, now)
        policy = self._policy_for(tenant_id)
        decisions: list[Decision] = []
        # Every buffered account was released at its last event, with a watermark that has
        # not moved since, so only the floor can make its release do anything now: when
        # the cutoff it gives reaches the account's due. Those are visited, in key order
        # (which orders decisions of equal time); for the others a release is a no-op.
        floor, lateness, accounts = tenant.floor, self._lateness, tenant.accounts
        cutoff, due, visit = floor - lateness, tenant.due, set()
        scheduled = tenant.scheduled
        while due and due[0][0] <= cutoff:
            at, key = heapq.heappop(due)
            if scheduled.get(key) == at:
                del scheduled[key]  # visited now: tracked again below if still buffered
            visit.add(key)
        for key in sorted(visit & tenant.buffered):
            account = accounts[key]
            # If nothing is released, ids were forgotten at most: _apply() then only
            # gives the account its entry at its new due.
            released = account.order.release(lateness, floor)
            decisions += self._apply(tenant, account, released, policy)
        decisions += self._expire(tenant)
        return by_time(decisions)

    def prune(self, tenant_id: str) -> int:
        """Forget accounts of ``tenant_id`` whose state can no longer matter; return how many.

        Meant after :meth:`advance`: an account goes when nothing is buffered or recent
        enough to be replayed, no lock is held or awaits its announcement, its watermark
        is behind the advanced floor, and it has no failures or only ones older than the
        failure reset time.
        """
        tenant = self._tenants.get(tenant_id)
        if tenant is None or tenant.floor is None:
            return 0
        policy = self._policy_for(tenant_id)
        floor = tenant.floor
        reset_before = floor - policy.failure_reset_time_seconds * 1_000_000
        for account in tenant.accounts.values():
            account.order.forget(self._lateness, floor)
        forgettable = [
            key
            for key, account in tenant.accounts.items()
            if not (account.order.oldest() is not None or account.order.recent_ids)
            and not (account.unlock_pending or account.permanent)
            and (account.order.watermark or 0) <= floor
            and (
                account.failures == 0
                or (policy.mode != "permanent" and (account.last_failure or 0) < reset_before)
            )
        ]
        for key in forgettable:
            tenant.forget(key)
        return len(forgettable)

    # -- state ----------------------------------------------------------------------------

    def tenant_state(self, tenant_id: str) -> dict[str, Any] | None:
        """Everything remembered about ``tenant_id`` as JSON-compatible data, or None."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return None
        return {
            "clock": tenant.clock,
            "floor": tenant.floor,
            "counters": dict(tenant.counters),
            "accounts": {key: _account_state(account) for key, account in tenant.accounts.items()},
        }

    def load_tenant_state(self, tenant_id: str, state: Mapping[str, Any]) -> None:
        """Replace what is remembered about ``tenant_id`` with a :meth:`tenant_state` value."""
        tenant = self._new_tenant()
        tenant.clock, tenant.floor = state["clock"], state["floor"]
        tenant.counters.update(state["counters"])
        for key, account_state in state["accounts"].items():
            account = _load_account(self._new_account(tenant_id, key), account_state)
            tenant.accounts[key] = account
            tenant.track(account)
        self._tenants[tenant_id] = tenant

    def to_state(self) -> dict[str, Any]:
        """The whole detector as JSON-compatible data (for a changelogged table)."""
        tenants = {tenant_id: self.tenant_state(tenant_id) for tenant_id in self._tenants}
        return {"version": _STATE_VERSION, "tenants": tenants}

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        policy_for: Callable[[str], LockoutPolicy],
        *,
        allowed_lateness_seconds: float = DEFAULT_ALLOWED_LATENESS_SECONDS,
    ) -> LockoutDetector:
        """Rebuild a detector from :meth:`to_state`; raises :class:`InvalidArgumentError`
        for a state of another version."""
        if state.get("version") != _STATE_VERSION:
            raise InvalidArgumentError(f"unknown lockout state version {state.get('version')!r}")
        detector = cls(policy_for, allowed_lateness_seconds=allowed_lateness_seconds)
        for tenant_id, tenant_state in state["tenants"].items():
            detector.load_tenant_state(tenant_id, tenant_state)
        return detector

    def _apply(
        self, tenant: _Tenant, account: _Account, released: list[tuple[int, str, dict[str, Any]]],
        policy: LockoutPolicy,
    ) -> list[Decision]:  # fmt: skip
        """Apply ``released`` events of ``account`` in order; then index the account."""
        decisions: list[Decision] = []
        for occurred_at, event_id, payload in released:
            made, counted = account.apply(occurred_at, event_id, payload, policy)
            decisions += made
            if counted:
                tenant.counters[counted] += 1
        tenant.track(account)
        return decisions

    def _expire(self, tenant: _Tenant) -> list[Decision]:
        """Announce the temporary locks whose end the tenant's clock has reached."""
        clock, expiries = tenant.clock, tenant.expiries
        if clock is None or not expiries or expiries[0][0] > clock:
            return []
        due = []
        while expiries and expiries[0][0] <= clock:
            until, key = heapq.heappop(expiries)
            if tenant.locked.get(key) != until:
                continue  # stale: announced, unlocked or locked again since
            del tenant.locked[key]
            oldest = tenant.accounts[key].order.oldest()
            # A buffered event from before the expiry (say, an administrator's unlock)
            # must be applied first. Only a release of the account's own events can apply
            # it, and its track() gives the lock an entry again. (Put back here, it was
            # taken up again at every event of the tenant: an account flooded while
            # locked holds its failures of the whole lateness window.)
            if not (oldest is not None and oldest < until):
                due.append((until, key))
        return [tenant.accounts[key].unlocked(None, clock) for _, key in sorted(due)]

    @staticmethod
    def _new_tenant() -> Any:
        return _Tenant()

    @staticmethod
    def _new_account(tenant_id: str, key: str) -> Any:
        return _Account(tenant_id, key)


try:  # the hot paths in C (authtrail/_speedups.c), over accounts and tenants held in C
    from authtrail._speedups import LockoutAccount, LockoutTenant
    from authtrail._speedups import LockoutCore as _CLockoutCore

    LockoutCore: type[_CLockoutCore] | None = _CLockoutCore
except ImportError:  # pragma: no cover - a build without a C compiler
    LockoutCore = None


class NativeLockoutDetector(LockoutDetector):
    """:class:`LockoutDetector` with ``observe_identified``, ``advance`` and ``prune`` in C,
    over accounts and tenants held in C: the same decisions, counters and state (this
    class's other methods are the Python ones). Event times must fit in 64 bits (the worker
    admits no other, stream/worker/admission.py); beyond, ValueError. Requires the
    built extension (``LockoutCore`` is None without it)."""

    def __init__(
        self,
        policy_for: Callable[[str], LockoutPolicy],
        *,
        allowed_lateness_seconds: float = DEFAULT_ALLOWED_LATENESS_SECONDS,
    ) -> None:
        policy_for = native_policy_for(policy_for)
        super().__init__(policy_for, allowed_lateness_seconds=allowed_lateness_seconds)
        assert LockoutCore is not None
        core = LockoutCore(
            policy_for, self._lateness, self._tenants, _locked_decision, _unlocked_decision,
            user_key, by_time,
        )  # fmt: skip
        # Bound C methods on the instance: no Python frame per event.
        self.observe_identified = core.observe_identified  # type: ignore[method-assign,assignment]
        self.advance = core.advance  # type: ignore[method-assign,assignment]
        self.prune = core.prune  # type: ignore[method-assign,assignment]

    @staticmethod
    def _new_tenant() -> Any:
        return LockoutTenant()

    @staticmethod
    def _new_account(tenant_id: str, key: str) -> Any:
        return LockoutAccount(tenant_id, key)


def best_lockout_detector() -> type[LockoutDetector]:
    """:class:`NativeLockoutDetector` when the extension is built, else the Python one."""
    return NativeLockoutDetector if LockoutCore is not None else LockoutDetector


def _strategy_wait(policy: LockoutPolicy, failures: int) -> int:
    """Seconds to wait after ``failures`` failures ("Strategies to set Wait Time")."""
    if policy.strategy == "MULTIPLE":
        return policy.wait_increment_seconds * (failures // policy.max_login_failures)
    return policy.wait_increment_seconds * (1 + failures - policy.max_login_failures)


# The event types _classify() may give a kind: the others are irrelevant to every policy.
_CLASSIFIED_TYPES = frozenset(("LOGIN_FAILED", "LOGIN", "MFA_FAILURE", "ACCOUNT_UNLOCKED"))


def _classify(event: Mapping[str, Any], policy: LockoutPolicy) -> str | None:
    event_type, outcome = event.get("event_type"), event.get("outcome")
    if event_type == "LOGIN_FAILED" or (event_type == "LOGIN" and outcome == "FAILURE"):
        return _FAILURE
    if event_type == "MFA_FAILURE" and policy.count_mfa_failures:
        return _FAILURE
    if event_type == "LOGIN" and outcome == "SUCCESS":
        return _SUCCESS
    if event_type == "ACCOUNT_UNLOCKED" and outcome != "FAILURE":
        return _SOURCE_UNLOCK
    return None
