"""The Kafka jars from Maven Central: resolved once into a cache, then a classpath.

`kafka_classpath()` is the only entry point that may run Maven, and only when the
cache (`$GATEWAY_KAFKA_LIB`, default `~/.cache/soc2-gateway/kafka-<version>/lib`) is
incomplete. A component that needs another artifact adds it to `ARTIFACTS`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from gateway.dev.errors import DevError, ToolMissingError

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
# Kafka 4.1 ships slf4j-api 1.7.x, so the binding must be the slf4j 1.x one
# (log4j-slf4j-impl); the slf4j2 binding would be ignored and the brokers would be silent.
LOG4J_VERSION = "2.24.3"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"

# (groupId, artifactId, version): the broker, its tools, MirrorMaker 2 and a log binding.
ARTIFACTS = (
    ("org.apache.kafka", f"kafka_{SCALA_VERSION}", KAFKA_VERSION),
    ("org.apache.kafka", "kafka-tools", KAFKA_VERSION),
    ("org.apache.kafka", "connect-mirror", KAFKA_VERSION),
    ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
    ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
)
TOOLS_LOG4J_NAME = "tools-log4j2.xml"
MVN_HINT = "Maven not found: apt-get install maven"


def default_lib_dir() -> Path:
    env = os.environ.get("GATEWAY_KAFKA_LIB")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "soc2-gateway" / f"kafka-{KAFKA_VERSION}" / "lib"


def log4j_xml(level: str, target: str, loggers: Mapping[str, str] | None = None) -> str:
    """log4j2 configuration: one console appender, request and authorizer logs quiet,
    and `loggers` (name: level) on top."""
    extra = "".join(
        f'\n    <Logger name="{name}" level="{lvl}"/>' for name, lvl in (loggers or {}).items()
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="OUT" target="{target}">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="{level}"><AppenderRef ref="OUT"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="kafka.network.RequestChannel$" level="WARN"/>
    <Logger name="kafka.authorizer.logger" level="WARN"/>{extra}
  </Loggers>
</Configuration>
"""


def _required_jars() -> tuple[str, ...]:
    return tuple(f"{artifact}-{version}.jar" for _, artifact, version in ARTIFACTS)


def _lib_complete(lib: Path) -> bool:
    return all((lib / jar).is_file() for jar in _required_jars())


def _pom() -> str:
    dep_xml = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in ARTIFACTS
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.soc2gateway</groupId>
  <artifactId>kafka-dev-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dep_xml}
  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>{DEPENDENCY_PLUGIN_VERSION}</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
"""


def _mvn_executable() -> str:
    found = shutil.which("mvn")
    if found is None:
        raise ToolMissingError(MVN_HINT)
    return found


def _run_maven(mvn: str, out_dir: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="kafka-dev-pom-") as pom_dir:
        (Path(pom_dir) / "pom.xml").write_text(_pom(), encoding="utf-8")
        cmd = [
            mvn,
            "-q",
            "-B",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={out_dir}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(  # noqa: S603 - mvn found on PATH, args built here
            cmd, cwd=pom_dir, capture_output=True, text=True, timeout=1800, check=False
        )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise DevError(f"mvn dependency:copy-dependencies failed ({result.returncode}):\n{tail}")


def _resolve_jars(lib: Path) -> None:
    if lib.exists():
        raise DevError(f"{lib} exists but lacks the Kafka {KAFKA_VERSION} jars; remove it")
    mvn = _mvn_executable()
    lib.parent.mkdir(parents=True, exist_ok=True)
    log.info("resolving Kafka %s jars with Maven into %s (once)", KAFKA_VERSION, lib)
    started = time.monotonic()
    # Download into a sibling temp dir and rename, so an interrupted download is never
    # mistaken for a complete cache.
    tmp = Path(tempfile.mkdtemp(prefix=".lib-partial-", dir=lib.parent))
    try:
        _run_maven(mvn, tmp)
        (tmp / TOOLS_LOG4J_NAME).write_text(log4j_xml("WARN", "SYSTEM_ERR"), encoding="utf-8")
        if not _lib_complete(tmp):
            raise DevError(f"Maven finished but {tmp} lacks {', '.join(_required_jars())}")
        # mkdtemp makes the dir private; these are public jars, so let any user read them.
        tmp.chmod(0o755)
        try:
            tmp.rename(lib)
        except OSError:
            # Another process finished first; its copy is as good as ours.
            if not _lib_complete(lib):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("resolved Kafka jars in %.1fs", time.monotonic() - started)


def kafka_classpath() -> str:
    """Classpath for `java -cp` with Kafka, its tools, MirrorMaker 2 and log4j.

    Resolves the jars with Maven the first time; with the cache present, Maven is not run.
    """
    lib = default_lib_dir()
    if not _lib_complete(lib):
        _resolve_jars(lib)
    return os.pathsep.join(str(jar) for jar in sorted(lib.glob("*.jar")))
