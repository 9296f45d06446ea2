"""Read a brute-force policy file (JSON or TOML) into a
:class:`~authtrail.stream.detection.lockout_policy.PolicySet`.

The file read is the only I/O; parsing and validation are in
:mod:`authtrail.stream.detection.lockout_policy`.
"""

from __future__ import annotations

from pathlib import Path

from authtrail.errors import ConfigurationError
from authtrail.stream.detection.lockout_policy import PolicySet, parse_policy_text

__all__ = ["load_policy_file"]


def load_policy_file(path: str | Path) -> PolicySet:
    """Load the policy file at ``path``; its format follows the suffix (``.json``/``.toml``).

    Raises :class:`ConfigurationError` for another suffix, an unreadable file, or
    content :func:`~authtrail.stream.detection.lockout_policy.parse_policy_text` refuses.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise ConfigurationError(f"policy file {path} must end in .json or .toml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read policy file {path}: {exc}") from exc
    try:
        return parse_policy_text(text, format="json" if suffix == ".json" else "toml")
    except ConfigurationError as exc:
        raise ConfigurationError(f"policy file {path}: {exc}") from exc
