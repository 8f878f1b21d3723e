"""The items of every API the gateway serves, per version range.

Read each entry as Kafka's ``<Api>Request.getErrorResponse`` for that version: which
request lists are answered, by which response entities, echoing which fields, with
which values besides the error. ``{0: ..., 8: ...}`` means "versions 0-7, then 8 on".
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.protocol import versions as api
from gateway.protocol.items.model import (
    A_GROUP,
    A_TOPIC,
    A_TRANSACTIONAL_ID,
    NAME,
    NAME_OR_ID,
    SELF,
    THE_GROUP,
    THE_TOPIC,
    THE_TRANSACTIONAL_ID,
    Api,
    Items,
    config_resource,
    coordinator_key,
    listed,
    one_group,
    only_named,
    partitions,
    topics,
)

_TRANSACTIONAL = {"transactional_id": THE_TRANSACTIONAL_ID}
_NO_NODE = {"node_id": -1, "host": "", "port": -1}
_CONFIG_RESOURCE = {"resource_type": "resource_type", "resource_name": "resource_name"}

_ADD_PARTITIONS_TOPICS = topics(
    "v3_and_below_topics",
    "results_by_topic_v3_and_below",
    "AddPartitionsToTxnTopicResult",
    partitions(
        "partitions",
        "results_by_partition",
        "AddPartitionsToTxnPartitionResult",
        ("partition_index", SELF),
        error="partition_error_code",
    ),
)
_ALTER_CONFIGS = Api(
    items=(
        Items(
            "resources",
            "responses",
            "AlterConfigsResourceResponse",
            echo=_CONFIG_RESOURCE,
            error="error_code",
            names=config_resource,
        ),
    ),
)

APIS: Mapping[int, Mapping[int, Api]] = {
    api.PRODUCE: {
        0: Api(
            items=(
                topics(
                    "topic_data",
                    "responses",
                    "TopicProduceResponse",
                    partitions(
                        "partition_data",
                        "partition_responses",
                        "PartitionProduceResponse",
                        ("index", "index"),
                        base_offset=-1,
                        log_append_time=None,
                        log_start_offset=-1,
                    ),
                    echo=NAME_OR_ID,
                ),
            ),
            names=_TRANSACTIONAL,
        ),
    },
    # The top-level error_code (v7+) stays NONE, unlike getErrorResponse: Java's
    # FetchSessionHandler drops every partition of an answer with a top-level error, so
    # it would neither surface a partition's TOPIC_AUTHORIZATION_FAILED nor refresh
    # metadata on NOT_LEADER_OR_FOLLOWER; a broker answers failed partitions (not
    # leader, not authorized) this way. Session 0: the gateway's fetches are sessionless.
    api.FETCH: {
        0: Api(
            items=(
                topics(
                    "topics",
                    "responses",
                    "FetchableTopicResponse",
                    partitions(
                        "partitions",
                        "partitions",
                        "PartitionData",
                        ("partition_index", "partition"),
                        high_watermark=-1,
                        last_stable_offset=-1,
                        log_start_offset=-1,
                        aborted_transactions=None,
                        preferred_read_replica=-1,
                        records=b"",  # an empty record set, as a broker sends with an error
                    ),
                    echo={"topic": "topic", "topic_id": "topic_id"},
                ),
            ),
            fill={"session_id": 0},
        ),
    },
    api.LIST_OFFSETS: {
        0: Api(
            items=(
                topics(
                    "topics",
                    "topics",
                    "ListOffsetsTopicResponse",
                    partitions(
                        "partitions",
                        "partitions",
                        "ListOffsetsPartitionResponse",
                        timestamp=-1,
                        offset=-1,
                        leader_epoch=-1,
                    ),
                ),
            ),
        ),
    },
    # Named topics get the error and no partitions; all topics (null, or [] in v0) get
    # none. No broker is listed: the caller adds the gateway's own (see error_response).
    # The v13 top-level error_code stays NONE: it exists for REBOOTSTRAP_REQUIRED, and
    # librdkafka drops the whole answer on it, topic errors included.
    api.METADATA: {
        0: Api(
            items=(
                Items(
                    "topics",
                    "topics",
                    "MetadataResponseTopic",
                    echo=NAME_OR_ID,
                    error="error_code",
                    fill={"is_internal": False, "partitions": ()},
                    names=A_TOPIC,
                ),
            ),
            fill={"brokers": (), "controller_id": -1, "cluster_id": None},
        ),
    },
    api.OFFSET_COMMIT: {
        0: Api(
            items=(
                topics(
                    "topics",
                    "topics",
                    "OffsetCommitResponseTopic",
                    partitions("partitions", "partitions", "OffsetCommitResponsePartition"),
                    echo=NAME_OR_ID,
                ),
            ),
            names={"group_id": THE_GROUP},
        ),
    },
    # v0-1 answer per partition, v2-7 with the group's error alone, v8+ per group.
    api.OFFSET_FETCH: {
        0: Api(
            items=(
                topics(
                    "topics",
                    "topics",
                    "OffsetFetchResponseTopic",
                    partitions(
                        "partition_indexes",
                        "partitions",
                        "OffsetFetchResponsePartition",
                        ("partition_index", SELF),
                        committed_offset=-1,
                        committed_leader_epoch=-1,
                        metadata="",
                    ),
                ),
            ),
            names={"group_id": THE_GROUP},
        ),
        2: Api(
            items=(only_named("topics"),),
            error=True,
            fill={"topics": ()},
            names={"group_id": THE_GROUP},
        ),
        8: Api(
            items=(
                Items(
                    "groups",
                    "groups",
                    "OffsetFetchResponseGroup",
                    echo={"group_id": "group_id"},
                    error="error_code",
                    fill={"topics": ()},
                    children=(only_named("topics"),),
                    names=A_GROUP,
                ),
            ),
        ),
    },
    api.FIND_COORDINATOR: {
        0: Api(error=True, fill=_NO_NODE, names={"key": coordinator_key}),
        4: Api(
            items=(
                Items(
                    "coordinator_keys",
                    "coordinators",
                    "Coordinator",
                    echo={"key": SELF},
                    error="error_code",
                    fill=_NO_NODE,
                    names=coordinator_key,
                ),
            ),
        ),
    },
    # UNKNOWN_MEMBER_ID is ""; the protocol name is null where nullable (v7+), else "".
    api.JOIN_GROUP: {
        0: one_group(generation_id=-1, protocol_name=None, leader="", member_id="", members=()),
    },
    api.HEARTBEAT: {0: one_group()},
    api.LEAVE_GROUP: {
        0: one_group(),
        3: Api(
            items=(
                Items(
                    "members",
                    "members",
                    "MemberResponse",
                    echo={"member_id": "member_id", "group_instance_id": "group_instance_id"},
                    error="error_code",
                ),
            ),
            error=True,
            names={"group_id": THE_GROUP},
        ),
    },
    api.SYNC_GROUP: {0: one_group(assignment=b"", protocol_type=None, protocol_name=None)},
    api.DESCRIBE_GROUPS: {
        0: Api(items=(listed("groups", "groups", "DescribedGroup", "group_id", THE_GROUP),)),
    },
    api.LIST_GROUPS: {0: Api(error=True, fill={"groups": ()})},
    api.CREATE_TOPICS: {
        0: Api(
            items=(
                Items(
                    "topics",
                    "topics",
                    "CreatableTopicResult",
                    echo=NAME,
                    error="error_code",
                    fill={"num_partitions": -1, "replication_factor": -1, "configs": None},
                    names=A_TOPIC,
                ),
            ),
        ),
    },
    api.DELETE_TOPICS: {
        0: Api(
            items=(listed("topic_names", "responses", "DeletableTopicResult", "name", THE_TOPIC),),
        ),
        6: Api(
            items=(
                Items(
                    "topics",
                    "responses",
                    "DeletableTopicResult",
                    echo=NAME_OR_ID,
                    error="error_code",
                    names=A_TOPIC,
                ),
            ),
        ),
    },
    api.DELETE_RECORDS: {
        0: Api(
            items=(
                topics(
                    "topics",
                    "topics",
                    "DeleteRecordsTopicResult",
                    partitions(
                        "partitions", "partitions", "DeleteRecordsPartitionResult", low_watermark=-1
                    ),
                ),
            ),
        ),
    },
    api.INIT_PRODUCER_ID: {
        0: Api(error=True, fill={"producer_id": -1, "producer_epoch": -1}, names=_TRANSACTIONAL),
    },
    api.OFFSET_FOR_LEADER_EPOCH: {
        0: Api(
            items=(
                topics(
                    "topics",
                    "topics",
                    "OffsetForLeaderTopicResult",
                    partitions(
                        "partitions",
                        "partitions",
                        "EpochEndOffset",
                        ("partition", "partition"),
                        leader_epoch=-1,
                        end_offset=-1,
                    ),
                    echo={"topic": "topic"},
                ),
            ),
        ),
    },
    # v4+ (broker to broker, not advertised) batches transactional ids: each is
    # answered, and the top-level error is set as getErrorResponse sets it.
    api.ADD_PARTITIONS_TO_TXN: {
        0: Api(
            items=(_ADD_PARTITIONS_TOPICS,),
            names={"v3_and_below_transactional_id": THE_TRANSACTIONAL_ID},
        ),
        4: Api(
            items=(
                Items(
                    "transactions",
                    "results_by_transaction",
                    "AddPartitionsToTxnResult",
                    echo={"transactional_id": "transactional_id"},
                    children=(
                        Items(
                            "topics",
                            "topic_results",
                            _ADD_PARTITIONS_TOPICS.entity,
                            echo=NAME,
                            children=_ADD_PARTITIONS_TOPICS.children,
                            names=A_TOPIC,
                        ),
                    ),
                    names=A_TRANSACTIONAL_ID,
                ),
            ),
            error=True,
        ),
    },
    api.ADD_OFFSETS_TO_TXN: {
        0: Api(error=True, names={**_TRANSACTIONAL, "group_id": THE_GROUP}),
    },
    api.END_TXN: {
        0: Api(error=True, fill={"producer_id": -1, "producer_epoch": -1}, names=_TRANSACTIONAL),
    },
    api.TXN_OFFSET_COMMIT: {
        0: Api(
            items=(
                topics(
                    "topics",
                    "topics",
                    "TxnOffsetCommitResponseTopic",
                    partitions("partitions", "partitions", "TxnOffsetCommitResponsePartition"),
                ),
            ),
            names={**_TRANSACTIONAL, "group_id": THE_GROUP},
        ),
    },
    api.DESCRIBE_CONFIGS: {
        0: Api(
            items=(
                Items(
                    "resources",
                    "results",
                    "DescribeConfigsResult",
                    echo=_CONFIG_RESOURCE,
                    error="error_code",
                    fill={"configs": ()},
                    names=config_resource,
                ),
            ),
        ),
    },
    api.ALTER_CONFIGS: {0: _ALTER_CONFIGS},
    api.INCREMENTAL_ALTER_CONFIGS: {0: _ALTER_CONFIGS},
    # An answer lists log dirs, and a failed request has none: the error is the
    # top-level one (v3+); before v3 an empty answer is all a broker can give.
    api.DESCRIBE_LOG_DIRS: {
        0: Api(
            items=(only_named("topics"),),
            error=True,
            fill={"results": ()},
        ),
    },
    api.CREATE_PARTITIONS: {
        0: Api(
            items=(
                Items(
                    "topics",
                    "results",
                    "CreatePartitionsTopicResult",
                    echo=NAME,
                    error="error_code",
                    names=A_TOPIC,
                ),
            ),
        ),
    },
    api.DELETE_GROUPS: {
        0: Api(
            items=(
                listed("groups_names", "results", "DeletableGroupResult", "group_id", THE_GROUP),
            )
        ),
    },
    # All partitions (null) get the top-level error alone (v1+).
    api.ELECT_LEADERS: {
        0: Api(
            items=(
                topics(
                    "topic_partitions",
                    "replica_election_results",
                    "ReplicaElectionResult",
                    partitions(
                        "partitions", "partition_result", "PartitionResult", ("partition_id", SELF)
                    ),
                    echo={"topic": "topic"},
                ),
            ),
            error=True,
        ),
    },
    api.OFFSET_DELETE: {
        0: Api(
            items=(only_named("topics"),),
            error=True,
            fill={"topics": ()},
            names={"group_id": THE_GROUP},
        ),
    },
    api.DESCRIBE_CLUSTER: {0: Api(error=True, fill={"brokers": ()})},
    api.DESCRIBE_PRODUCERS: {
        0: Api(
            items=(
                topics(
                    "topics",
                    "topics",
                    "TopicResponse",
                    partitions(
                        "partition_indexes",
                        "partitions",
                        "PartitionResponse",
                        ("partition_index", SELF),
                        active_producers=(),
                    ),
                ),
            ),
        ),
    },
    api.DESCRIBE_TRANSACTIONS: {
        0: Api(
            items=(
                listed(
                    "transactional_ids",
                    "transaction_states",
                    "TransactionState",
                    "transactional_id",
                    THE_TRANSACTIONAL_ID,
                ),
            ),
        ),
    },
    api.LIST_TRANSACTIONS: {0: Api(error=True, fill={"transaction_states": ()})},
    # The subscribed topics are named (for policy) and answered by the group's error.
    api.CONSUMER_GROUP_HEARTBEAT: {
        0: Api(
            items=(only_named("subscribed_topic_names", THE_TOPIC),),
            error=True,
            fill={"member_id": None, "assignment": None},
            names={"group_id": THE_GROUP},
        ),
    },
    api.CONSUMER_GROUP_DESCRIBE: {
        0: Api(items=(listed("group_ids", "groups", "DescribedGroup", "group_id", THE_GROUP),)),
    },
}
