"""Real Kafka client drivers for integration tests.

Each driver produces to or consumes from a Kafka endpoint (a real broker, or the
gateway acting as one broker) with an unmodified client library, one module each:

* ``java``          Kafka 4.1 console tools (``ConsoleProducer`` / ``ConsoleConsumer``),
                    launched through ``gateway.dev.java_tool_command``;
* ``confluent``     confluent-kafka (librdkafka);
* ``kafka_python``  kafka-python;
* ``aiokafka``      aiokafka (each call runs its own event loop with ``asyncio.run``);
* ``kcat``          the ``kcat`` command line tool (Debian package ``kcat``).

``common`` holds what they share (``Endpoint``, ``Record``, ``ClientError``), ``process``
the subprocess runner of the two command line clients, and ``dispatch`` the functions
that take a client's name (``"java"``, ``"confluent"``, ``"kafka-python"``,
``"aiokafka"``, ``"kcat"``: ``CLIENTS``). Tests import everything from this package.

All public functions are synchronous and block. Async tests must not call them on
the event loop thread (the gateway under test may be serving from that loop); use
``await asyncio.to_thread(produce, ...)`` or the ``a...`` wrappers (``aproduce``,
``aconsume``, ``aconsume_group``, ``acreate_topic``, ``arun_java_tool``), which do
exactly that. Errors are ``ClientError`` (the password is redacted from their text);
subprocess failures carry the stderr tail.

``consume`` never uses a consumer group: every driver assigns the partitions itself
and starts at the earliest offset. ``consume_group`` subscribes as the only member of
a consumer group, starts at the group's committed offsets (else the earliest) and
commits what it read before leaving. ``produce`` can compress (``compression``).

Besides the drivers: ``committed_offsets``, ``watermarks``, ``describe_group``,
``partition_leaders``, ``group_coordinator`` and ``elect_preferred_leaders``
(confluent-kafka's admin client), ``connected_producer`` (a confluent-kafka producer
kept connected), ``list_topics`` per client, ``run_java_tool`` (any
Kafka command line tool, with the endpoint's connection settings in a properties
file), ``JavaGroupConsumer`` (a console consumer kept running as a group member) and
``client_versions``.

Text tools (java, kcat) carry keys, values and headers as lines of text, so for
them every key, value, header name and header value must be printable ASCII; header
names must not contain ``:`` (java) or ``=`` (kcat). ``produce`` checks this up front.
Null keys, values and header values are not modelled: Python drivers read them as b"".
"""

from tests.integration.clients.common import (
    CLASSIC_HEARTBEAT_MS,
    CLIENTS,
    COMPRESSION_CODECS,
    GROUP_PROTOCOLS,
    ClientError,
    Endpoint,
    Record,
    python_client_config,
    unique_topic,
)
from tests.integration.clients.confluent import (
    GroupDescription,
    committed_offsets,
    connected_producer,
    describe_group,
    elect_preferred_leaders,
    group_coordinator,
    librdkafka_config,
    partition_leaders,
    watermarks,
)
from tests.integration.clients.dispatch import (
    aconsume,
    aconsume_group,
    acreate_topic,
    aproduce,
    client_versions,
    consume,
    consume_group,
    create_topic,
    list_topics,
    produce,
)
from tests.integration.clients.java import (
    JAVA_CONSUMER,
    JAVA_PRODUCER,
    JavaGroupConsumer,
    arun_java_tool,
    java_default_partition,
    run_java_tool,
)

__all__ = [
    "CLASSIC_HEARTBEAT_MS",
    "CLIENTS",
    "COMPRESSION_CODECS",
    "GROUP_PROTOCOLS",
    "JAVA_CONSUMER",
    "JAVA_PRODUCER",
    "ClientError",
    "Endpoint",
    "GroupDescription",
    "JavaGroupConsumer",
    "Record",
    "aconsume",
    "aconsume_group",
    "acreate_topic",
    "aproduce",
    "arun_java_tool",
    "client_versions",
    "committed_offsets",
    "connected_producer",
    "consume",
    "consume_group",
    "create_topic",
    "describe_group",
    "elect_preferred_leaders",
    "group_coordinator",
    "java_default_partition",
    "librdkafka_config",
    "list_topics",
    "partition_leaders",
    "produce",
    "python_client_config",
    "run_java_tool",
    "unique_topic",
    "watermarks",
]
