"""The views analysts read instead of the raw tables: one per common question.

Created with the tables (:func:`authtrail.sinks.tables.create_statements`, idempotent) on the
embedded store and a server alike, and checked by ``authtrail verify``
(:mod:`authtrail.sinks.verify_layout`): a view redefined in the store changes every answer read
through it without changing a verified row, so each must select exactly what is here.

All are plain (not materialized) views: each answer is computed from the verified rows
when it is asked, so no derived copy can drift from them (docs/QUERIES.md says why and
what it costs). Per-tenant business views leave out the reserved rejection-log tenants
(``authtrail-rejected-<partition>``, docs/INTEGRITY.md §12), which hold no events of a
tenant; ``chain_status`` includes them, since they are signed logs of their own.

Times are UTC. ``hour`` columns are the start of the hour (``toStartOfHour``).
"""

from __future__ import annotations

from authtrail.sinks.tables import CHECKPOINTS_TABLE, EVENTS_TABLE, LOCKOUTS_VIEW, REJECTED_TABLE
from authtrail.stream.core.rejection import REJECTION_TENANT_PREFIX
from authtrail.stream.detection.decisions import LOCKOUT_SERVICE

FAILED_LOGINS_HOURLY = "failed_logins_hourly"
LOCKOUT_FAILURES = "lockout_failures"
SPRAYING_SOURCES = "spraying_sources"
TOKEN_ACTIVITY_HOURLY = "token_activity_hourly"
MFA_FAILURES_HOURLY = "mfa_failures_hourly"
TENANT_VOLUME_HOURLY = "tenant_volume_hourly"
CHAIN_STATUS = "chain_status"

# What the lockout detector counts as a failed login (docs/LOCKOUT.md §1).
_LOGIN_FAILURE = "(event_type = 'LOGIN_FAILED' OR (event_type = 'LOGIN' AND outcome = 'FAILURE'))"
_MFA_FAILURE = (
    "(event_type = 'MFA_FAILURE' OR (event_type = 'MFA_CHALLENGE' AND outcome = 'FAILURE'))"
)
_TENANT = f"NOT startsWith(tenant_id, '{REJECTION_TENANT_PREFIX}')"
_HOUR = "toDateTime64(toStartOfHour(occurred_at), 0, 'UTC') AS hour"
# The detector's account key (authtrail.stream.detection.decisions.user_key), names lower-cased: the
# decision's user_key is compared with it after the same folding on the decision's side.
_FOLDED_KEY = (
    "if(ifNull(user_id, '') != '', concat('id:', user_id), "
    "concat('name:', lowerUTF8(ifNull(user_name, ''))))"
)


def _micros(attribute: str) -> str:
    return f"fromUnixTimestamp64Micro(toInt64OrNull(attributes['{attribute}']), 'UTC')"


