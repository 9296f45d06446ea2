"""Where the real logs and identity-provider samples written by others live (never copied
into the project): ``$AUTHTRAIL_REALDATA``, else ``shared/realdata`` beside the checkout or
beside its parent (a CI clone sits one level deeper than a working tree). Tests that need
them skip when none exists, naming where they looked."""

from __future__ import annotations

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
_OVERRIDE = os.environ.get("AUTHTRAIL_REALDATA")
_CANDIDATES = (
    [Path(_OVERRIDE)]
    if _OVERRIDE
    else [
        _ROOT.parent / "shared" / "realdata",
        _ROOT.parent.parent / "shared" / "realdata",
        Path("/work/shared/realdata"),  # this workplace's machines
    ]
)

REALDATA = next((path for path in _CANDIDATES if path.is_dir()), _CANDIDATES[0])
