"""Realistic multi-tenant authentication traffic, deterministic per seed (pure; no I/O).

A seeded model of N tenants with U users each, using several services (``sso``, ``vpn``,
``admin-portal``, ``api-gateway``, ``sshd``). Users log in (some with MFA), get, refresh
and revoke tokens, change or reset passwords, log out or let sessions expire; a
configurable share of events fails; optional brute-force bursts have one IP hammer one
user with LOGIN_FAILED at a fixed rate, so a lockout detector has something to find.
Same config and seed, same events: ids come from the seeded generator and
``occurred_at`` from a simulated clock. :mod:`authtrail.producers.loadgen` sends them to Kafka.

Addresses are from the documentation ranges of RFC 5737: users connect from
192.0.2.0/24 and 198.51.100.0/24, attackers from 203.0.113.0/24. Host names are under
``example.com`` (RFC 2606). Burst events carry ``attributes["loadgen.scenario"] ==
"brute_force"`` and ``attributes["loadgen.burst"]`` (the burst's number): ground truth
for tests and detectors.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from authtrail.errors import InvalidArgumentError

__all__ = ["BRUTE_FORCE", "SERVICES", "TrafficConfig", "generate_events", "tenant_ids"]

SERVICES = ("sso", "vpn", "admin-portal", "api-gateway", "sshd")
BRUTE_FORCE = "brute_force"
_TENANT_NAMES = ("acme", "globex", "initech", "umbrella", "hooli", "soylent", "wonka",
                 "tyrell", "cyberdyne", "oscorp")  # fmt: skip
_FIRST = ("ada", "alan", "grace", "linus", "margaret", "dennis", "barbara", "ken", "radia",
          "edsger", "frances", "tim")  # fmt: skip
_LAST = ("lovelace", "turing", "hopper", "torvalds", "hamilton", "ritchie", "liskov",
         "perlman", "dijkstra", "allen")  # fmt: skip
_BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
)
_ATTACKER_AGENTS = ("python-requests/2.31.0", "Mozilla/5.0 (Hydra)", "SSH-2.0-libssh2_1.10.0")


@dataclass(frozen=True)
class _Service:
    """How a service authenticates: methods, MFA likelihood, clients, whether it issues tokens."""

    auth_methods: tuple[str, ...]
    mfa_share: float
    user_agents: tuple[str, ...]
    client_id: str | None = None
    tokens: bool = False
    password_logins: bool = True  # can be brute-forced with passwords


_PROFILES: Mapping[str, _Service] = {
    "sso": _Service(("password", "webauthn", "oidc", "saml"), 0.5, _BROWSERS, "portal", True),
    "vpn": _Service(("certificate", "password"), 0.7, ("OpenVPN/2.6.10", "GlobalProtect/6.2.1")),
    "admin-portal": _Service(("password", "webauthn"), 1.0, _BROWSERS, "admin-console", True),
    "api-gateway": _Service(
        ("oauth2",),
        0.0,
        ("python-requests/2.32.3", "curl/8.8.0", "okhttp/4.12.0", "Go-http-client/2.0"),
        "billing-api",
        True,
        password_logins=False,
    ),
    "sshd": _Service(
        ("publickey", "password", "keyboard-interactive"),
        0.2,
        ("SSH-2.0-OpenSSH_9.6p1", "SSH-2.0-PuTTY_Release_0.81"),
    ),
}
_GENERIC = _Service(("password", "oidc"), 0.3, _BROWSERS)
_MFA_FACTORS = ("totp", "push", "webauthn", "sms")
# invalid_credentials three times: by far the most common reason.
_LOGIN_FAILURE_REASONS = ("invalid_credentials", "invalid_credentials", "invalid_credentials",
                          "user_not_found", "account_disabled", "expired_password")  # fmt: skip
# Standalone failures and how often each occurs relative to the others.
_FAILURE_KINDS = {"LOGIN_FAILED": 6.0, "MFA_FAILURE": 2.0, "TOKEN_REFRESHED": 1.0,
                  "PASSWORD_CHANGED": 0.5, "PASSWORD_RESET_COMPLETED": 0.5}  # fmt: skip


@dataclass(frozen=True)
class TrafficConfig:
    """Shape of the generated traffic.

    ``burst_every`` starts a brute-force burst after every that many ordinary events (0:
    never); each burst is ``burst_size`` LOGIN_FAILED events at ``burst_rate`` per second
    of simulated time, interleaved with ordinary traffic. ``failure_share`` is the share of
    ordinary events with outcome FAILURE. Ordinary events arrive at ``events_per_second``
    on a simulated clock starting at ``start_us`` (microseconds since the epoch).

    Raises :class:`InvalidArgumentError` when a value is out of range.
    """

    tenants: int = 5
    users: int = 50
    failure_share: float = 0.1
    burst_every: int = 0
    burst_size: int = 30
    burst_rate: float = 5.0
    events_per_second: float = 100.0
    start_us: int = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
    services: tuple[str, ...] = SERVICES

    def __post_init__(self) -> None:
        problems = [
            f"{name} {value!r} must be {rule}"
            for name, value, ok, rule in (
                ("tenants", self.tenants, self.tenants >= 1, ">= 1"),
                ("users", self.users, self.users >= 1, ">= 1"),
                ("failure_share", self.failure_share, 0 <= self.failure_share <= 1, "in [0, 1]"),
                ("burst_every", self.burst_every, self.burst_every >= 0, ">= 0"),
                ("burst_size", self.burst_size, self.burst_size >= 1, ">= 1"),
                ("burst_rate", self.burst_rate, self.burst_rate > 0, "> 0"),
                ("events_per_second", self.events_per_second, self.events_per_second > 0, "> 0"),
                ("services", self.services, len(self.services) >= 1, "non-empty"),
            )
            if not ok
        ]
        if problems:
            raise InvalidArgumentError("; ".join(problems))


def tenant_ids(count: int) -> list[str]:
    """The tenant ids a config with ``count`` tenants uses, in order."""
    names = len(_TENANT_NAMES)
    return [
        _TENANT_NAMES[i % names] + (f"-{i // names}" if i >= names else "") for i in range(count)
    ]


def generate_events(config: TrafficConfig, seed: int) -> Iterator[dict[str, Any]]:
    """Yield AuthEvent dicts forever, in ``occurred_at`` order; take as many as you need.

    Deterministic: equal ``config`` and ``seed`` yield equal sequences. Events hold only
    the fields that are set; the codec fills the schema's defaults.
    """
    return _Traffic(config, seed).events()


@dataclass
class _User:
    tenant_id: str
    user_id: str
    user_name: str
    home_ip: str
    session_id: str | None = None
    service: str = ""
    user_agent: str = ""
    token_id: str | None = None


@dataclass
class _Burst:
    number: int
    user: _User
    service: str
    client_ip: str
    user_agent: str
    next_us: int
    remaining: int


class _Traffic:
    """The generator's state: users and their sessions, queued flow steps, open bursts."""

    def __init__(self, config: TrafficConfig, seed: int) -> None:
        self._config = config
        self._rng = random.Random(seed)
        self._tenants = tenant_ids(config.tenants)
        # Zipf-like tenant sizes: a few large customers, a long tail.
        self._tenant_weights = [1.0 / (rank + 1) for rank in range(config.tenants)]
        self._users = {
            tenant: [self._new_user(tenant, index) for index in range(config.users)]
            for tenant in self._tenants
        }
        self._services = list(config.services)
        self._service_weights = [
            {"sso": 35, "api-gateway": 25, "vpn": 15, "sshd": 15}.get(name, 10)
            for name in config.services
        ]
        self._bursts: list[_Burst] = []
        self._burst_count = 0
        self._follow_ups: deque[dict[str, Any]] = deque()
        self._gap_mean_us = 1e6 / config.events_per_second
        self._burst_gap_us = max(1, round(1e6 / config.burst_rate))

    def _new_user(self, tenant: str, index: int) -> _User:
        rng = self._rng
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        prefix = rng.choice(("192.0.2", "198.51.100"))
        return _User(
            tenant_id=tenant,
            user_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            user_name=f"{first}.{last}{index}",
            home_ip=f"{prefix}.{rng.randrange(1, 255)}",
        )

    def events(self) -> Iterator[dict[str, Any]]:
        config, rng = self._config, self._rng
        clock = config.start_us
        ordinary = 0
        next_ordinary = clock + round(rng.expovariate(1.0) * self._gap_mean_us)
        while True:
            # Burst attempts and ordinary events merge by simulated time, so occurred_at
            # never decreases.
            burst = min(self._bursts, key=lambda b: (b.next_us, b.number), default=None)
            if burst is not None and burst.next_us <= next_ordinary:
                yield self._burst_event(burst)
                continue
            clock = next_ordinary
            next_ordinary = clock + round(rng.expovariate(1.0) * self._gap_mean_us)
            ordinary += 1
            if config.burst_every and ordinary % config.burst_every == 0:
                self._start_burst(clock)
            if rng.random() < config.failure_share:
                yield self._failure(clock)
            elif self._follow_ups:
                yield {**self._follow_ups.popleft(), "occurred_at": clock}
            else:
                yield self._start_success_flow(clock)

    # -- building blocks --------------------------------------------------------------

    def _id(self, prefix: str = "") -> str:
        return prefix + f"{self._rng.getrandbits(96):024x}"

    def _event(
        self, user: _User, event_type: str, outcome: str, at: int, service: str, **fields: Any
    ) -> dict[str, Any]:
        rng = self._rng
        event: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "tenant_id": user.tenant_id,
            "event_type": event_type,
            "outcome": outcome,
            "occurred_at": at,
            "user_id": user.user_id,
            "user_name": user.user_name,
            "service": service,
            "host": f"{service}-{rng.randrange(3)}.{user.tenant_id}.example.com",
            "realm": user.tenant_id,
            "client_ip": user.home_ip if rng.random() < 0.95 else self._roaming_ip(),
            "user_agent": user.user_agent or rng.choice(self._profile(service).user_agents),
            "correlation_id": self._id("req-"),
        }
        event.update(fields)
        return {name: value for name, value in event.items() if value is not None}

    def _roaming_ip(self) -> str:
        return f"{self._rng.choice(('192.0.2', '198.51.100'))}.{self._rng.randrange(1, 255)}"

    def _profile(self, service: str) -> _Service:
        return _PROFILES.get(service, _GENERIC)

    def _pick_user(self) -> _User:
        tenant = self._rng.choices(self._tenants, self._tenant_weights)[0]
        return self._rng.choice(self._users[tenant])

    def _pick_service(self) -> str:
        return self._rng.choices(self._services, self._service_weights)[0]

    # -- ordinary traffic -------------------------------------------------------------

    def _start_success_flow(self, at: int) -> dict[str, Any]:
        """Return the first event of a new successful flow; queue its later steps."""
        user = self._pick_user()
        rng = self._rng
        if user.session_id is None:
            steps = self._reset_flow(user) if rng.random() < 0.05 else self._login_flow(user)
        else:
            steps = self._session_step(user)
        first, *later = steps
        self._follow_ups.extend(later)
        return {**first, "occurred_at": at}

    def _login_flow(self, user: _User) -> list[dict[str, Any]]:
        rng = self._rng
        service = self._pick_service()
        profile = self._profile(service)
        user.service = service
        user.user_agent = rng.choice(profile.user_agents)
        user.session_id = self._id("sess-")
        method = rng.choice(profile.auth_methods)
        steps = []
        factor = None
        if rng.random() < profile.mfa_share:
            factor = rng.choice(_MFA_FACTORS)
            for kind in ("MFA_CHALLENGE", "MFA_SUCCESS"):
                steps.append(self._event(user, kind, "SUCCESS", 0, service, mfa_factor=factor))
        login = self._event(
            user,
            "LOGIN",
            "SUCCESS",
            0,
            service,
            auth_method=method,
            mfa_factor=factor,
            session_id=user.session_id,
            client_id=profile.client_id,
        )
        if service == "api-gateway":
            login["grant_type"] = "client_credentials"
        steps.append(login)
        if profile.tokens:
            steps.append(self._token_event(user, "TOKEN_ISSUED", "SUCCESS", "authorization_code"))
        return steps

    def _reset_flow(self, user: _User) -> list[dict[str, Any]]:
        service = "sso" if "sso" in self._services else self._pick_service()
        return [
            self._event(
                user, "PASSWORD_RESET_REQUESTED", "SUCCESS", 0, service, auth_method="email"
            )
            | {"message": "Password reset link sent"},
            self._event(user, "PASSWORD_RESET_COMPLETED", "SUCCESS", 0, service),
        ]

    def _session_step(self, user: _User) -> list[dict[str, Any]]:
        rng = self._rng
        tokens = self._profile(user.service).tokens
        options = [("LOGOUT", 2.0), ("SESSION_EXPIRED", 1.0), ("PASSWORD_CHANGED", 0.3)]
        if tokens:
            options += [("TOKEN_REFRESHED", 4.0), ("TOKEN_ISSUED", 2.0), ("TOKEN_REVOKED", 0.5)]
        kind = rng.choices([k for k, _ in options], [w for _, w in options])[0]
        if kind.startswith("TOKEN_"):
            grant = {"TOKEN_REFRESHED": "refresh_token", "TOKEN_ISSUED": "authorization_code"}
            return [self._token_event(user, kind, "SUCCESS", grant.get(kind))]
        event = self._event(user, kind, "SUCCESS", 0, user.service, session_id=user.session_id)
        if kind in ("LOGOUT", "SESSION_EXPIRED"):
            user.session_id, user.token_id, user.user_agent = None, None, ""
        return [event]

    def _token_event(
        self, user: _User, kind: str, outcome: str, grant_type: str | None
    ) -> dict[str, Any]:
        service = user.service or self._pick_service()
        if kind != "TOKEN_REVOKED" and outcome == "SUCCESS":
            user.token_id = self._id("tok_")
        scopes = "openid profile email" if service != "api-gateway" else "invoices:read"
        return self._event(
            user,
            kind,
            outcome,
            0,
            service,
            session_id=user.session_id,
            token_id=user.token_id or self._id("tok_"),
            grant_type=grant_type,
            client_id=self._profile(service).client_id,
            scopes=scopes,
        )

    def _failure(self, at: int) -> dict[str, Any]:
        rng = self._rng
        user = self._pick_user()
        kind = rng.choices(list(_FAILURE_KINDS), list(_FAILURE_KINDS.values()))[0]
        service = user.service or self._pick_service()
        if kind == "TOKEN_REFRESHED" and self._profile(user.service).tokens:
            event = self._token_event(user, kind, "FAILURE", "refresh_token")
            return {**event, "occurred_at": at, "failure_reason": "invalid_grant"}
        if kind == "MFA_FAILURE":
            factor = rng.choice(_MFA_FACTORS)
            reason = rng.choice(("invalid_otp", "push_denied", "timeout"))
            return self._event(user, kind, "FAILURE", at, service, mfa_factor=factor,
                               failure_reason=reason)  # fmt: skip
        if kind in ("PASSWORD_CHANGED", "PASSWORD_RESET_COMPLETED"):
            reason = "password_policy" if kind == "PASSWORD_CHANGED" else "expired_reset_link"
            return self._event(user, kind, "FAILURE", at, service, failure_reason=reason)
        # LOGIN_FAILED, and token refreshes for users without a token service.
        service = self._pick_service()
        reason = rng.choice(_LOGIN_FAILURE_REASONS)
        method = rng.choice(self._profile(service).auth_methods)
        event = self._event(user, "LOGIN_FAILED", "FAILURE", at, service, failure_reason=reason,
                            auth_method=method)  # fmt: skip
        if reason == "user_not_found":  # a typo: the name matches no account
            event.pop("user_id")
            event["user_name"] = user.user_name.replace(".", "")
        return event

    # -- brute force ------------------------------------------------------------------

    def _start_burst(self, at: int) -> None:
        rng = self._rng
        targets = [s for s in self._services if self._profile(s).password_logins]
        self._burst_count += 1
        self._bursts.append(
            _Burst(
                number=self._burst_count,
                user=self._pick_user(),
                service=rng.choice(targets or self._services),
                client_ip=f"203.0.113.{rng.randrange(1, 255)}",
                user_agent=rng.choice(_ATTACKER_AGENTS),
                next_us=at + 1,
                remaining=self._config.burst_size,
            )
        )

    def _burst_event(self, burst: _Burst) -> dict[str, Any]:
        event = self._event(
            burst.user,
            "LOGIN_FAILED",
            "FAILURE",
            burst.next_us,
            burst.service,
            client_ip=burst.client_ip,
            user_agent=burst.user_agent,
            auth_method="password",
            failure_reason="invalid_credentials",
            attributes={"loadgen.scenario": BRUTE_FORCE, "loadgen.burst": str(burst.number)},
        )
        burst.remaining -= 1
        burst.next_us += self._burst_gap_us
        if burst.remaining == 0:
            self._bursts.remove(burst)
        return event