_SELECTS: dict[str, str] = {
    FAILED_LOGINS_HOURLY: f"""
SELECT tenant_id, {_HOUR}, service, user_name, client_ip,
    count() AS failures, min(occurred_at) AS first_failure, max(occurred_at) AS last_failure
FROM {EVENTS_TABLE}
WHERE {_LOGIN_FAILURE} AND {_TENANT}
GROUP BY tenant_id, hour, service, user_name, client_ip""",
    # Each lock or unlock decision with the failures of its account inside the decision's
    # window (window_start: the first failure counted; window_end: the lock, or for an
    # unlock the last failure). The failures side is the large one, so it is on the left:
    # ClickHouse builds its hash table from the right.
    LOCKOUT_FAILURES: f"""
SELECT d.tenant_id AS tenant_id, d.seq AS decision_seq, d.occurred_at AS decided_at,
    d.event_type AS decision, d.reason AS reason, d.user_name AS user_name,
    d.failure_count AS failure_count, d.permanent AS permanent, d.locked_until AS locked_until,
    f.seq AS failure_seq, f.occurred_at AS failed_at, f.event_id AS failure_event_id,
    f.client_ip AS failure_client_ip, f.service AS failure_service,
    f.failure_reason AS failure_reason
FROM (
    SELECT tenant_id, seq, occurred_at, event_id, user_name, client_ip, service,
        failure_reason, {_FOLDED_KEY} AS folded_key
    FROM {EVENTS_TABLE}
    WHERE {_LOGIN_FAILURE} AND {_TENANT}
) AS f
INNER JOIN (
    SELECT tenant_id, seq, occurred_at, event_type, user_name,
        attributes['reason'] AS reason,
        toUInt32OrZero(attributes['failure_count']) AS failure_count,
        attributes['permanent'] = 'true' AS permanent,
        {_micros("locked_until")} AS locked_until,
        {_micros("window_start")} AS window_start,
        {_micros("window_end")} AS window_end,
        attributes['user_key'] AS user_key,
        if(startsWith(user_key, 'id:'), user_key, lowerUTF8(user_key)) AS folded_key
    FROM {EVENTS_TABLE}
    WHERE service = '{LOCKOUT_SERVICE}' AND event_type IN ('ACCOUNT_LOCKED', 'ACCOUNT_UNLOCKED')
        AND {_TENANT}
) AS d ON f.tenant_id = d.tenant_id AND f.folded_key = d.folded_key
WHERE f.occurred_at >= d.window_start AND f.occurred_at <= d.window_end
    AND (startsWith(d.user_key, 'id:') OR concat('name:', f.user_name) = d.user_key
         OR concat('name:', lowerUTF8(f.user_name)) = d.user_key)""",
    SPRAYING_SOURCES: f"""
SELECT tenant_id, client_ip, count() AS alerts, max(distinct_users) AS most_accounts,
    sum(failure_count) AS failures, min(window_start) AS first_seen,
    max(window_end) AS last_seen,
    arraySort(groupUniqArrayArray(JSONExtract(sample_user_names, 'Array(String)')))
        AS sample_user_names
FROM {LOCKOUTS_VIEW}
WHERE event_type = 'BRUTE_FORCE_SUSPECTED' AND {_TENANT}
GROUP BY tenant_id, client_ip""",
    TOKEN_ACTIVITY_HOURLY: f"""
SELECT tenant_id, {_HOUR}, client_id,
    countIf(event_type = 'TOKEN_ISSUED' AND outcome != 'FAILURE') AS issued,
    countIf(event_type = 'TOKEN_REFRESHED' AND outcome != 'FAILURE') AS refreshed,
    countIf(event_type = 'TOKEN_REVOKED' AND outcome != 'FAILURE') AS revoked,
    countIf(outcome = 'FAILURE') AS failed,
    uniqExact(user_name) AS users
FROM {EVENTS_TABLE}
WHERE event_type IN ('TOKEN_ISSUED', 'TOKEN_REFRESHED', 'TOKEN_REVOKED') AND {_TENANT}
GROUP BY tenant_id, hour, client_id""",
    MFA_FAILURES_HOURLY: f"""
SELECT tenant_id, {_HOUR}, user_name, mfa_factor, service, client_ip,
    count() AS failures, min(occurred_at) AS first_failure, max(occurred_at) AS last_failure
FROM {EVENTS_TABLE}
WHERE {_MFA_FAILURE} AND {_TENANT}
GROUP BY tenant_id, hour, user_name, mfa_factor, service, client_ip""",
    TENANT_VOLUME_HOURLY: f"""
SELECT tenant_id, {_HOUR}, count() AS events, countIf(outcome = 'FAILURE') AS failures,
    countIf({_LOGIN_FAILURE}) AS failed_logins,
    countIf(service = '{LOCKOUT_SERVICE}') AS lockout_decisions,
    uniqExact(user_name) AS users
FROM {EVENTS_TABLE}
WHERE {_TENANT}
GROUP BY tenant_id, hour""",
    # Every chained log with a stored record: tenants (events) and rejection logs
    # (rejected). What the store claims, not what verify proved: run verify for that.
    CHAIN_STATUS: f"""
WITH signed AS (
    SELECT tenant_id, count() AS checkpoints, max(size) AS signed_size,
        max(time_micros) AS newest_checkpoint
    FROM {CHECKPOINTS_TABLE}
    GROUP BY tenant_id
), chained AS (
    SELECT tenant_id, 'events' AS stored_in, seq, stored_at FROM {EVENTS_TABLE}
    UNION ALL
    SELECT assumeNotNull(chain_tenant_id) AS tenant_id, 'rejected' AS stored_in,
        assumeNotNull(seq) AS seq, stored_at
    FROM {REJECTED_TABLE}
    WHERE chain_tenant_id IS NOT NULL
)
SELECT c.tenant_id AS tenant_id, any(c.stored_in) AS stored_in, count() AS records,
    max(c.seq) AS last_seq, any(s.checkpoints) AS checkpoints,
    any(s.signed_size) AS signed_size,
    if(any(s.checkpoints) = 0, NULL, any(s.newest_checkpoint)) AS newest_checkpoint,
    toInt64(max(c.seq)) - toInt64(any(s.signed_size)) AS unsigned_tail,
    if(countIf(c.seq > s.signed_size) = 0, NULL, minIf(c.stored_at, c.seq > s.signed_size))
        AS oldest_unsigned_stored_at
FROM chained AS c
LEFT JOIN signed AS s ON c.tenant_id = s.tenant_id
GROUP BY c.tenant_id""",
}

#: The views authtrail creates, in creation order (``spraying_sources`` reads ``lockouts``).
VIEWS: tuple[str, ...] = tuple(_SELECTS)


def view_select(name: str) -> str:
    """The SELECT that defines view ``name``; raises KeyError for a name authtrail lacks."""
    return _SELECTS[name].strip()


def view_statements() -> list[str]:
    """``CREATE VIEW IF NOT EXISTS`` for each view (after the tables and ``lockouts``)."""
    return [f"CREATE VIEW IF NOT EXISTS {name} AS\n{view_select(name)}" for name in VIEWS]
