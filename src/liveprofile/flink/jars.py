"""Flink's Kafka connector jar, resolved from Maven Central through the POM next to this module.

``mvn dependency:copy-dependencies`` copies ``flink-sql-connector-kafka`` (a fat jar with the
Kafka client inside) once into ``$LIVEPROFILE_FLINK_JARS`` (default
``~/.cache/liveprofile/flink-connector-VERSION``); jobs then load it with ``pipeline.jars``.

>>> connector_jar(Path("/tmp/x")).name
'flink-sql-connector-kafka-5.0.0-2.2.jar'
"""

from __future__ import annotations

import os
from pathlib import Path

from liveprofile.kafka.maven import copy_dependencies

#: the connector release the POM resolves (keep in step with pom.xml): built for Flink 2.2
CONNECTOR_VERSION = "5.0.0-2.2"
POM = Path(__file__).with_name("pom.xml")


def jar_dir() -> Path:
    """Where the connector jar is cached (``$LIVEPROFILE_FLINK_JARS`` overrides)."""
    env = os.environ.get("LIVEPROFILE_FLINK_JARS")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "liveprofile" / f"flink-connector-{CONNECTOR_VERSION}"


def connector_jar(directory: Path) -> Path:
    """The connector's path inside ``directory``."""
    return directory / f"flink-sql-connector-kafka-{CONNECTOR_VERSION}.jar"


def resolve_connector(target: Path | None = None) -> Path:
    """The connector jar, fetched with Maven the first time."""
    target = target or jar_dir()
    name = connector_jar(target).name
    return connector_jar(copy_dependencies(POM, target, name, "Flink's Kafka connector"))
