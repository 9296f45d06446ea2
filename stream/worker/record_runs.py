"""Faust delivers the input topic's records in runs: one Faust message per run of a
partition's consecutive records, not one per record.

Faust pays ~150 CPU µs for every Kafka message it hands an agent (consumer loop, conductor,
channel queue, stream, acks: ``benchmarks.faust_floor``), whatever the message holds. An
envelope of many events pays it once; a bare event (producers without the SDK, a flood of
bad input) paid it alone. This consumer keeps Faust's fetcher, flow control, rebalance
handling, acks and commits, and changes only the unit they count: a :class:`RecordRun`
carries up to :data:`MAX_RUN` records of one partition, in offset order. Acking it acks
every offset it covers, so commits advance exactly as if each record had been acked.

Installed by :func:`use_record_runs`; the agent unpacks a run with :func:`run_records`.
The consumer loop below mirrors ``faust.transport.consumer.Consumer._drain_messages`` and
``getmany`` (faust-streaming 0.15), grouping where they yield one record at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from itertools import zip_longest
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from faust.types.tuples import ConsumerMessage, ack_lock
from mode.utils.futures import notify

#: Records per run. A run is one Faust message, so the agent's ``take_events`` bound
#: (events per batch) becomes this many records per event: an envelope's scale.
MAX_RUN = 500


class RecordRun(ConsumerMessage):
    """A Faust message standing for ``records``: consecutive records of one partition.
    Its ``offset`` is the last record's, so Faust's read offsets and rebalance checks
    see where the run ends; ``first_offset`` is where it starts."""

    __slots__ = ("first_offset", "records")

    def __init__(self, tp: TP, records: Sequence[Any], generation_id: int) -> None:
        last = records[-1]
        timestamp = last.timestamp / 1000.0 if last.timestamp is not None else None
        super().__init__(
            tp.topic,
            tp.partition,
            last.offset,
            cast(float, timestamp),
            last.timestamp_type,
            None,
            None,
            None,
            None,
            0,
            0,
            tp,
            generation_id=generation_id,
        )
        self.first_offset: int = records[0].offset
        self.records: Sequence[Any] = records


def run_records(message: Any) -> Sequence[Any]:
    """The aiokafka records (``ConsumerRecord``: offset, key, value, timestamp in ms) a
    Faust message of a grouped topic stands for."""
    if not isinstance(message, RecordRun):
        raise TypeError(f"not a run of records: {type(message).__name__} (topic not grouped?)")
    return message.records


class RunConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer, delivering :class:`RecordRun` messages for the topics in
    ``grouped`` (set by :class:`RunTransport`) and single records for any other."""

    grouped: frozenset[str] = frozenset()

    def ack(self, message: Any) -> bool:
        if not isinstance(message, RecordRun):
            return bool(super().ack(message))
        # As Consumer.ack does for one offset, for each offset of the run.
        with ack_lock:
            if message.acked:
                return False
            message.acked = True
            tp = message.tp
            try:
                if not self.app.topics.acks_enabled_for(message.topic):
                    return False
                committed = self._committed_offset[tp]
                start = message.first_offset
                if committed is not None:
                    start = max(start, committed)
                acked_index = self._acked_index[tp]
                offsets = [o for o in range(start, message.offset + 1) if o not in acked_index]
                self._unacked_messages.discard(message)
                if not offsets:
                    return False
                acked_index.update(offsets)
                self._acked[tp].extend(offsets)
                self._n_acked += len(offsets)
                return True
            finally:
                notify(self._waiting_for_ack)

    def _runs(
        self, records: Mapping[TP, list[Any]], active: set[TP] | None
    ) -> Iterator[tuple[TP, Sequence[Any]]]:
        """Runs of at most MAX_RUN records (one record outside ``grouped``), taking the
        partitions in turn so that one partition's backlog does not starve the others."""
        chunked = [
            [(tp, batch[at : at + size]) for at in range(0, len(batch), size)]
            for tp, batch, size in (
                (tp, batch, MAX_RUN if tp.topic in self.grouped else 1)
                for tp, batch in records.items()
                if active is None or tp in active or tp in self._buffered_partitions
            )
        ]
        for turn in zip_longest(*chunked):
            yield from (run for run in turn if run is not None)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    self.log.dev("records fetched while flow not active: seek back")
                    try:
                        await self.perform_seek()
                    except Exception as exc:
                        self.log.warning(f"exception performing seek when flow not active {exc}")
                    continue
                generation = self.app.consumer_generation_id
                for tp in records:
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                for tp, run in self._runs(records, active):
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break
                    last_read = read_offset[tp]
                    if last_read is not None:
                        # Records already read (a seek back): dropped, as Faust drops them.
                        run = [record for record in run if record.offset >= last_read]
                        if not run:
                            continue
                    first, last = run[0].offset, run[-1].offset
                    if last_read and first - last_read > 1 and acks_enabled_for(tp.topic):
                        await self._add_gap(tp, last_read + 1, first - 1)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    message = (
                        RecordRun(tp, run, generation)
                        if tp.topic in self.grouped
                        else self._to_message(tp, run[0])
                    )
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                    read_offset[tp] = last
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class RunTransport(aiokafka_driver.Transport):
    """Faust's aiokafka transport, its consumer a :class:`RunConsumer` for ``grouped``."""

    Consumer = RunConsumer

    def __init__(self, url: Any, app: faust.App, grouped: frozenset[str]) -> None:
        super().__init__(url, app)
        self.grouped = grouped

    def create_consumer(self, callback: Any, **kwargs: Any) -> Any:
        consumer = cast(RunConsumer, super().create_consumer(callback, **kwargs))
        consumer.grouped = self.grouped
        return consumer


def use_record_runs(app: faust.App, topics: Sequence[str]) -> None:
    """Make ``app``'s consumer deliver ``topics`` in runs. Call before the app starts."""
    app.transport = RunTransport(app.conf.broker_consumer, app, frozenset(topics))
