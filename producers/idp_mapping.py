"""Map identity-provider events to AuthEvent records (``schemas/auth_event.avsc``).

Pure functions, one per source: a parsed JSON event in, an AuthEvent dict out, ready for
:class:`authtrail.schemas.codec.SingleObjectCodec`. Sources: Keycloak (Jackson-serialised
Event/AdminEvent, JSON event-listener output, the logging listener's key=value message),
Okta System Log LogEvents, Auth0 tenant logs (bare or in an EventBridge envelope) and AWS
CloudTrail records.

How nothing the source reported gets lost:

* A column holds either a **verbatim** copy of one source value, which is then consumed,
  or a value **derived** by interpretation (``event_type``, ``outcome``, timestamps,
  ``auth_method``, ``event_id``), whose source value stays in ``attributes`` as well.
* Every source value not consumed lands in ``attributes`` under its dotted path
  (``client.geographicalContext.city``, ``target.0.id``), as text: strings as they are,
  numbers and booleans in their JSON spelling.
* ``null``, ``{}`` and ``[]`` carry no value and are not kept; neither are ``""`` and the
  string ``"null"`` in a column (they stay in ``attributes``).

``event_id`` is ``<source>:<native event id>``, or ``<source>:sha256:<hex>`` over the
event and its time when the source has no id, so a re-delivered event keeps its id.

Every mapper raises :class:`FormatError` when the event lacks what an AuthEvent requires
(an event type, a timestamp with a UTC offset) and :class:`InvalidArgumentError` for a
``tenant_id`` outside ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from authtrail.errors import FormatError, InvalidArgumentError

__all__ = [
    "flatten_source",
    "map_auth0_event",
    "map_cloudtrail_event",
    "map_keycloak_event",
    "map_okta_event",
    "parse_keycloak_key_values",
]

_TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_ABSENT = ("", "null")  # what sources write for "no value"

# Native event name -> authtrail event type. "_ERROR" variants of Keycloak names are the
# same action failed; anything not listed is OTHER, named in event_type_other.
_KEYCLOAK_TYPES = {
    "LOGIN": "LOGIN",
    "LOGOUT": "LOGOUT",
    "CODE_TO_TOKEN": "TOKEN_ISSUED",
    "CLIENT_LOGIN": "TOKEN_ISSUED",
    "TOKEN_EXCHANGE": "TOKEN_ISSUED",
    "REFRESH_TOKEN": "TOKEN_REFRESHED",
    "REVOKE_GRANT": "TOKEN_REVOKED",
    "UPDATE_PASSWORD": "PASSWORD_CHANGED",
    "SEND_RESET_PASSWORD": "PASSWORD_RESET_REQUESTED",
    "RESET_PASSWORD": "PASSWORD_RESET_COMPLETED",
    "USER_DISABLED_BY_TEMPORARY_LOCKOUT": "ACCOUNT_LOCKED",
    "USER_DISABLED_BY_PERMANENT_LOCKOUT": "ACCOUNT_LOCKED",
}
_KEYCLOAK_PROTOCOLS = {"openid-connect": "oidc", "saml": "saml", "docker-v2": "docker"}

# Okta: (type on success or unknown outcome, type on failure).
_OKTA_TYPES = {
    "user.session.start": ("LOGIN", "LOGIN_FAILED"),
    "user.session.end": ("LOGOUT", "LOGOUT"),
    "user.account.lock": ("ACCOUNT_LOCKED", "ACCOUNT_LOCKED"),
    "user.account.lock.limit": ("ACCOUNT_LOCKED", "ACCOUNT_LOCKED"),
    "user.account.unlock": ("ACCOUNT_UNLOCKED", "ACCOUNT_UNLOCKED"),
    "user.account.unlock_by_admin": ("ACCOUNT_UNLOCKED", "ACCOUNT_UNLOCKED"),
    "user.account.update_password": ("PASSWORD_CHANGED", "PASSWORD_CHANGED"),
    "user.account.reset_password": ("PASSWORD_RESET_REQUESTED", "PASSWORD_RESET_REQUESTED"),
    "user.authentication.auth_via_mfa": ("MFA_SUCCESS", "MFA_FAILURE"),
    "system.push.send_factor_verify_push": ("MFA_CHALLENGE", "MFA_CHALLENGE"),
    "app.oauth2.as.token.grant.access_token": ("TOKEN_ISSUED", "TOKEN_ISSUED"),
    "app.oauth2.token.grant.access_token": ("TOKEN_ISSUED", "TOKEN_ISSUED"),
    "app.oauth2.as.token.revoke": ("TOKEN_REVOKED", "TOKEN_REVOKED"),
    "app.oauth2.token.revoke": ("TOKEN_REVOKED", "TOKEN_REVOKED"),
}
_OKTA_OUTCOMES = {"SUCCESS": "SUCCESS", "ALLOW": "SUCCESS", "FAILURE": "FAILURE", "DENY": "FAILURE"}

# Auth0 log type codes (auth0.com/docs, "Log Event Type Codes"): (event type, outcome).
_AUTH0_TYPES = {
    "s": ("LOGIN", "SUCCESS"),
    "f": ("LOGIN_FAILED", "FAILURE"),
    "fp": ("LOGIN_FAILED", "FAILURE"),
    "fu": ("LOGIN_FAILED", "FAILURE"),
    "pwd_leak": ("LOGIN_FAILED", "FAILURE"),
    "slo": ("LOGOUT", "SUCCESS"),
    "flo": ("LOGOUT", "FAILURE"),
    "limit_wc": ("ACCOUNT_LOCKED", "UNKNOWN"),
    "scp": ("PASSWORD_CHANGED", "SUCCESS"),
    "fcp": ("PASSWORD_CHANGED", "FAILURE"),
    "scpr": ("PASSWORD_RESET_REQUESTED", "SUCCESS"),
    "fcpr": ("PASSWORD_RESET_REQUESTED", "FAILURE"),
    "gd_send_sms": ("MFA_CHALLENGE", "SUCCESS"),
    "gd_send_voice": ("MFA_CHALLENGE", "SUCCESS"),
    "gd_send_pn": ("MFA_CHALLENGE", "SUCCESS"),
    "gd_auth_succeed": ("MFA_SUCCESS", "SUCCESS"),
    "gd_auth_failed": ("MFA_FAILURE", "FAILURE"),
    "seacft": ("TOKEN_ISSUED", "SUCCESS"),
    "feacft": ("TOKEN_ISSUED", "FAILURE"),
    "seccft": ("TOKEN_ISSUED", "SUCCESS"),
    "feccft": ("TOKEN_ISSUED", "FAILURE"),
    "sertft": ("TOKEN_REFRESHED", "SUCCESS"),
    "fertft": ("TOKEN_REFRESHED", "FAILURE"),
    "srrt": ("TOKEN_REVOKED", "SUCCESS"),
}

# CloudTrail: (type on success or unknown outcome, type on failure).
_CLOUDTRAIL_TYPES = {
    "ConsoleLogin": ("LOGIN", "LOGIN_FAILED"),
    "CheckMfa": ("MFA_SUCCESS", "MFA_FAILURE"),
    "PasswordUpdated": ("PASSWORD_CHANGED", "PASSWORD_CHANGED"),
    "ChangePassword": ("PASSWORD_CHANGED", "PASSWORD_CHANGED"),
    "GetSessionToken": ("TOKEN_ISSUED", "TOKEN_ISSUED"),
    "GetFederationToken": ("TOKEN_ISSUED", "TOKEN_ISSUED"),
    "AssumeRole": ("TOKEN_ISSUED", "TOKEN_ISSUED"),
    "AssumeRoleWithSAML": ("TOKEN_ISSUED", "TOKEN_ISSUED"),
    "AssumeRoleWithWebIdentity": ("TOKEN_ISSUED", "TOKEN_ISSUED"),
}
_CLOUDTRAIL_OUTCOMES = {"Success": "SUCCESS", "Failure": "FAILURE"}

_KEY_VALUE = re.compile(r'\s*([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|[^,]*)(?:,|\Z)')


def flatten_source(event: Mapping[str, Any]) -> dict[str, str]:
    """Return every value of a parsed JSON ``event`` by dotted path, as text.

    Lists are indexed (``target.0.id``); ``null``, ``{}`` and ``[]`` are skipped; numbers
    and booleans take their JSON spelling. Raises :class:`FormatError` when two paths
    collide (a key containing a dot that shadows a nested one).
    """
    flat: dict[str, str] = {}

    def visit(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                visit(item, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                visit(item, f"{path}.{index}" if path else str(index))
        elif value is not None:
            text = value if isinstance(value, str) else json.dumps(value)
            if path in flat:
                raise FormatError(f"source field path {path!r} occurs twice")
            flat[path] = text

    visit(event, "")
    return flat


def parse_keycloak_key_values(text: str) -> dict[str, str]:
    """Parse the logging listener's ``key=value, key="quoted value", ...`` text.

    Raises :class:`FormatError` when ``text`` has no such pairs.
    """
    pairs: dict[str, str] = {}
    for match in _KEY_VALUE.finditer(text.strip()):
        key, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs[key] = value
    if not pairs:
        raise FormatError(f"no key=value pairs in Keycloak log message {text[:80]!r}")
    return pairs


class _Builder:
    """An AuthEvent under construction from one source event's flattened values."""

    def __init__(self, source: str, event: Mapping[str, Any], tenant_id: str) -> None:
        if not isinstance(tenant_id, str) or not _TENANT_ID.match(tenant_id):
            raise InvalidArgumentError(f"tenant_id {tenant_id!r} is not a valid tenant id")
        self.source = source
        self.event = event
        self.remaining = flatten_source(event)
        self.record: dict[str, Any] = {"tenant_id": tenant_id, "source": source}

    def peek(self, *paths: str) -> str | None:
        """The first present value among ``paths``; it stays in attributes."""
        for path in paths:
            value = self.remaining.get(path)
            if value is not None and value not in _ABSENT:
                return value
        return None

    def take(self, column: str, *paths: str) -> str | None:
        """Copy the first present value among ``paths`` into ``column``, consuming it."""
        for path in paths:
            value = self.remaining.get(path)
            if value is not None and value not in _ABSENT and column not in self.record:
                self.record[column] = self.remaining.pop(path)
                return value
        return None

    def finish(self, event_type: str, outcome: str, occurred_at: int) -> dict[str, Any]:
        native_name = self.record.get("source_event_type")
        if event_type == "OTHER":
            self.record["event_type_other"] = native_name
        native_id = self.record.get("source_event_id")
        if native_id is None:
            canonical = json.dumps(self.event, sort_keys=True, separators=(",", ":"), default=str)
            digest = hashlib.sha256(f"{occurred_at}\n{canonical}".encode()).hexdigest()
            event_id = f"{self.source}:sha256:{digest}"
        else:
            event_id = f"{self.source}:{native_id}"
        return {
            **self.record,
            "event_id": event_id,
            "event_type": event_type,
            "outcome": outcome,
            "occurred_at": occurred_at,
            "attributes": self.remaining,
        }


