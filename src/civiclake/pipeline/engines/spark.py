"""The Spark engine: the same spec and transform on a Spark cluster; the driver commits.

Engine writes, driver commits (the pattern Ray Data, Daft and Polars use for Iceberg): the driver
hands Spark the raw files' URLs; each task reads its files with the spec's reader (fsspec, so
any lake works without a Hadoop connector), runs ``spec.transform`` unchanged on Arrow batches
(``mapInArrow``: no per-row Python UDF, one definition of every rule) and writes Iceberg data
files for the table and its rejects with the Arrow engine's ``DataFileWriter``. Tasks return
their ``DataFile`` descriptors, counts and observations as output rows; the driver merges them
into ONE ``Staged``, which ``pipeline.commit`` commits in one transaction per table, as after
the Arrow engine. A failed or killed job returns nothing: its files stay orphans, nothing is
committed.

Secrets: Spark properties (``CIVICLAKE_SPARK_CONF``) reach the JVM through a private
properties file (pyspark would otherwise put them on spark-submit's command line), and lake
credentials travel pickled inside the task (the lake and the tables' FileIO), never as logged
Spark configuration.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import logging
import os
import pickle
import re
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from civiclake._private.extras import require
from civiclake._private.iceberg_write import DataFiles, DataFileWriter
from civiclake.errors import CivicLakeError
from civiclake.pipeline.contract import REJECT_REASON, DatasetSpec, RunContext, Staged, split

if TYPE_CHECKING:
    from pyiceberg.io import FileIO
    from pyiceberg.table import Table
    from pyiceberg.table.metadata import TableMetadata
    from pyspark.sql import SparkSession

    from civiclake.config import Settings
    from civiclake.lake import Lake

logger = logging.getLogger("civiclake.pipeline")

NAME = "spark"
RESULT_SCHEMA = "payload binary"
PROBE_SECONDS = 3.0
"""How long a ``spark://`` master's port may take to answer before the run fails."""
POLL_SECONDS = 1.0
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
LAKE_ENV_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_", "GCSFS_")
LAKE_ENV_NAMES = {"STORAGE_EMULATOR_HOST", "PYICEBERG_DOWNCAST_NS_TIMESTAMP_TO_US_ON_WRITE"}

# Spark properties of every session, unless CIVICLAKE_SPARK_CONF sets them.
DEFAULT_CONF = {
    "spark.app.name": "civiclake",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",  # progress goes to the run's logger instead
    # Arrow batches of raw-file URLs: a task gets its files in one batch
    "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
}
LOG4J = "rootLogger.level = error\nrootLogger.appenderRef.stderr.ref = console\n" + (
    "appender.console.type = Console\nappender.console.name = console\n"
    "appender.console.target = SYSTEM_ERR\nappender.console.layout.type = PatternLayout\n"
    "appender.console.layout.pattern = spark: %p %c{1}: %m%n\n"
)


