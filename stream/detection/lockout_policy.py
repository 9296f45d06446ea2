"""Brute-force policies: Keycloak's lockout parameters and the spraying rule, per tenant.

Pure parsing: the text (JSON or TOML) or an already-decoded mapping comes in, frozen
policies come out; reading the file is :func:`authtrail.policy_file.load_policy_file`.

:class:`LockoutPolicy` carries Keycloak's brute-force detection settings with Keycloak's
defaults (``RealmManager.setupRealmDefaults``; Server Administration Guide, "Brute force
attacks"; docs/LOCKOUT.md cites both). A policy file may spell each field in snake case
(``max_login_failures``) or as in a Keycloak realm export (``failureFactor``), so the
brute-force block of a realm can be pasted in. Layout, JSON or TOML::

    allowed_lateness_seconds = 5      # detector setting, one per file

    [lockout]                         # over Keycloak's defaults, for every tenant
    max_login_failures = 5

    [spray]                           # over the spraying defaults
    distinct_users = 10

    [tenants.acme.lockout]            # per tenant, over the file's [lockout]
    permanentLockout = true
    maxTemporaryLockouts = 2

Unknown keys, wrong types and out-of-range values raise :class:`ConfigurationError`
naming the key: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeVar

from authtrail.errors import ConfigurationError, InvalidArgumentError

__all__ = [
    "DEFAULT_ALLOWED_LATENESS_SECONDS",
    "KEYCLOAK_FIELD_NAMES",
    "LockoutPolicy",
    "PolicySet",
    "SprayPolicy",
    "native_policy_for",
    "parse_policy_text",
    "policy_set_from_mapping",
]

DEFAULT_ALLOWED_LATENESS_SECONDS = 5.0

#: Keycloak RealmRepresentation names of the :class:`LockoutPolicy` fields.
KEYCLOAK_FIELD_NAMES: Mapping[str, str] = {
    "bruteForceProtected": "enabled",
    "permanentLockout": "permanent_lockout",
    "maxTemporaryLockouts": "max_temporary_lockouts",
    "bruteForceStrategy": "strategy",
    "failureFactor": "max_login_failures",
    "waitIncrementSeconds": "wait_increment_seconds",
    "maxFailureWaitSeconds": "max_failure_wait_seconds",
    "quickLoginCheckMilliSeconds": "quick_login_check_milliseconds",
    "minimumQuickLoginWaitSeconds": "minimum_quick_login_wait_seconds",
    "maxDeltaTimeSeconds": "failure_reset_time_seconds",
}

_PolicyT = TypeVar("_PolicyT", "LockoutPolicy", "SprayPolicy")

_TENANT_ID_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
)


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """Keycloak's brute-force detection settings; defaults are Keycloak's own.

    ``enabled`` defaults to True although Keycloak ships with detection off: a tenant
    that wants no lockout decisions says so. ``count_mfa_failures`` (MFA_FAILURE counts
    as a login failure) and ``case_insensitive_user_names`` (Keycloak lower-cases user
    names; Linux does not) are authtrail's own. Raises :class:`InvalidArgumentError`
    for negative numbers, ``max_login_failures < 1`` or an unknown ``strategy``.
    """

    enabled: bool = True
    permanent_lockout: bool = False
    max_temporary_lockouts: int = 0
    strategy: Literal["MULTIPLE", "LINEAR"] = "MULTIPLE"
    max_login_failures: int = 30
    wait_increment_seconds: int = 60
    max_failure_wait_seconds: int = 900
    quick_login_check_milliseconds: int = 1000
    minimum_quick_login_wait_seconds: int = 60
    failure_reset_time_seconds: int = 43_200
    count_mfa_failures: bool = False
    case_insensitive_user_names: bool = True

    def __post_init__(self) -> None:
        _check_numbers(self)
        if self.max_login_failures < 1:
            raise InvalidArgumentError(
                f"max_login_failures must be >= 1, got {self.max_login_failures}"
            )
        if self.strategy not in ("MULTIPLE", "LINEAR"):
            raise InvalidArgumentError(
                f"strategy must be 'MULTIPLE' or 'LINEAR', got {self.strategy!r}"
            )

    @property
    def mode(self) -> str:
        """Keycloak's Brute Force Mode: ``temporary``, ``permanent`` or
        ``permanent_after_temporary`` (Lockout permanently after temporary lockout)."""
        if not self.permanent_lockout:
            return "temporary"
        return "permanent" if self.max_temporary_lockouts == 0 else "permanent_after_temporary"


@dataclass(frozen=True, slots=True)
class SprayPolicy:
    """Password spraying: ``distinct_users`` different accounts failing from one client
    address within ``window_seconds`` raise one BRUTE_FORCE_SUSPECTED alert per window.

    ``sample_size`` user names are quoted in the alert. Raises
    :class:`InvalidArgumentError` for ``distinct_users < 2`` or non-positive sizes.
    """

    enabled: bool = True
    distinct_users: int = 10
    window_seconds: int = 600
    sample_size: int = 10
    count_mfa_failures: bool = False
    case_insensitive_user_names: bool = True

    def __post_init__(self) -> None:
        _check_numbers(self)
        if self.distinct_users < 2 or self.window_seconds < 1 or self.sample_size < 1:
            raise InvalidArgumentError(
                "distinct_users must be >= 2, window_seconds and sample_size >= 1; got "
                f"{self.distinct_users}, {self.window_seconds}, {self.sample_size}"
            )


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Default policies, per-tenant overrides, and the detectors' allowed lateness."""

    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    spray: SprayPolicy = field(default_factory=SprayPolicy)
    tenant_lockout: Mapping[str, LockoutPolicy] = field(default_factory=dict)
    tenant_spray: Mapping[str, SprayPolicy] = field(default_factory=dict)
    allowed_lateness_seconds: float = DEFAULT_ALLOWED_LATENESS_SECONDS

    def lockout_for(self, tenant_id: str) -> LockoutPolicy:
        """The lockout policy of ``tenant_id`` (its override, else the default)."""
        return self.tenant_lockout.get(tenant_id, self.lockout)

    def spray_for(self, tenant_id: str) -> SprayPolicy:
        """The spraying policy of ``tenant_id`` (its override, else the default)."""
        return self.tenant_spray.get(tenant_id, self.spray)