def _iso_micros(text: str | None, what: str) -> int:
    if text is None:
        raise FormatError(f"event has no {what}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise FormatError(f"{what} {text!r} is not an ISO 8601 time: {exc}") from exc
    if moment.tzinfo is None:
        raise FormatError(f"{what} {text!r} has no UTC offset; refusing to guess one")
    return (moment - _EPOCH) // _MICROSECOND


def _by_outcome(types: tuple[str, str] | None, outcome: str) -> str:
    if types is None:
        return "OTHER"
    return types[1] if outcome == "FAILURE" else types[0]


def map_keycloak_event(
    event: Mapping[str, Any], *, tenant_id: str, default_occurred_at: int | None = None
) -> dict[str, Any]:
    """Map a Keycloak user or admin event.

    Accepts the Jackson form of ``Event``/``AdminEvent`` (``details`` nested), the flat
    form of JSON event listeners (details at top level), and a JSON log record of the
    logging listener (the event is the ``key=value`` text in ``message``).
    ``default_occurred_at`` (microseconds) is used only when the event itself carries no
    time (``time`` in milliseconds or ISO ``timestamp``), as in plain log lines whose
    time is in the log prefix. Raises as described in the module docstring.
    """
    body: Mapping[str, Any] = event
    if isinstance(event.get("message"), str) and not {"type", "operationType"} & event.keys():
        parsed = parse_keycloak_key_values(event["message"])
        if parsed.keys() & event.keys():
            raise FormatError(
                f"log message repeats record fields {sorted(parsed.keys() & event.keys())}"
            )
        body = {**event, **parsed}
    built = _Builder("keycloak", body, tenant_id)
    admin = "operationType" in body
    built.take("source_event_id", "id")
    built.take("realm", "realmName", "realmId")
    built.take("client_id", "clientId", "authDetails.clientId")
    built.take("client_ip", "ipAddress", "authDetails.ipAddress")
    built.take("session_id", "sessionId")
    built.take("failure_reason", "error")
    built.take("host", "hostName")
    for column, detail in [
        ("user_name", "username"),
        ("token_id", "token_id"),
        ("grant_type", "grant_type"),
        ("scopes", "scope"),
        ("identity_provider", "identity_provider"),
    ]:
        built.take(column, f"details.{detail}", detail)
    protocol = built.peek("details.auth_method", "auth_method")
    if protocol is not None:
        built.record["auth_method"] = _KEYCLOAK_PROTOCOLS.get(protocol, protocol.lower())
    failed = "failure_reason" in built.record
    if admin:
        built.take("actor_id", "authDetails.userId", "userId")
        built.record["actor_type"] = "admin"
        built.record["source_event_type"] = f"ADMIN:{built.peek('operationType')}"
        resource = built.peek("resourcePath") or ""
        if built.peek("resourceType") == "USER" and resource.startswith("users/"):
            built.record["user_id"] = resource.split("/")[1]
        event_type = "OTHER"
    else:
        built.take("user_id", "userId")
        native = built.take("source_event_type", "type")
        if native is None:
            raise FormatError("Keycloak event has no type")
        failed = failed or native.endswith("_ERROR")
        base = native.removesuffix("_ERROR")
        event_type = (
            "LOGIN_FAILED" if native == "LOGIN_ERROR" else _KEYCLOAK_TYPES.get(base, "OTHER")
        )
    millis = built.peek("time")
    if millis is not None and millis.isdigit():
        occurred_at = int(millis) * 1000
    elif built.peek("timestamp") is not None:
        occurred_at = _iso_micros(built.peek("timestamp"), "timestamp")
    elif default_occurred_at is not None:
        occurred_at = default_occurred_at
    else:
        raise FormatError("Keycloak event has no time and no default_occurred_at was given")
    return built.finish(event_type, "FAILURE" if failed else "SUCCESS", occurred_at)


def map_okta_event(event: Mapping[str, Any], *, tenant_id: str) -> dict[str, Any]:
    """Map one Okta System Log ``LogEvent`` (an event hook delivers a list of them in
    ``data.events``). Raises as described in the module docstring."""
    built = _Builder("okta", event, tenant_id)
    native = built.take("source_event_type", "eventType")
    if native is None:
        raise FormatError("Okta event has no eventType")
    occurred_at = _iso_micros(built.peek("published"), "published time")
    outcome = _OKTA_OUTCOMES.get(built.peek("outcome.result") or "", "UNKNOWN")
    built.take("source_event_id", "uuid")
    built.take("failure_reason", "outcome.reason")
    built.take("user_id", "actor.id")
    built.take("user_name", "actor.alternateId")
    built.take("actor_type", "actor.type")
    built.take("client_ip", "client.ipAddress")
    built.take("user_agent", "client.userAgent.rawUserAgent")
    built.take("session_id", "authenticationContext.externalSessionId")
    built.take("correlation_id", "transaction.id")
    built.take("identity_provider", "authenticationContext.authenticationProvider")
    built.take("message", "displayMessage")
    credential = built.peek("authenticationContext.credentialType")
    if credential is not None:
        built.record["auth_method"] = credential.lower()
    return built.finish(_by_outcome(_OKTA_TYPES.get(native), outcome), outcome, occurred_at)


def map_auth0_event(event: Mapping[str, Any], *, tenant_id: str) -> dict[str, Any]:
    """Map one Auth0 tenant log (``{"log_id", "data": {...}}``), bare or inside an AWS
    EventBridge envelope (``detail``). Raises as described in the module docstring."""
    built = _Builder("auth0", event, tenant_id)
    envelope = isinstance(event.get("detail"), Mapping)
    log = event["detail"] if envelope else event
    if not isinstance(log.get("data"), Mapping):
        raise FormatError("Auth0 log has no data object")
    prefix = "detail." if envelope else ""
    data = f"{prefix}data."
    native = built.take("source_event_type", f"{data}type")
    if native is None:
        raise FormatError("Auth0 log has no data.type")
    occurred_at = _iso_micros(built.peek(f"{data}date"), "data.date")
    if envelope and built.peek("time") is not None:
        built.record["received_at"] = _iso_micros(built.peek("time"), "envelope time")
    built.take("source_event_id", f"{prefix}log_id", f"{data}log_id")
    for column, field in [
        ("message", "description"),
        ("client_ip", "ip"),
        ("user_agent", "user_agent"),
        ("user_id", "user_id"),
        ("user_name", "user_name"),
        ("client_id", "client_id"),
        ("identity_provider", "connection"),
        ("host", "hostname"),
        ("session_id", "details.session_id"),
        ("failure_reason", "details.error.message"),
        ("scopes", "scope"),  # a string in some log types, a list (below) in others
    ]:
        built.take(column, f"{data}{field}")
    scope = log["data"].get("scope")
    if isinstance(scope, list) and scope:
        built.record["scopes"] = " ".join(str(item) for item in scope)
    if built.peek(f"{data}strategy_type") == "database":
        built.record["auth_method"] = "password"  # a database connection is name + password
    event_type, outcome = _AUTH0_TYPES.get(native, ("OTHER", "UNKNOWN"))
    return built.finish(event_type, outcome, occurred_at)


def map_cloudtrail_event(event: Mapping[str, Any], *, tenant_id: str) -> dict[str, Any]:
    """Map one AWS CloudTrail record (an element of a log file's ``Records``).

    Raises as described in the module docstring.
    """
    built = _Builder("aws.cloudtrail", event, tenant_id)
    native = built.take("source_event_type", "eventName")
    if native is None:
        raise FormatError("CloudTrail record has no eventName")
    occurred_at = _iso_micros(built.peek("eventTime"), "eventTime")
    response = built.peek(f"responseElements.{native}")
    if response in _CLOUDTRAIL_OUTCOMES:
        outcome = _CLOUDTRAIL_OUTCOMES[response]
    elif built.peek("errorCode", "errorMessage") is not None:
        outcome = "FAILURE"
    elif built.peek("eventType") == "AwsApiCall":
        outcome = "SUCCESS"  # an API call without an error code succeeded
    else:
        outcome = "UNKNOWN"
    built.take("source_event_id", "eventID")
    built.take("service", "eventSource")
    built.take("client_ip", "sourceIPAddress")
    built.take("user_agent", "userAgent")
    built.take("user_id", "userIdentity.principalId")
    built.take("user_name", "userIdentity.userName")
    built.take("actor_type", "userIdentity.type")
    built.take("realm", "recipientAccountId", "userIdentity.accountId")
    built.take("failure_reason", "errorMessage")
    built.take("correlation_id", "requestID")
    built.take("mfa_factor", "additionalEventData.MfaType")
    principal = built.record.get("actor_type")  # consumed above: read it back
    if native in ("ConsoleLogin", "CheckMfa") and principal in ("IAMUser", "Root"):
        built.record["auth_method"] = "password"  # console sign-in of an IAM user or root
    return built.finish(_by_outcome(_CLOUDTRAIL_TYPES.get(native), outcome), outcome, occurred_at)
