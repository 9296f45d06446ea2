"""What emits events: the SDK a service embeds (:mod:`authtrail.producers.sdk`, its own
light distribution ``authtrail-producer``), and the adapters that turn other systems' logs
into events — files and identity providers (ingest), syslog/sshd, demo traffic (loadgen)."""