def parse_policy_text(text: str, *, format: Literal["json", "toml"]) -> PolicySet:
    """Parse a policy file's text. Raises :class:`ConfigurationError` when it is not
    valid JSON/TOML or breaks the layout described in the module docstring."""
    if format not in ("json", "toml"):
        raise ConfigurationError(f"policy format must be 'json' or 'toml', got {format!r}")
    try:
        data: Any = json.loads(text) if format == "json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"policy file is not valid {format.upper()}: {exc}") from exc
    return policy_set_from_mapping(data)


def policy_set_from_mapping(data: Any) -> PolicySet:
    """Build a :class:`PolicySet` from a decoded policy document (see module docstring).

    Raises :class:`ConfigurationError` naming the offending key.
    """
    document = _table(data, "policy")
    _refuse_unknown(document, {"allowed_lateness_seconds", "lockout", "spray", "tenants"}, "")
    lateness = document.get("allowed_lateness_seconds", DEFAULT_ALLOWED_LATENESS_SECONDS)
    if (
        isinstance(lateness, bool)
        or not isinstance(lateness, int | float)
        or not 0 <= lateness <= MAX_POLICY_NUMBER
    ):
        raise ConfigurationError(
            f"allowed_lateness_seconds must be a number from 0 to {MAX_POLICY_NUMBER}, "
            f"got {lateness!r}"
        )
    lockout = _override(LockoutPolicy(), document.get("lockout", {}), "lockout")
    spray = _override(SprayPolicy(), document.get("spray", {}), "spray")
    tenant_lockout: dict[str, LockoutPolicy] = {}
    tenant_spray: dict[str, SprayPolicy] = {}
    for tenant_id, overrides in _table(document.get("tenants", {}), "tenants").items():
        if not tenant_id or len(tenant_id) > 128 or not set(tenant_id) <= _TENANT_ID_CHARACTERS:
            raise ConfigurationError(f"tenants: {tenant_id!r} is not a valid tenant id")
        where = f"tenants.{tenant_id}"
        table = _table(overrides, where)
        _refuse_unknown(table, {"lockout", "spray"}, where)
        if "lockout" in table:
            tenant_lockout[tenant_id] = _override(lockout, table["lockout"], f"{where}.lockout")
        if "spray" in table:
            tenant_spray[tenant_id] = _override(spray, table["spray"], f"{where}.spray")
    return PolicySet(lockout, spray, tenant_lockout, tenant_spray, float(lateness))


