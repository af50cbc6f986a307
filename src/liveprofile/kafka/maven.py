"""Java artefacts from Maven Central: the jars a POM in this package names, copied once into a
cache folder by ``mvn dependency:copy-dependencies`` (the Kafka broker's, Flink's connector).

>>> import pathlib, tempfile
>>> cached = pathlib.Path(tempfile.mkdtemp()) / "jars"
>>> cached.mkdir(); (cached / "x.jar").touch()
>>> copy_dependencies(pathlib.Path("pom.xml"), cached, "x.jar", "x") == cached
True
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from liveprofile.errors import LiveprofileError


class MavenError(LiveprofileError):
    """Jars cannot be resolved from Maven Central."""

    exit_code = 69  # EX_UNAVAILABLE


def copy_dependencies(pom: Path, target: Path, marker: str, what: str) -> Path:
    """``target``, holding the dependencies of ``pom`` (copied the first time: when ``marker``,
    a file name, is not in it yet); ``what`` names them in errors. All jars or none: a copy cut
    short is never used."""
    if (target / marker).is_file():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MavenError(f"Maven (mvn) is needed once to fetch {what}; install maven")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
    cmd.append(f"-DoutputDirectory={partial}")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-2000:]
        raise MavenError(f"cannot resolve {what} with Maven: {tail}")
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(target)
    return target
