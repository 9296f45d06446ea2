"""Retention that runs on its own: every tenant with a retention period, now and then.

One *pass* (:func:`retention_pass`) looks at every tenant and rejection log the store
holds whose privacy policy file gives it ``retention_days`` (read again on every pass, so
an edited period applies without a restart) and prunes what is past it
(:mod:`authtrail.retention`):

* fewer than 256 records past the period, or a statement covering the cut already
  stored and nothing left below it: nothing happens, no statement is chained;
* otherwise the statement is recorded (once) and the records below the cut deleted;
* a tenant that fails — not yet signed or tiled up to the cut, a damaged log, the broker
  or store away — is reported and tried again on the next pass; it stops neither the
  other tenants nor the process that runs the passes;
* a tenant without a period whose log holds a statement with records still below its
  cut (a ``retain --tenant`` that could only record, e.g. while ``up`` owned the store)
  has that deletion finished.

Who runs passes: ``authtrail up`` in a thread (:class:`RetentionSchedule`) on the embedded
store it owns, which is also why it, and no other process, can delete there; on a
ClickHouse server ``authtrail retain --all --every 1h`` (a service of docker-compose.yml),
or ``retain --all`` from cron. How a tenant is pruned is the caller's (``prune``): the
same steps either way, through the backend the caller may mutate with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authtrail.errors import AuthtrailError, VerificationError
from authtrail.retention import RetentionOutcome, cut_older_than, retention_periods
from authtrail.settings import Settings
from authtrail.sinks.tables import EVENTS_TABLE, REJECTED_TABLE

if TYPE_CHECKING:
    from authtrail.sinks.backend import ClickHouseBackend

_LOG = logging.getLogger(__name__)

#: ``prune(tenant_id, cut)``: record the statement for ``cut`` and delete below it.
Prune = Callable[[str, int], RetentionOutcome]

#: ``up``'s default: retention periods are whole days, so an hour is fine-grained enough,
#: and a pass that finds nothing to do costs a few small queries per tenant.
DEFAULT_INTERVAL_SECONDS = 3600.0
#: The first pass of a long interval comes sooner, so that an ``up`` that runs for less
#: than an interval at a time (a laptop) still prunes; it leaves the sink time to catch up.
FIRST_PASS_SECONDS = 60.0


@dataclass(frozen=True)
class TenantRetention:
    """What a pass did for one tenant: its period (None: none, a pending deletion was
    finished), the cut it computed (0: under 256 records past it), the outcome (None:
    nothing was tried, or it failed) and the error that stopped it (None: none;
    ``damaged``: the log does not verify)."""

    tenant_id: str
    days: int | None
    cut: int
    outcome: RetentionOutcome | None = None
    error: str | None = None
    damaged: bool = False

    @property
    def acted(self) -> bool:
        """Whether this pass chained a statement or deleted records."""
        outcome = self.outcome
        return outcome is not None and (outcome.sent or bool(outcome.deleted))

    def line(self) -> str:
        """One line for a person reading the log."""
        period = "no period" if self.days is None else f"{self.days} days"
        where = f"tenant {self.tenant_id} (retention {period})"
        outcome = self.outcome
        if self.error is not None:
            return f"{where}: FAILED, retried on the next run: {self.error}"
        if outcome is None:
            return f"{where}: fewer than 256 records past retention; nothing to do"
        cut = f"records 1..{outcome.cut}"
        if outcome.statement_seq is None:
            return (f"{where}: retention of {cut} sent, not yet chained and stored; "
                    "deleted on a next run")  # fmt: skip
        recorded = (
            f"{'recorded' if outcome.sent else 'already recorded'} at seq {outcome.statement_seq}"
        )
        if outcome.deleted is None:
            return f"{where}: retention of {cut} {recorded}; deletion left to `authtrail up`"
        if not self.acted:
            return f"{where}: {cut} already pruned; nothing to do"
        return f"{where}: retention of {cut} {recorded}; {outcome.deleted} records deleted"

    def report(self) -> dict[str, Any]:
        outcome = self.outcome.report() if self.outcome is not None else None
        return {"tenant_id": self.tenant_id, "days": self.days, "cut": self.cut,
                "outcome": outcome, "error": self.error, "damaged": self.damaged}  # fmt: skip


def store_tenants(backend: ClickHouseBackend) -> list[str]:
    """Every tenant and rejection log with records in the store (a pruned log keeps at
    least its retention statement, which lies above its cut)."""
    sql = f"""SELECT DISTINCT tenant_id FROM {EVENTS_TABLE}
              UNION DISTINCT SELECT DISTINCT assumeNotNull(chain_tenant_id) FROM {REJECTED_TABLE}
                             WHERE chain_tenant_id IS NOT NULL"""
    return sorted(str(name) for name in backend.query_arrow(sql).column(0).to_pylist())


def retention_pass(
    settings: Settings, reader: ClickHouseBackend, prune: Prune, *,
    now_micros: int | None = None, stop: Callable[[], bool] = lambda: False,
) -> list[TenantRetention]:  # fmt: skip
    """Prune every tenant of the store past its period (the module docstring says how).

    ``reader`` computes the cuts; ``prune`` carries each out. Returns one entry per
    tenant with a period or a deletion pending, in tenant order. Raises
    ConfigurationError when the policy file cannot be read, StoreError when the tenants
    cannot be listed; a tenant's own failure is in its entry instead.
    """
    periods = retention_periods(settings.privacy_policy_file)
    now = time.time_ns() // 1000 if now_micros is None else now_micros
    results = []
    for tenant_id in store_tenants(reader):
        if stop():
            break
        result = _prune_tenant(reader, prune, tenant_id, periods.of(tenant_id), now)
        if result is not None:
            results.append(result)
    return results


def _pending_cut(reader: ClickHouseBackend, tenant_id: str) -> int:
    """The cut of a stored statement with records still below it (signatures unchecked
    here; ``prune`` checks them before deleting), else 0."""
    from authtrail.sinks.retention_store import claimed_cut, stored_below

    cut = claimed_cut(reader, tenant_id)
    return cut if cut and stored_below(reader, tenant_id, cut) else 0


def _prune_tenant(
    reader: ClickHouseBackend, prune: Prune, tenant_id: str, days: int | None, now_micros: int
) -> TenantRetention | None:
    """None: the tenant has no period and no deletion pending."""
    cut = 0
    try:
        if days is None:
            cut = _pending_cut(reader, tenant_id)
            if not cut:
                return None
        else:
            cut = cut_older_than(reader, tenant_id, days, now_micros)
        if not cut:
            return TenantRetention(tenant_id, days, cut)
        return TenantRetention(tenant_id, days, cut, prune(tenant_id, cut))
    except VerificationError as exc:
        return TenantRetention(tenant_id, days, cut, error=str(exc), damaged=True)
    except AuthtrailError as exc:
        return TenantRetention(tenant_id, days, cut, error=str(exc))
    except Exception as exc:  # a broker or engine error from below: reported, retried
        _LOG.exception("retention of tenant %s failed", tenant_id)
        return TenantRetention(tenant_id, days, cut, error=f"{type(exc).__name__}: {exc}")


class RetentionSchedule:
    """Runs a pass every ``interval`` seconds (the first one after at most
    :data:`FIRST_PASS_SECONDS`) in a thread until :meth:`stop`. ``run_pass`` does one
    pass; its lines worth reading (something done, or failed) go to ``say``. A pass
    that raises is said and retried next time; the thread never dies of it."""

    def __init__(
        self, run_pass: Callable[[Callable[[], bool]], list[TenantRetention]],
        interval: float, say: Callable[[str], None],
    ) -> None:  # fmt: skip
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self._run_pass = run_pass
        self._interval = interval
        self._say = say
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self.passes = 0

    def start(self) -> RetentionSchedule:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(90)

    def _run(self) -> None:
        wait = min(self._interval, FIRST_PASS_SECONDS)
        while not self._stop.wait(wait):
            wait = self._interval
            try:
                results = self._run_pass(self._stop.is_set)
            except Exception as exc:  # the policy file or the store: said, retried
                _LOG.exception("retention pass failed")
                self._say(f"retention: FAILED, retried in {self._interval:g} s: {exc}")
                continue
            finally:
                self.passes += 1
            for result in results:
                if (
                    result.acted
                    or result.error is not None
                    or (result.outcome is not None and result.outcome.statement_seq is None)
                ):
                    self._say(f"retention: {result.line()}")


def store_pass(
    settings: Settings, backend: ClickHouseBackend, *, wait_seconds: float = 60.0
) -> Callable[[Callable[[], bool]], list[TenantRetention]]:
    """A pass through ``backend``, which must be allowed to mutate ``events`` (the
    embedded store ``authtrail up`` owns): each tenant's statement is sent to the
    broker of ``settings``, awaited for up to ``wait_seconds``, then its records are
    deleted. Trusts the keys of ``settings.verifier_key_paths`` (the log's own
    keyring), read again each pass so that a rotation is followed."""
    from authtrail.keys import load_keyring
    from authtrail.retention import retain_in_store

    def run_pass(stop: Callable[[], bool]) -> list[TenantRetention]:
        keyring = load_keyring(list(settings.verifier_key_paths))

        def prune(tenant_id: str, cut: int) -> RetentionOutcome:
            return retain_in_store(settings, backend, tenant_id, cut, keyring,
                                   wait_seconds=wait_seconds, stop=stop)  # fmt: skip

        return retention_pass(settings, backend, prune, stop=stop)

    return run_pass
