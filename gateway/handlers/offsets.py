"""ListOffsets and OffsetForLeaderEpoch: per-partition lookups at the leaders."""

from __future__ import annotations

from typing import Any

from gateway.handlers.fanout import partitioned
from gateway.handlers.routing import PartitionedApi
from gateway.protocol.codec import Request
from gateway.session import ClientSession

LIST_OFFSETS = PartitionedApi(
    request_topics="topics",
    request_partitions="partitions",
    request_partition="partition_index",
    response_topics="topics",
    response_partitions="partitions",
    response_partition="partition_index",
    response_topic_class="ListOffsetsTopicResponse",
    response_partition_class="ListOffsetsPartitionResponse",
    error_fields=lambda: {
        "timestamp": -1,
        "offset": -1,
        "leader_epoch": -1,
        "old_style_offsets": (),
    },
)

OFFSET_FOR_LEADER_EPOCH = PartitionedApi(
    request_topics="topics",
    request_partitions="partitions",
    request_partition="partition",
    response_topics="topics",
    response_partitions="partitions",
    response_partition="partition",
    response_topic_class="OffsetForLeaderTopicResult",
    response_partition_class="EpochEndOffset",
    error_fields=lambda: {"leader_epoch": -1, "end_offset": -1},
)


async def handle_list_offsets(session: ClientSession, request: Request) -> Any:
    return await partitioned(session, request, LIST_OFFSETS, "list_offsets")


async def handle_offset_for_leader_epoch(session: ClientSession, request: Request) -> Any:
    return await partitioned(session, request, OFFSET_FOR_LEADER_EPOCH, "offset_for_leader_epoch")