def _override(base: _PolicyT, overrides: Any, where: str) -> _PolicyT:
    table = _table(overrides, where)
    known = {item.name: item.type for item in fields(base)}
    aliases: Mapping[str, str] = KEYCLOAK_FIELD_NAMES if isinstance(base, LockoutPolicy) else {}
    changes: dict[str, Any] = {}
    for key, value in table.items():
        name = aliases.get(key, key)
        if name not in known:
            raise ConfigurationError(f"{where}: unknown setting {key!r}")
        if name in changes:
            raise ConfigurationError(f"{where}: {name!r} is given twice (as {key!r} too)")
        changes[name] = _typed(value, getattr(base, name), f"{where}.{key}")
    try:
        return replace(base, **changes)
    except InvalidArgumentError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc


def _typed(value: Any, default: Any, where: str) -> Any:
    # The default's type is the setting's type; bool is an int in Python, so test it first.
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigurationError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(f"{where} must be an integer, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigurationError(f"{where} must be a string, got {value!r}")
    return value.upper()  # Keycloak exports the strategy as MULTIPLE / LINEAR


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ConfigurationError(f"{where} must be a table/object, got {type(value).__name__}")
    return value


def _refuse_unknown(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        prefix = f"{where}: " if where else ""
        raise ConfigurationError(f"{prefix}unknown keys {unknown}; allowed: {sorted(allowed)}")


#: The largest number a policy field holds: Keycloak's are Java ints. Times derived from
#: them then fit the detectors' 64-bit microseconds (stream/detection/lockout.py).
MAX_POLICY_NUMBER = 2**31 - 1


def _check_numbers(policy: LockoutPolicy | SprayPolicy) -> None:
    for item in fields(policy):
        value = getattr(policy, item.name)
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise InvalidArgumentError(f"{item.name} must be >= 0, got {value}")
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_POLICY_NUMBER:
            raise InvalidArgumentError(
                f"{item.name} must be <= {MAX_POLICY_NUMBER} (a Java int, as Keycloak's), "
                f"got {value}"
            )


try:  # the lookup in C (authtrail/_speedups.c), read by the detectors' C cores
    from authtrail._speedups import PolicyLookup as _CPolicyLookup

    _PolicyLookup: type[_CPolicyLookup] | None = _CPolicyLookup
except ImportError:  # pragma: no cover - a build without a C compiler
    _PolicyLookup = None

_Policy = TypeVar("_Policy", LockoutPolicy, SprayPolicy)


def native_policy_for(policy_for: Callable[[str], _Policy]) -> Callable[[str], _Policy]:
    """``policy_for``, or the same lookup in C when it is a :class:`PolicySet`'s
    ``lockout_for`` or ``spray_for`` over a plain dict of overrides: the detectors' C cores
    ask it on every event, and read that one's dict without a Python call (~0.1 µs each).
    The dict is read on every call, so a change to it applies at once, as it does here."""
    policies = getattr(policy_for, "__self__", None)
    function = getattr(policy_for, "__func__", None)
    if _PolicyLookup is None or type(policies) is not PolicySet:
        return policy_for
    if function is PolicySet.lockout_for and type(policies.tenant_lockout) is dict:
        return _PolicyLookup(policies.tenant_lockout, policies.lockout)
    if function is PolicySet.spray_for and type(policies.tenant_spray) is dict:
        return _PolicyLookup(policies.tenant_spray, policies.spray)
    return policy_for
