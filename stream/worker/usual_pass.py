"""The usual events of an envelope in one C loop: authtrail/_speedups.c's ``UsualPass``.

For each event :meth:`SequencerWorker._handle` and ``_publish_sequenced`` call a dozen
functions that are in C already (decode, admission's usual case, the leaf, the offer, the
chained body, the guard); the Python frames around them cost 2 to 3 µs an event. The loop
makes the same calls without them, for as long as every step says "usual", and stops
before any event one of them leaves to Python (which then takes it through ``_handle``,
as if the loop did not exist): an unusual value, an event admission does not surely
pass, a leaf the layout cache does not know or that holds the sealed prefix, an offer
that is not the plain append (a tenant not yet known, a duplicate, a conflict, a
replay). After an event it sequenced it stops when that filled a batch, or the guard
decided something, so the worker closes the batch or publishes the decisions before the
next event, in the same order as one event at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from authtrail.schemas.codec import SINGLE_OBJECT_MARKER, SingleObjectCodec
from authtrail.stream.core import native_hashes
from authtrail.stream.core.canonical import MAGIC, SEALED_MARK
from authtrail.stream.worker.admission import Limits, admission_core
from authtrail.stream.worker.shredding import Sealer

if TYPE_CHECKING:
    from authtrail._speedups import UsualPass

try:
    from authtrail._speedups import FlatReader as _FlatReader
    from authtrail._speedups import UsualPass as _UsualPass
except ImportError:  # pragma: no cover - a build without a C compiler
    _UsualPass = None  # type: ignore[assignment,misc]

__all__ = ["DECIDED", "FILLED", "STOPPED", "UNSPLICED", "usual_pass"]

# run()'s second value: where the loop stopped (authtrail/_speedups.c's USUAL_*).
STOPPED, FILLED, DECIDED, UNSPLICED = 0, 1, 2, 3


def usual_pass(
    event_codec: object, spliced: bool, limits: Limits, sealer: Sealer | None
) -> UsualPass | None:
    """The loop for a worker whose events decode with ``event_codec`` and whose chained
    records splice their bodies (``spliced``); None when a part is not built, the events
    are not read by the flat reader, or ``sealer`` has a policy. Without one it changes
    only an event holding a value that looks sealed, whose leaf holds the sealed prefix
    as well, which the loop leaves to Python. The native offer does nothing until
    authtrail/stream/core/sequencer.py configured it, so the loop then stops at once."""
    if _UsualPass is None or not native_hashes.BUILT or not spliced:
        return None
    if not isinstance(event_codec, SingleObjectCodec):
        return None
    reader = event_codec.flat_reader
    if not isinstance(reader, _FlatReader):  # the generated Python reader, or none
        return None
    if sealer is not None and not sealer.seals_nothing:
        return None
    admission = admission_core(limits)
    if admission is None:
        return None
    header = SINGLE_OBJECT_MARKER + event_codec.reader_fingerprint
    return _UsualPass(
        reader, admission, header, MAGIC, SEALED_MARK,
        native_hashes.sequencer_offer,
    )  # fmt: skip
