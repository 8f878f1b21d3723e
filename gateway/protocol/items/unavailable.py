"""The retriable code to answer when the upstream cluster cannot be reached, per API.

A broker that cannot serve an item answers it with a code the client's library retries;
the gateway, a broker to its clients, does the same when the cluster behind it fails.
Each choice below is a ``RetriableException`` in the Java client and is retried by
librdkafka for that API; the comment on each family says how.
"""

from __future__ import annotations

from collections.abc import Mapping

from kio.schema.errors import ErrorCode

from gateway.errors import UnsupportedApi
from gateway.protocol import versions as api

#
# Produce: REQUEST_TIMED_OUT. The write may have happened upstream; Java retries
# (TimeoutException) and librdkafka retries marking the message "possibly persisted";
# an idempotent producer's retry is deduplicated upstream. NOT_LEADER_OR_FOLLOWER would
# tell librdkafka "not persisted", which may be false.
_PRODUCE = ErrorCode.request_timed_out
# Partition-leader reads (and DeleteRecords, DescribeProducers): NOT_LEADER_OR_FOLLOWER,
# an InvalidMetadataException: Java refreshes metadata and retries the partition after
# backoff; librdkafka queries the leader again; the admin handlers unmap and retry.
_LEADER = ErrorCode.not_leader_or_follower
# Metadata: LEADER_NOT_AVAILABLE per named topic (InvalidMetadataException; librdkafka
# keeps the topic and asks again), no topics for all-topics; see error_response.
_METADATA = ErrorCode.leader_not_available
# Group and transaction coordinator APIs: COORDINATOR_NOT_AVAILABLE. Java's consumer,
# producer TransactionManager and admin coordinator handlers mark the coordinator
# unknown, look it up again (the gateway answers FindCoordinator itself) and retry;
# librdkafka re-queries the coordinator.
_COORDINATOR = ErrorCode.coordinator_not_available
# InitProducerId and ListTransactions: COORDINATOR_LOAD_IN_PROGRESS. An idempotent
# producer's InitProducerId has no transactional id, and Java answers
# COORDINATOR_NOT_AVAILABLE with a FindCoordinator for that (null) key; on LOAD_IN_PROGRESS
# it simply re-sends (librdkafka retries any non-fatal InitProducerId error). Java's
# ListTransactions handler retries LOAD_IN_PROGRESS but fails on NOT_AVAILABLE.
_COORDINATOR_LOADING = ErrorCode.coordinator_load_in_progress
# CreateTopics, DeleteTopics, CreatePartitions: NOT_CONTROLLER. Java's admin client
# clears the controller, refreshes metadata and retries the call. REQUEST_TIMED_OUT
# would be a lie here: librdkafka reports it as success when operation_timeout <= 0
# (the default in confluent-kafka), meaning "creation in progress".
_CONTROLLER = ErrorCode.not_controller
# The other admin APIs (configs, log dirs, cluster, elections): REQUEST_TIMED_OUT, a
# RetriableException the admin client hands to the caller (it retries no per-resource
# error), which is the truth for an alteration that may or may not have been applied.
_ADMIN = ErrorCode.request_timed_out

UNAVAILABLE: Mapping[int, ErrorCode] = {
    api.PRODUCE: _PRODUCE,
    api.FETCH: _LEADER,
    api.LIST_OFFSETS: _LEADER,
    api.OFFSET_FOR_LEADER_EPOCH: _LEADER,
    api.DELETE_RECORDS: _LEADER,
    api.DESCRIBE_PRODUCERS: _LEADER,
    api.METADATA: _METADATA,
    api.FIND_COORDINATOR: _COORDINATOR,
    api.JOIN_GROUP: _COORDINATOR,
    api.SYNC_GROUP: _COORDINATOR,
    api.HEARTBEAT: _COORDINATOR,
    api.LEAVE_GROUP: _COORDINATOR,
    api.OFFSET_COMMIT: _COORDINATOR,
    api.OFFSET_FETCH: _COORDINATOR,
    api.OFFSET_DELETE: _COORDINATOR,
    api.DESCRIBE_GROUPS: _COORDINATOR,
    api.DELETE_GROUPS: _COORDINATOR,
    api.LIST_GROUPS: _COORDINATOR,
    api.CONSUMER_GROUP_HEARTBEAT: _COORDINATOR,
    api.CONSUMER_GROUP_DESCRIBE: _COORDINATOR,
    api.ADD_PARTITIONS_TO_TXN: _COORDINATOR,
    api.ADD_OFFSETS_TO_TXN: _COORDINATOR,
    api.END_TXN: _COORDINATOR,
    api.TXN_OFFSET_COMMIT: _COORDINATOR,
    api.DESCRIBE_TRANSACTIONS: _COORDINATOR,
    api.INIT_PRODUCER_ID: _COORDINATOR_LOADING,
    api.LIST_TRANSACTIONS: _COORDINATOR_LOADING,
    api.CREATE_TOPICS: _CONTROLLER,
    api.DELETE_TOPICS: _CONTROLLER,
    api.CREATE_PARTITIONS: _CONTROLLER,
    api.ELECT_LEADERS: _ADMIN,
    api.DESCRIBE_CONFIGS: _ADMIN,
    api.ALTER_CONFIGS: _ADMIN,
    api.INCREMENTAL_ALTER_CONFIGS: _ADMIN,
    api.DESCRIBE_LOG_DIRS: _ADMIN,
    api.DESCRIBE_CLUSTER: _ADMIN,
}


def unavailable_error(api_key: int) -> ErrorCode:
    """The retriable code a broker-like gateway answers when the upstream cluster
    cannot be reached for ``api_key``, or :class:`UnsupportedApi`."""
    try:
        return UNAVAILABLE[api_key]
    except KeyError:
        raise UnsupportedApi(f"api_key={api_key} has no unavailable answer") from None