def stage(
    spec: DatasetSpec,
    lake: Lake,
    raw_urls: Iterable[str],
    ctx: RunContext,
    *,
    table: Table,
    rejects_table: Table,
    expected_rows: int | None = None,
    log: logging.Logger | logging.LoggerAdapter[Any] = logger,
    sink: Callable[[pa.Table], None] | None = None,
) -> Staged:
    """Type every file of ``raw_urls`` on Spark into data files of ``table`` and
    ``rejects_table``; commit nothing (the caller commits the returned ``Staged``).

    ``sink`` (a warehouse that streams while staging) gets the valid rows after the job, read
    back from the job's data files on this process batch by batch (bounded memory): the
    executors cannot reach the driver's warehouse transaction. Its error ends the stage."""
    from civiclake.config import get_settings

    began = time.monotonic()
    urls = list(raw_urls)  # Spark plans its tasks from the whole list: the fetch is done
    task = _StageTask(
        spec, ctx, lake, table.metadata, table.io, rejects_table.metadata, rejects_table.io
    )
    if not urls:
        return _merge(task, [], began)
    session = spark_session(get_settings(), log)
    context = session.sparkContext
    slices = min(len(urls), max(1, context.defaultParallelism))
    frame = session.createDataFrame(
        context.parallelize([(url,) for url in urls], slices), "url string"
    )
    # the lake's credentials, as the driver's environment has them, reach the Python workers
    # with this job's function (not Spark's configuration, which Spark may log)
    _forward_environment(context.environment)
    group = f"civiclake-{ctx.run_id}-{uuid.uuid4().hex[:8]}"
    context.setJobGroup(group, f"stage {spec.table} ({len(urls)} files)", True)
    log.info(
        "spark: stage %s: %d raw file(s) in %d task(s) on %s",
        spec.table,
        len(urls),
        slices,
        context.master,
    )
    try:
        with _JobProgress(context, group, spec.table, log):
            rows = frame.mapInArrow(task.run, RESULT_SCHEMA).collect()
    except KeyboardInterrupt:
        context.cancelJobGroup(group)
        raise
    except Exception as exc:
        if isinstance(exc, CivicLakeError):
            raise
        raise CivicLakeError(
            f"spark job staging {spec.table} failed, nothing was committed: {_failure(exc)}"
        ) from None
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
    staged = _merge(task, [pickle.loads(bytes(row[0])) for row in rows], began)
    if sink is not None:
        _feed(sink, spec, table, staged)
        staged = dataclasses.replace(staged, seconds=round(time.monotonic() - began, 3))
    log.info(
        "spark: stage %s done in %.1f s: %s rows read, %s valid, %s rejected, %d data file(s)",
        spec.table,
        staged.seconds,
        f"{staged.rows_read:,}",
        f"{staged.rows_valid:,}",
        f"{staged.rows_rejected:,}",
        len(staged.data.files) + len(staged.rejects.files),
    )
    return staged


def lake_environment() -> dict[str, str]:
    """The variables object-store SDKs read credentials and endpoints from (AWS's chain,
    Azure's connection string, Google's ADC), as the driver has them."""
    return {
        name: value
        for name, value in os.environ.items()
        if name.startswith(LAKE_ENV_PREFIXES) or name in LAKE_ENV_NAMES
    }


_forwarded: set[str] = set()


def _forward_environment(environment: dict[str, str]) -> None:
    """The lake's variables as they are now (a variable unset since the last job is dropped)."""
    current = lake_environment()
    for name in _forwarded - current.keys():
        environment.pop(name, None)
    environment.update(current)
    _forwarded.clear()
    _forwarded.update(current)


@dataclass(frozen=True)
class _TaskResult:
    data: DataFiles
    rejects: DataFiles
    rows_read: int
    observed: dict[str, set[Any]]
    rejected_by_reason: dict[str, int]


