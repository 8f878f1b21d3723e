"""Hypothesis strategies and helpers for Kafka requests, shared by the codec and fuzz tests."""

from __future__ import annotations

import datetime
from typing import Any

from hypothesis import strategies as st
from kio.index import load_request_schema

from gateway.protocol import codec

correlation_ids = st.integers(min_value=-(2**31), max_value=2**31 - 1)
client_ids = st.none() | st.text(max_size=40)
topic_names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
    min_size=1,
    max_size=40,
)
partition_indexes = st.integers(min_value=0, max_value=2**31 - 1)
record_batches = st.none() | st.binary(max_size=256)


def request_frame(body: Any, correlation_id: int = 1, client_id: str | None = "client") -> bytes:
    """A request as a client sends it, without the size prefix."""
    header = codec.encode_request_header(
        body.__api_key__, body.__version__, correlation_id, client_id
    )
    return header + codec.encode_body(body)


@st.composite
def produce_requests(draw: st.DrawFn, version: int) -> Any:
    """Produce requests with opaque record bytes (kio keeps batches as bytes)."""
    cls = load_request_schema(0, version)
    module = codec.entity_module(cls)
    topics = tuple(
        codec.build(
            module.TopicProduceData,
            name=name,
            partition_data=tuple(
                module.PartitionProduceData(index=index, records=draw(record_batches))
                for index in draw(st.lists(partition_indexes, max_size=4, unique=True))
            ),
        )
        for name in draw(st.lists(topic_names, max_size=3, unique=True))
    )
    return codec.build(
        cls,
        transactional_id=draw(st.none() | topic_names),
        acks=draw(st.sampled_from([-1, 0, 1])),
        timeout=datetime.timedelta(milliseconds=draw(st.integers(0, 2**31 - 1))),
        topic_data=topics,
    )


def request_bodies(api_key: int, version: int) -> st.SearchStrategy[Any]:
    """Any valid request body of one API version."""
    if api_key == 0:
        return produce_requests(version)
    return st.from_type(load_request_schema(api_key, version))
