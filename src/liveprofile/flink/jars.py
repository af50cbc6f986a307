"""Flink's Kafka connector jar, resolved from Maven Central through the POM next to this module.

``mvn dependency:copy-dependencies`` copies ``flink-sql-connector-kafka`` (a fat jar with the
Kafka client inside) once into ``$LIVEPROFILE_FLINK_JARS`` (default
``~/.cache/liveprofile/flink-connector-VERSION``); jobs then load it with ``pipeline.jars``.

>>> connector_jar(Path("/tmp/x")).name
'flink-sql-connector-kafka-5.0.0-2.2.jar'
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from liveprofile.errors import LiveprofileError

#: the connector release the POM resolves (keep in step with pom.xml): built for Flink 2.2
CONNECTOR_VERSION = "5.0.0-2.2"
POM = Path(__file__).with_name("pom.xml")


class ConnectorError(LiveprofileError):
    """The Kafka connector jar cannot be resolved."""

    exit_code = 69  # EX_UNAVAILABLE


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
    if connector_jar(target).is_file():
        return connector_jar(target)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ConnectorError("Maven (mvn) is needed once to fetch Flink's Kafka connector")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies"]
    cmd.append(f"-DoutputDirectory={partial}")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-2000:]
        raise ConnectorError(f"cannot resolve Flink's Kafka connector with Maven: {tail}")
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(target)
    return connector_jar(target)
