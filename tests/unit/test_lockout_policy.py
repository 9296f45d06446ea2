"""Policy files: Keycloak's defaults, file defaults, per-tenant overrides, refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from authtrail.errors import ConfigurationError, InvalidArgumentError
from authtrail.policy_file import load_policy_file
from authtrail.stream.detection.lockout_policy import (
    KEYCLOAK_FIELD_NAMES,
    LockoutPolicy,
    PolicySet,
    SprayPolicy,
    parse_policy_text,
    policy_set_from_mapping,
)

TOML = """
allowed_lateness_seconds = 2.5

[lockout]
max_login_failures = 5
wait_increment_seconds = 30

[spray]
distinct_users = 20

[tenants.acme.lockout]
permanentLockout = true
maxTemporaryLockouts = 2
bruteForceStrategy = "linear"

[tenants.globex.spray]
enabled = false
"""


def test_empty_document_is_keycloaks_defaults() -> None:
    policies = policy_set_from_mapping({})
    assert policies == PolicySet()
    assert policies.lockout_for("anyone") == LockoutPolicy()
    assert policies.spray_for("anyone") == SprayPolicy()
    assert policies.allowed_lateness_seconds == 5.0


def test_toml_overrides_layer_over_defaults() -> None:
    policies = parse_policy_text(TOML, format="toml")
    assert policies.allowed_lateness_seconds == 2.5
    plain = policies.lockout_for("initech")
    assert (plain.max_login_failures, plain.wait_increment_seconds) == (5, 30)
    assert plain.failure_reset_time_seconds == 43_200  # untouched: Keycloak's
    acme = policies.lockout_for("acme")
    # The tenant's table applies over the file's [lockout], not over Keycloak's defaults.
    assert (acme.max_login_failures, acme.wait_increment_seconds) == (5, 30)
    assert (acme.permanent_lockout, acme.max_temporary_lockouts, acme.strategy) == (
        True,
        2,
        "LINEAR",
    )
    assert acme.mode == "permanent_after_temporary"
    assert policies.spray_for("acme").distinct_users == 20
    assert policies.spray_for("globex") == SprayPolicy(enabled=False, distinct_users=20)
    assert policies.lockout_for("globex") == plain


def test_json_is_the_same_document() -> None:
    document = {
        "lockout": {"failureFactor": 3},
        "tenants": {"acme": {"lockout": {"max_login_failures": 7}}},
    }
    policies = parse_policy_text(json.dumps(document), format="json")
    assert policies.lockout_for("other").max_login_failures == 3
    assert policies.lockout_for("acme").max_login_failures == 7


def test_every_keycloak_realm_name_is_accepted() -> None:
    realm_export = {
        "bruteForceProtected": True,
        "permanentLockout": False,
        "maxTemporaryLockouts": 0,
        "bruteForceStrategy": "MULTIPLE",
        "failureFactor": 30,
        "waitIncrementSeconds": 60,
        "maxFailureWaitSeconds": 900,
        "quickLoginCheckMilliSeconds": 1000,
        "minimumQuickLoginWaitSeconds": 60,
        "maxDeltaTimeSeconds": 43200,
    }
    assert set(realm_export) == set(KEYCLOAK_FIELD_NAMES)
    # A Keycloak realm with its default settings is exactly LockoutPolicy().
    assert policy_set_from_mapping({"lockout": realm_export}).lockout == LockoutPolicy()


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ({"lockout": {"max_login_failure": 3}}, "unknown setting 'max_login_failure'"),
        ({"lockout": {"failureFactor": 3, "max_login_failures": 4}}, "given twice"),
        ({"lockout": {"max_login_failures": "3"}}, "must be an integer"),
        ({"lockout": {"max_login_failures": True}}, "must be an integer"),
        ({"lockout": {"permanent_lockout": 1}}, "must be true or false"),
        ({"lockout": {"max_login_failures": 0}}, "max_login_failures must be >= 1"),
        ({"lockout": {"wait_increment_seconds": -1}}, "must be >= 0"),
        ({"lockout": {"strategy": "EXPONENTIAL"}}, "strategy must be"),
        ({"spray": {"distinct_users": 1}}, "distinct_users must be >= 2"),
        ({"lockout": []}, "lockout must be a table"),
        ({"tenants": {"bad tenant!": {}}}, "not a valid tenant id"),
        ({"tenants": {"acme": {"lockouts": {}}}}, "tenants.acme: unknown keys"),
        ({"tenants": {"acme": {"lockout": {"nope": 1}}}}, "tenants.acme.lockout"),
        ({"allowed_lateness_seconds": -1}, "allowed_lateness_seconds"),
        ({"allowed_lateness_seconds": True}, "allowed_lateness_seconds"),
        ({"lockouts": {}}, "unknown keys ['lockouts']"),
        ([], "policy must be a table"),
    ],
)
def test_bad_documents_are_refused_naming_the_key(document: Any, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(complaint)):
        policy_set_from_mapping(document)


def test_bad_text_and_format_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        parse_policy_text("[lockout\n", format="toml")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        parse_policy_text("{", format="json")
    with pytest.raises(ConfigurationError, match="format"):
        parse_policy_text("{}", format="yaml")  # type: ignore[arg-type]


def test_policies_check_themselves() -> None:
    with pytest.raises(InvalidArgumentError):
        LockoutPolicy(max_login_failures=0)
    with pytest.raises(InvalidArgumentError):
        SprayPolicy(window_seconds=0)


def test_load_policy_file(tmp_path: Path) -> None:
    toml_path = tmp_path / "policy.toml"
    toml_path.write_text(TOML, encoding="utf-8")
    assert load_policy_file(toml_path) == parse_policy_text(TOML, format="toml")
    json_path = tmp_path / "policy.JSON"
    json_path.write_text('{"lockout": {"failureFactor": 4}}', encoding="utf-8")
    assert load_policy_file(json_path).lockout.max_login_failures == 4
    with pytest.raises(ConfigurationError, match=r"must end in \.json or \.toml"):
        load_policy_file(tmp_path / "policy.yaml")
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_policy_file(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[lockout]\nfailureFactor = 0\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=re.escape(str(broken))):
        load_policy_file(broken)


def test_numbers_beyond_a_java_int_are_refused() -> None:
    """Keycloak's settings are Java ints; larger ones would take the detectors' times
    beyond 64-bit microseconds."""
    with pytest.raises(InvalidArgumentError, match="wait_increment_seconds must be <= 2147483647"):
        LockoutPolicy(wait_increment_seconds=2**31)
    with pytest.raises(InvalidArgumentError, match="window_seconds must be <= 2147483647"):
        SprayPolicy(window_seconds=2**31)
    assert LockoutPolicy(max_failure_wait_seconds=2**31 - 1).max_failure_wait_seconds == 2**31 - 1
    with pytest.raises(ConfigurationError, match="allowed_lateness_seconds"):
        policy_set_from_mapping({"allowed_lateness_seconds": float("inf")})
    with pytest.raises(ConfigurationError, match="allowed_lateness_seconds"):
        policy_set_from_mapping({"allowed_lateness_seconds": 2**31})
