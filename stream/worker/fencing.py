"""Fencing a worker that lost its partition but keeps writing (long GC pause, network
partition): writer epochs and claims. Pure.

A worker that takes over output partition ``p`` first recovers from it, then appends a
*claim* with epoch ``1 +`` the highest epoch claimed before in ``p``, and writes every
later record with that epoch. Readers of ``p`` (recovery, the sink) keep a
:class:`Fence` in offset order: a claim raises it; a record below it was written by a
worker that no longer owns ``p`` and is ignored. Kafka orders everything written to one
partition, so "after the claim" is well defined whatever the writers' clocks say.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Fence:
    """The current writer epoch of one partition, as seen by a reader in offset order."""

    epoch: int = 0

    def claim(self, epoch: int) -> None:
        """A claim was read: from now on only writers of ``epoch`` or later count."""
        self.epoch = max(self.epoch, epoch)

    def admits(self, epoch: int) -> bool:
        """Whether a record written with ``epoch`` comes from a current owner."""
        return epoch >= self.epoch