@dataclass(frozen=True)
class _StageTask:
    """What one Spark task needs, shipped by pickling: the spec, the run's context, the lake
    (credentials inside, never in Spark's configuration) and the tables' metadata and FileIO
    (a PyIceberg ``Table`` holds its catalog's database connection and does not pickle)."""

    spec: DatasetSpec
    ctx: RunContext
    lake: Lake
    metadata: TableMetadata
    io: FileIO
    rejects_metadata: TableMetadata
    rejects_io: FileIO

    def run(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The task: its raw files -> data files (one open file per partition per task)."""
        read = 0
        observed: dict[str, set[Any]] = {}
        reasons: Counter[str] = Counter()
        with (
            DataFileWriter(self.metadata, self.io) as rows_out,
            DataFileWriter(self.rejects_metadata, self.rejects_io) as rejects_out,
        ):
            for urls in batches:
                for url in urls.column(0).to_pylist():
                    for batch in self.spec.read(self.lake, url):
                        out = self.spec.transform(batch, self.ctx)
                        rows, rejects = split(self.spec, out, self.ctx)
                        if rejects.num_rows:
                            counts = pc.value_counts(out.column(REJECT_REASON)).to_pylist()
                            for item in counts:
                                if item["values"] is not None:
                                    reasons[item["values"]] += item["counts"]
                        rows_out.write(rows)
                        rejects_out.write(rejects)
                        if rows.num_rows:
                            for key, values in self.spec.observe(rows).items():
                                observed.setdefault(key, set()).update(values)
                        read += batch.num_rows
            result = _TaskResult(
                rows_out.close(), rejects_out.close(), read, observed, dict(reasons)
            )
        yield pa.RecordBatch.from_pydict(
            {"payload": [pickle.dumps(result)]}, schema=pa.schema([("payload", pa.binary())])
        )

    def empty(self) -> _TaskResult:
        return _TaskResult(
            DataFiles((), 0, self.metadata.default_spec_id, self.metadata.current_schema_id),
            DataFiles(
                (),
                0,
                self.rejects_metadata.default_spec_id,
                self.rejects_metadata.current_schema_id,
            ),
            0,
            {},
            {},
        )


def _merge(task: _StageTask, results: list[_TaskResult], began: float) -> Staged:
    """The tasks' results as one ``Staged``, in task order."""
    total = task.empty()
    data, rejects, read = total.data, total.rejects, 0
    observed: dict[str, set[Any]] = {}
    reasons: Counter[str] = Counter()
    for result in results:
        data, rejects, read = data + result.data, rejects + result.rejects, read + result.rows_read
        for key, values in result.observed.items():
            observed.setdefault(key, set()).update(values)
        reasons.update(result.rejected_by_reason)
    return Staged(
        data=data,
        rejects=rejects,
        rows_read=read,
        rows_valid=data.rows,
        rows_rejected=rejects.rows,
        observed={key: frozenset(values) for key, values in observed.items()},
        engine=NAME,
        seconds=round(time.monotonic() - began, 3),
        rejected_by_reason=dict(reasons),
    )


SINK_BATCH_ROWS = 65_536


def _feed(
    sink: Callable[[pa.Table], None], spec: DatasetSpec, table: Table, staged: Staged
) -> None:
    """The staged valid rows to ``sink``, one Parquet batch at a time, in the spec's types."""
    import pyarrow.parquet as pq

    schema = spec.arrow_schema()
    for data_file in staged.data.files:
        with table.io.new_input(data_file.file_path).open() as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=SINK_BATCH_ROWS):
                rows = pa.Table.from_batches([batch]).select(schema.names)
                sink(rows.cast(schema))
                del batch, rows


_PYTHON_ERROR = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)(: .*)?$")
_LOST_TASK = re.compile(r"^Task .* failed \d+ times?, most recent failure: Lost task [^:]*: ")


def _failure(exc: BaseException) -> str:
    """One line from a Spark job failure: the task's Python exception when a task raised one
    (the last line of its traceback), else the reason Spark aborted the job."""
    text = str(exc)
    lines = text.splitlines()
    if "Traceback (most recent call last)" in text:
        after = lines[max(i for i, line in enumerate(lines) if "Traceback (most recent" in line) :]
        raised = [line.strip() for line in after if _PYTHON_ERROR.match(line.strip())]
        if raised:
            return _shorten(raised[0])
    found = re.search(r"Job aborted due to stage failure: ([^\n]*)", text)
    if found:
        return _shorten(_LOST_TASK.sub("", found.group(1)))
    return _shorten(next((line.strip() for line in lines if line.strip()), type(exc).__name__))


def _shorten(line: str) -> str:
    return line if len(line) <= 300 else line[:297] + "..."


