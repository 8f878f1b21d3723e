"""Finding Java 17+ and the command line that runs a Kafka class on the cached jars."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from gateway.dev.errors import ToolMissingError
from gateway.dev.jars import KAFKA_VERSION, TOOLS_LOG4J_NAME, default_lib_dir, kafka_classpath

JAVA_HINT = "Java 17+ not found: apt-get install openjdk-17-jre-headless"
TOOL_JVM_OPTS = ("-Djava.awt.headless=true",)


@functools.lru_cache(maxsize=4)
def _checked_java(path: str) -> str:
    try:
        result = subprocess.run(  # noqa: S603 - absolute path found by java_executable, fixed args
            [path, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        raise ToolMissingError(JAVA_HINT) from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        raise ToolMissingError(JAVA_HINT)
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    if major < 17:
        raise ToolMissingError(f"Java {major} is too old, Kafka {KAFKA_VERSION} needs 17+")
    return path


def java_executable() -> str:
    """Absolute path of a Java 17+ `java`, preferring $JAVA_HOME."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is not None and os.access(candidate, os.X_OK):
        return _checked_java(str(candidate))
    found = shutil.which("java")
    if found is None:
        raise ToolMissingError(JAVA_HINT)
    return _checked_java(found)


def java_tool_command(main_class: str, *args: str) -> list[str]:
    """Command line running a Kafka class, e.g. `org.apache.kafka.tools.TopicCommand`.

    Shape: [java, <jvm -D options>, "-cp", classpath, main_class, *args]. Tool logging goes
    to stderr at WARN so stdout carries only the tool's own output.
    """
    classpath = kafka_classpath()
    opts = list(TOOL_JVM_OPTS)
    tools_log4j = default_lib_dir() / TOOLS_LOG4J_NAME
    if tools_log4j.is_file():
        opts.append(f"-Dlog4j2.configurationFile={tools_log4j}")
    return [java_executable(), *opts, "-cp", classpath, main_class, *args]
