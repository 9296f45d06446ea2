"""Kafka's partitioner, checked against Kafka's own test vectors."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from authtrail.producers.sdk.partitioning import murmur2, tenant_partition
from tests.integration.test_producer import murmur2 as reference_murmur2


def test_murmur2_matches_kafkas_test_vectors() -> None:
    # clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert {key: murmur2(key) for key in vectors} == vectors


@given(st.binary(max_size=40))
def test_murmur2_agrees_with_the_tests_independent_transcription(data: bytes) -> None:
    assert murmur2(data) == reference_murmur2(data)


def test_tenant_partition_is_positive_modulo() -> None:
    assert {tenant_partition(f"t{n}", 4) for n in range(200)} == {0, 1, 2, 3}
    assert all(tenant_partition("acme", p) == 0 for p in [1])