class _JobProgress:
    """Job start, tasks done and end of the stage's Spark job, polled from Spark's
    ``StatusTracker`` in a thread and written to the run's logger."""

    def __init__(
        self,
        context: Any,
        group: str,
        what: str,
        log: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        self._context = context
        self._group = group
        self._what = what
        self._log = log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="civiclake-spark-progress")
        self._last: tuple[int, int] | None = None
        self._started = False

    def __enter__(self) -> _JobProgress:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(Exception):
            self._report()  # the end, however short the job was

    def tasks(self) -> tuple[int, int, int]:
        """(done, total, failed) tasks of the group's jobs so far."""
        tracker = self._context.statusTracker()
        done = total = failed = 0
        for job_id in tracker.getJobIdsForGroup(self._group):
            job = tracker.getJobInfo(job_id)
            for stage_id in job.stageIds if job else ():
                info = tracker.getStageInfo(stage_id)
                if info:
                    done += info.numCompletedTasks
                    total += info.numTasks
                    failed += info.numFailedTasks
        return done, total, failed

    def _poll(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            with contextlib.suppress(Exception):  # a stopping context: progress is best effort
                self._report()

    def _report(self) -> None:
        done, total, failed = self.tasks()
        if total and not self._started:
            self._started = True
            self._log.info("spark: job of %s started: %d task(s)", self._what, total)
        if total and (done, failed) != self._last:
            self._last = (done, failed)
            retried = f", {failed} failed attempt(s)" if failed else ""
            self._log.info("spark: %s: %d/%d task(s) done%s", self._what, done, total, retried)


# -- sessions -------------------------------------------------------------------------------

_lock = threading.Lock()
_current: tuple[tuple[str, tuple[tuple[str, str], ...]], SparkSession] | None = None


def spark_session(
    settings: Settings, log: logging.Logger | logging.LoggerAdapter[Any] = logger
) -> SparkSession:
    """The Spark session for ``settings`` (``CIVICLAKE_SPARK_MASTER``, ``CIVICLAKE_SPARK_CONF``),
    reused while they stay the same. Fails in one line, before Spark's client retries for a
    minute, when there is no Java or a ``spark://`` master does not answer.

    Under ``spark-submit`` (which started the JVM and set ``PYSPARK_GATEWAY_PORT``) the session
    is spark-submit's own: its ``--master`` and ``--conf`` rule, the settings are not used."""
    global _current
    require("pyspark", package="pyspark", extra="spark", needed_by="--engine spark")
    if os.environ.get("PYSPARK_GATEWAY_PORT"):
        from pyspark.sql import SparkSession

        return SparkSession.builder.getOrCreate()
    master = settings.spark_master
    conf = session_conf(master, settings.spark_conf.get_secret_value())
    java_home = find_java()
    probe_master(master)
    key = (master, tuple(sorted(conf.items())))
    with _lock:
        if _current is not None:
            if _current[0] == key and not _stopped(_current[1]):
                return _current[1]
            with contextlib.suppress(Exception):
                _current[1].stop()
            _current = None
        began = time.monotonic()
        session = _start(master, conf, java_home)
        _current = (key, session)
    log.info("spark: session on %s started in %.1f s", master, time.monotonic() - began)
    return session


def stop_session() -> None:
    """Stop the cached session (tests, and a process that is done with Spark)."""
    global _current
    with _lock:
        if _current is not None:
            with contextlib.suppress(Exception):
                _current[1].stop()
            _current = None


def session_conf(master: str, user: Mapping[str, str]) -> dict[str, str]:
    """Spark properties: ours, then the user's (which win). A local or loopback master keeps
    the driver on 127.0.0.1; executors run this very Python unless told otherwise."""
    conf = dict(DEFAULT_CONF)
    conf["spark.pyspark.python"] = sys.executable
    conf["spark.pyspark.driver.python"] = sys.executable
    if _is_local(master):
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    conf.update({str(k): str(v) for k, v in user.items()})
    return conf


SUPPORTED_JAVA = (8, 11, 17, 21)
"""Java versions pyspark 3.5 runs on: another one fails deep inside the JVM's start."""


def find_java() -> str:
    """JAVA_HOME, or the directory above the ``java`` on PATH, of a Java Spark 3.5 runs on;
    one line when there is none or it is another version."""
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").is_file():
        return _supported(home)
    java = shutil.which("java")
    if java:
        return _supported(str(Path(os.path.realpath(java)).parent.parent))
    raise CivicLakeError(
        "--engine spark needs a Java runtime (17): none on PATH and JAVA_HOME not set; "
        "install one (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
    )


def _supported(java_home: str) -> str:
    major = java_major(java_home)
    if major is not None and major not in SUPPORTED_JAVA:
        versions = ", ".join(map(str, SUPPORTED_JAVA))
        raise CivicLakeError(
            f"--engine spark needs Java {versions} (Spark 3.5); {java_home} is Java {major}: "
            "install openjdk-17-jre-headless or set JAVA_HOME to a supported Java"
        )
    return java_home


@functools.lru_cache(maxsize=8)
def java_major(java_home: str) -> int | None:
    """The major version ``java -version`` reports (``1.8`` is 8), None when it says nothing
    readable (then Spark's own start decides). Asked once per Java home and process."""
    import subprocess

    try:
        done = subprocess.run(
            [str(Path(java_home, "bin", "java")), "-version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2)) if major == 1 and found.group(2) else major


def probe_master(master: str, timeout: float = PROBE_SECONDS) -> None:
    """A ``spark://`` master must accept a connection: Spark's client would otherwise retry
    registering for about a minute before failing."""
    if not master.startswith("spark://"):
        return
    reasons = []
    for address in master[len("spark://") :].split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host or address, int(port or 7077)), timeout=timeout):
                return
        except (OSError, ValueError) as exc:
            reasons.append(
                f"{address}: {exc.strerror or exc}"
                if isinstance(exc, OSError)
                else f"{address}: {exc}"
            )
    raise CivicLakeError(
        f"Spark master {master} is not reachable ({'; '.join(reasons)}): start it or set "
        "CIVICLAKE_SPARK_MASTER to a running master; nothing was staged or committed"
    )


def _is_local(master: str) -> bool:
    if master.startswith("local"):
        return True
    if master.startswith("spark://"):
        hosts = {a.strip().rpartition(":")[0] for a in master[len("spark://") :].split(",")}
        return hosts <= LOCAL_HOSTS
    return False


def _stopped(session: SparkSession) -> bool:
    try:
        return bool(session.sparkContext._jsc.sc().isStopped())  # type: ignore[union-attr]
    except Exception:
        return True


def _start(master: str, conf: dict[str, str], java_home: str) -> SparkSession:
    """A new session. Its properties go through a private properties file read by the JVM at
    launch (pyspark puts builder options on spark-submit's command line, seen by ``ps``); the
    JVM's own output goes to ``spark_log()``, not to the run's stderr (stack traces of failed
    tasks: the run reports one line)."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway
    from pyspark.sql import SparkSession

    os.environ.setdefault("JAVA_HOME", java_home)
    if _is_local(master):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    try:
        if SparkContext._gateway is not None:  # the JVM is up: properties go over py4j
            context = SparkContext(master=master, conf=SparkConf().setAll(list(conf.items())))
        else:
            context = SparkContext(master=master, gateway=_launch(conf, launch_gateway))
    except Exception as exc:
        raise CivicLakeError(
            f"Spark could not start on {master}: {_failure(exc)} (Spark's log: {spark_log()})"
        ) from None
    context.setLogLevel("ERROR")
    # the Python of the tasks: pyspark reads PYSPARK_PYTHON, not the property, for its workers
    context.pythonExec = conf["spark.pyspark.python"]
    return SparkSession(context)


def spark_log() -> Path:
    """Where the Spark driver's JVM writes its own log (errors only) in this process."""
    return Path(tempfile.gettempdir(), f"civiclake-spark-{os.getpid()}.log")


def _drop_quiet_log() -> None:
    """At exit: a log without errors says nothing worth keeping (one per process otherwise)."""
    with contextlib.suppress(OSError):
        if "ERROR" not in spark_log().read_text(errors="replace"):
            spark_log().unlink()


def _launch(conf: dict[str, str], launch_gateway: Any) -> Any:
    with tempfile.TemporaryDirectory(prefix="civiclake-spark-") as private:
        os.chmod(private, 0o700)
        log4j = Path(private, "log4j2.properties")
        log4j.write_text(LOG4J)
        launch = dict(conf)
        launch.setdefault(
            "spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log4j}"
        )
        properties = Path(private, "spark.properties")
        properties.touch(mode=0o600)
        properties.write_text(
            "".join(f"{_escape(k, key=True)}={_escape(v)}\n" for k, v in launch.items())
        )
        previous = os.environ.get("PYSPARK_SUBMIT_ARGS")
        os.environ["PYSPARK_SUBMIT_ARGS"] = (
            f"--properties-file {shlex.quote(str(properties))} pyspark-shell"
        )
        try:
            with spark_log().open("ab") as log:
                gateway = launch_gateway(popen_kwargs={"stdout": log, "stderr": log})
            atexit.register(_drop_quiet_log)
            return gateway
        finally:
            if previous is None:
                os.environ.pop("PYSPARK_SUBMIT_ARGS", None)
            else:
                os.environ["PYSPARK_SUBMIT_ARGS"] = previous


def _escape(text: str, *, key: bool = False) -> str:
    """Java properties escaping (backslash, line ends; and separators in keys)."""
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    if key:
        for char in "=: #!":
            text = text.replace(char, "\\" + char)
    elif text.startswith(" "):
        text = "\\" + text
    return text
