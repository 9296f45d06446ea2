"""The Faust worker: the app and its agents, Kafka in and out, recovery, snapshots and
fencing, and the pure steps it runs on each batch (admission, sealing, chained batches)."""
