"""edgenas device server: ``python edgenas_kit.py serve`` times models sent over HTTP, one at a time.

Standard library, numpy and a runtime only (no torch, no edgenas); the kit (``edgenas_kit.py``)
does the loading and timing, so a model timed here is timed as ``edgenas_kit.py bench`` times it.

    GET  /status                      device, runtimes, versions, queue length
    POST /bench?runtime=R&threads=T&batch=B&warmup=N&runs=N|auto&name=NAME&upload=file|tar   body: the model
    POST /paired?...&rounds=K&split=BYTES                                    body: model A then model B

The model is the runtime's: ONNX for onnxruntime-* and tensorrt-* (the device builds its own
engine), sent as the body (``upload=file``). The runtimes of ``edgenas_engines.py`` take an
uncompressed tar of the model's files as an export names them (``upload=tar``; ``edgenas_engines.
upload_names``): ``model.xml`` and ``model.bin`` for openvino-*, ``model.ncnn.param`` and
``model.ncnn.bin`` for ncnn-cpu, ``model.tflite`` or ``model.pte`` for litert-* and executorch-*, each
with its metadata file (``model.xml.json``, ...) where it has one. OpenVINO and ncnn models are two
files and come only so; a ``.tflite``/``.pte`` may also come alone (``upload=file``, ``layout=NHWC``
for a LiteRT file taking NHWC images). An archive is read strictly: only those names, regular files,
each at most once, the model and weights files present; it is never extracted, its files are
written under the server's own names.

Every request carries ``Authorization: Bearer TOKEN`` (the token file's content). Answers are JSON;
a refused request gets ``{"error": "..."}`` with a 4xx status and the server goes on serving.
"""

from __future__ import annotations

import argparse
import hmac
import http.server
import importlib.util
import io
import ipaddress
import json
import math
import platform
import queue
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SCHEMA = "edgenas.device/1"  # the /status answer
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765
DEFAULT_MAX_UPLOAD_MB = 64
MAX_QUEUE = 32  # requests waiting to be timed (default of --max-queue); more are refused with 503 and Retry-After
# Connections the kernel holds before the server accepts them: above every plain client a queue of
# MAX_QUEUE invites (socketserver's default of 5 reset connections of a burst of 20 clients).
LISTEN_BACKLOG = 256
READ_TIMEOUT_S = 60  # a client that stops sending mid-upload is dropped after this long
MAX_RUNS = 100_000
# runs=auto: the measurement of a search's latency budget (edgenas/runtime/latency.py).
AUTO_WARMUP, AUTO_WARMUP_S, AUTO_PROBE_RUNS = 10, 0.1, 5
AUTO_MIN_RUNS, AUTO_MIN_S, AUTO_MAX_RUNS, AUTO_MAX_S = 30, 0.3, 5000, 5.0
TWO_FILE_ENGINES = ("openvino", "ncnn")  # an IR's .xml and .bin, ncnn's .param and .bin: only as a tar (upload=tar)
UPLOADS = ("file", "tar")  # the body: the model file itself, or an uncompressed tar of its files


class Refused(Exception):
    """A request the server will not (or cannot) answer: ``status`` and a one-line reason;
    ``retry_after``: seconds after which the same request may be answered (503)."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None):
        super().__init__(reason)
        self.status, self.reason, self.retry_after = status, reason, retry_after


@dataclass(frozen=True)
class Settings:
    """How to time one model: the bench settings of a request."""

    runtime: str
    threads: int | None
    batch: int = 1
    warmup: int = 10
    runs: int | None = None  # None: auto (as a search's latency budget is measured)
    name: str = "model.onnx"
    rounds: int = 15  # /paired only
    split: int = 0  # /paired only: bytes of model A at the start of the body
    layout: str = "NCHW"  # the input layout of a LiteRT file sent alone (an archive's metadata file says it)
    upload: str = "file"  # "file": the body is the model file; "tar": an uncompressed tar of its files


def _int(query: dict, *, key: str, default, low: int, high: int):
    text = query.get(key, [None])[-1]
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise Refused(400, f"{key}={text!r} is not an integer") from None
    if not low <= value <= high:
        raise Refused(400, f"{key}={value} is out of range: give {low} to {high}")
    return value


def parse_settings(query_string: str, *, kit, runtime: str, threads: int | None) -> Settings:
    """The bench settings of a request's query string; the server's defaults where it names none."""
    try:
        query = urllib.parse.parse_qs(query_string, keep_blank_values=True, strict_parsing=bool(query_string))
    except ValueError:
        raise Refused(400, f"malformed query string {query_string[:80]!r}") from None
    allowed = ("runtime", "threads", "batch", "warmup", "runs", "name", "rounds", "split", "layout", "upload")
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise Refused(400, f"unknown setting {unknown[0]!r}: allowed {', '.join(allowed)}")
    runtime = query.get("runtime", [runtime])[-1]
    if runtime not in kit.RUNTIMES:
        raise Refused(400, f"unknown runtime {runtime!r}: choose one of {', '.join(kit.RUNTIMES)}")
    upload = query.get("upload", ["file"])[-1]
    if upload not in UPLOADS:
        raise Refused(
            400, f"upload={upload!r}: give file (the model file as the body) or tar (its files, uncompressed)"
        )
    archived = kit.engines is not None and runtime in kit.engines.RUNTIMES
    if upload == "tar" and not archived:
        raise Refused(400, f"upload=tar: {runtime} takes the model file itself as the body (upload=file)")
    if upload == "file" and kit.RUNTIMES[runtime][0] in TWO_FILE_ENGINES:
        names, _ = kit.engines.upload_names(runtime)
        raise Refused(
            400, f"{runtime} runs a model of two files: send upload=tar, an uncompressed tar of {' and '.join(names)}"
        )
    layout = query.get("layout", ["NCHW"])[-1]
    if layout not in ("NCHW", "NHWC"):
        raise Refused(400, f"layout={layout!r}: give NCHW or NHWC")
    runs_text = query.get("runs", ["auto"])[-1]
    runs = None if runs_text in ("auto", "") else _int(query, key="runs", default=None, low=1, high=MAX_RUNS)
    name = query.get("name", ["model.onnx"])[-1][:200] or "model.onnx"
    return Settings(
        runtime,
        _int(query, key="threads", default=threads, low=1, high=1024),
        _int(query, key="batch", default=1, low=1, high=4096),
        _int(query, key="warmup", default=10, low=0, high=MAX_RUNS),
        runs,
        name,
        _int(query, key="rounds", default=15, low=2, high=1000),
        _int(query, key="split", default=0, low=0, high=1 << 40),
        layout,
        upload,
    )


def read_upload(kit, *, body: bytes, s: Settings, max_bytes: int) -> dict[str, bytes]:
    """The files of one model in an upload, by the names an export gives them: the body itself
    (``upload=file``) or the files of an uncompressed tar (``upload=tar``), checked strictly; ``Refused``
    (400) names what is wrong."""
    if not body:
        raise Refused(400, "the upload is empty: send the model file as the request body")
    if s.upload == "file":
        suffix = kit.RUNTIMES[s.runtime][1]
        return {"model" + (".onnx" if suffix == ".engine" else suffix): body}
    names, metadata = kit.engines.upload_names(s.runtime)
    allowed = f"{', '.join(names)} and optionally {metadata}"
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:  # "r:": uncompressed only
            for member in tar:
                if member.name not in (*names, metadata):  # also every path: "../x", "/x", "dir/x"
                    raise Refused(400, f"the archive holds {member.name[:80]!r}: {s.runtime} takes {allowed}")
                if not member.isreg() or member.issparse():
                    raise Refused(
                        400,
                        f"the archive's {member.name} is not a regular file (a link, a folder, a "
                        "sparse file): send the files themselves",
                    )
                if member.name in files:
                    raise Refused(400, f"the archive holds {member.name} twice")
                if member.size > max_bytes - sum(map(len, files.values())):
                    raise Refused(
                        413, f"the archive's files are over the server's limit of {max_bytes:,} bytes (--max-upload-mb)"
                    )
                source = tar.extractfile(member)  # a regular file (checked above): never None
                data = source.read() if source is not None else b""  # read, never extracted: the names written are ours
                if len(data) != member.size:
                    raise Refused(
                        400, f"the archive's {member.name} is cut off: {len(data):,} of {member.size:,} bytes"
                    )
                files[member.name] = data
    except (tarfile.TarError, EOFError) as e:
        raise Refused(
            400,
            f"upload=tar: the body is not an uncompressed tar archive ({kit._first_line(e)}): send "
            f"{allowed} as one (Python's tarfile, or `tar -cf`)",
        ) from None
    missing = [name for name in names if name not in files]
    if missing:
        raise Refused(400, f"the archive lacks {' and '.join(missing)}: {s.runtime} takes {allowed}")
    return {name: files[name] for name in (*names, metadata) if name in files}  # the model file first


@dataclass
class Job:
    models: list  # each uploaded model's files: name (as an export names them) -> bytes (one model, or A and B)
    settings: Settings
    queued: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None
    error: Refused | None = None


class Measurer:
    """One worker thread that times queued models one at a time, so timings never overlap."""

    def __init__(self, kit, log, max_queue: int = MAX_QUEUE):
        self.kit, self.log, self.max_queue = kit, log, max_queue
        self.jobs: queue.Queue = queue.Queue(maxsize=max_queue)
        self.lock = threading.Lock()
        self.waiting = 0  # submitted and not finished (queued + being timed)
        self.measured = 0
        self.job_seconds = 1.0  # how long a request takes to time, smoothed (for Retry-After)
        threading.Thread(target=self._work, name="edgenas-measurer", daemon=True).start()

    def retry_after(self) -> int:
        """Seconds until the queue has room again, about: one job's time (1 to 60 s)."""
        return max(1, min(60, math.ceil(self.job_seconds)))

    def submit(self, models: list, settings: Settings) -> dict:
        """Queue the models and wait for their bench JSON; ``Refused`` when they cannot be timed."""
        job = Job(models, settings)
        with self.lock:
            try:
                self.jobs.put_nowait(job)
            except queue.Full:
                raise Refused(
                    503,
                    f"{self.max_queue} requests are already waiting: try again later",
                    retry_after=self.retry_after(),
                ) from None
            self.waiting += 1
        job.done.wait()
        if job.error is not None:
            raise job.error
        if job.result is None:  # the worker stopped mid-job on something that is not an Exception
            raise Refused(500, "timing was interrupted: try again")
        return job.result

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            started = time.monotonic()
            try:
                job.result = self._measure(job)
            except Refused as e:
                job.error = e
            except self.kit.KitError as e:  # not an ONNX model, a shape the kit cannot time, a missing runtime
                job.error = Refused(400, str(e))
            except Exception as e:  # noqa: BLE001 - the server must outlive any one model
                job.error = Refused(500, f"timing failed: {type(e).__name__}: {self.kit._first_line(e)}")
            finally:
                with self.lock:
                    self.waiting -= 1
                    self.job_seconds = 0.8 * self.job_seconds + 0.2 * (time.monotonic() - started)
                job.done.set()

    def _measure(self, job: Job) -> dict:
        s = job.settings
        with tempfile.TemporaryDirectory(prefix="edgenas-serve-") as tmp:
            paths = []
            for i, files in enumerate(job.models):
                folder = Path(tmp) / str(i)  # each model in a folder of its own, under the names an export gives
                folder.mkdir()
                for name, data in files.items():
                    (folder / name).write_bytes(data)
                path = folder / next(iter(files))  # the model file comes first (read_upload)
                engines = self.kit.engines
                if engines and s.runtime in engines.RUNTIMES and not engines.metadata_path(path).exists():
                    engines.write_metadata(path, {"runtime": s.runtime, "layout": s.layout})
                paths.append(path)
            runners = [self._open(p, s, Path(tmp)) for p in paths]
            try:
                return self._time(job, runners, paths)
            finally:
                for r in runners:
                    r.close()

    def _open(self, onnx_path: Path, s: Settings, tmp: Path):
        kit = self.kit
        try:
            model = onnx_path
            if kit.RUNTIMES[s.runtime][0] == "tensorrt":
                model = build_engine(
                    kit, onnx_path=onnx_path, engine_path=tmp / f"{onnx_path.stem}.engine", batch=s.batch
                )
            return kit.open_runner(model, s.runtime, s.threads)
        except kit.KitError as e:  # name the upload, not the temporary file
            raise type(e)(str(e).replace(str(onnx_path), s.name)) from None

    def _time(self, job: Job, runners: list, paths: list) -> dict:
        kit, s = self.kit, job.settings
        inputs = [kit.bench_input(r.input_chw, s.batch) for r in runners]
        fns = [lambda r=r, x=x: r(x) for r, x in zip(runners, inputs)]
        warmup, runs = (s.warmup, s.runs) if s.runs is not None else auto_runs(kit, fns[0])
        started = time.monotonic()
        self.log(f"timing {s.name} ({len(fns)} model{'s' if len(fns) > 1 else ''}) on {s.runtime}: start {started:.6f}")
        before = kit.probe()
        if len(fns) == 1:
            samples, ratios = [kit.measure(fns[0], warmup=warmup, runs=runs)], None
        else:
            samples, ratios = alternate(kit, fns=fns, rounds=s.rounds, warmup=warmup, runs=runs)
        environment = kit.conditions.environment(before, kit.probe())
        finished = time.monotonic()
        self.log(f"timing {s.name}: end {finished:.6f} ({finished - started:.3f} s)")
        with self.lock:
            self.measured += 1
        timed = {"queued_s": round(started - job.queued, 6), "timed_from": started, "timed_to": finished}
        records = []
        for runner, path, sample in zip(runners, paths, samples):
            record = kit.bench_result(
                runner,
                batch=s.batch,
                warmup=warmup,
                samples_ms=sample,
                tool=f"edgenas-serve {kit.KIT_VERSION}",
                model_path=path,
                environment=environment,
            )
            record.update(model=s.name if len(paths) == 1 else f"{s.name}:{path.parent.name}", server=timed)
            records.append(record)
        if ratios is None:
            return records[0]
        return {
            "bench_a": records[0] | {"rounds": s.rounds},
            "bench_b": records[1] | {"rounds": s.rounds},
            "ratios": ratios,
            "server": timed,
        }


def auto_runs(kit, fn) -> tuple[int, int]:
    """(warmup, runs) sized to the model: at least AUTO_MIN_RUNS runs and AUTO_MIN_S of timing."""
    per_run = max(float(np.median(kit.measure(fn, warmup=1, runs=AUTO_PROBE_RUNS))), 1e-3)
    warmup = min(AUTO_WARMUP, math.ceil(AUTO_WARMUP_S * 1e3 / per_run))
    runs = max(AUTO_MIN_RUNS, math.ceil(AUTO_MIN_S * 1e3 / per_run))
    return warmup, min(runs, AUTO_MAX_RUNS, max(AUTO_MIN_RUNS, math.floor(AUTO_MAX_S * 1e3 / per_run)))


def alternate(kit, *, fns: list, rounds: int, warmup: int, runs: int) -> tuple[list, list]:
    """A and B timed in alternation, the order swapped every round (as ``edgenas compare models``):
    the samples of each, and per round median(B) / median(A)."""
    run_a, run_b = fns
    samples_a, samples_b, ratios = [], [], []
    for k in range(rounds):
        if k % 2 == 0:
            a, b = kit.measure(run_a, warmup=warmup, runs=runs), kit.measure(run_b, warmup=warmup, runs=runs)
        else:
            b, a = kit.measure(run_b, warmup=warmup, runs=runs), kit.measure(run_a, warmup=warmup, runs=runs)
        ratios.append(float(np.median(b) / np.median(a)))
        samples_a += a
        samples_b += b
    return [samples_a, samples_b], ratios


def build_engine(kit, *, onnx_path: Path, engine_path: Path, batch: int) -> Path:
    """A strongly typed TensorRT engine for ``batch`` built here, on the device, from the ONNX file
    (its precision is the graph's: edgenas sends an FP16 graph for tensorrt-fp16, Q/DQ for INT8)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise kit.KitMissingDependency(
            "TensorRT is not installed on the device (JetPack ships it; or pip install tensorrt)"
        ) from None
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if typed is None else 1 << int(typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise kit.KitError(f"not an ONNX model TensorRT can parse: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 28)
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    tensor = network.get_input(0)
    chw = tuple(tensor.shape)[1:]
    if any(d < 1 for d in chw):
        raise kit.KitError(f"the model's input shape {tuple(tensor.shape)} has dynamic dimensions besides the batch")
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, (1, *chw), (batch, *chw), (batch, *chw))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise kit.KitError("TensorRT could not build an engine from the model (see the server's log)")
    engine_path.write_bytes(memoryview(serialized))
    return engine_path


# -- HTTP ------------------------------------------------------------------------------------------
class DeviceServer(http.server.ThreadingHTTPServer):
    """Answers requests on threads; the one ``Measurer`` times the models, in the order they came."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG  # the listen() backlog

    def __init__(
        self,
        address,
        *,
        kit,
        token: str,
        runtime: str,
        threads: int | None,
        max_upload: int,
        log,
        max_queue: int = MAX_QUEUE,
    ):
        self.kit, self.token, self.runtime, self.threads = kit, token.encode(), runtime, threads
        self.max_upload, self.log = max_upload, log
        self.measurer = Measurer(kit, log, max_queue)
        super().__init__(address, Handler)

    def status(self) -> dict:
        kit = self.kit
        gpu = kit.RUNTIMES[self.runtime][2]
        return {
            "schema": SCHEMA,
            "device": kit.gpu_name() if gpu else kit.cpu_name(),
            "host": platform.node(),
            "runtime": self.runtime,
            "threads": self.threads or kit.available_cpus(),
            "runtimes": available_runtimes(kit),
            "versions": versions(kit) | {"edgenas_kit": kit.KIT_VERSION},
            "queue": self.measurer.waiting,
            "measured": self.measurer.measured,
            "max_upload_bytes": self.max_upload,
            "max_queue": self.measurer.max_queue,
        }


def available_runtimes(kit) -> list[str]:
    """The kit's runtimes this device has the packages for (a GPU is only found when a model loads)."""
    found = []
    try:
        import onnxruntime

        found.append("onnxruntime-cpu")
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            found.append("onnxruntime-cuda")
    except ImportError:
        pass
    try:
        import tensorrt  # noqa: F401

        found += ["tensorrt-fp16", "tensorrt-int8"]
    except ImportError:
        pass
    engines = getattr(kit, "engines", None)
    if engines:  # found, not imported (importing openvino starts its telemetry)
        found += [
            name
            for name, (engine, _, _) in engines.RUNTIMES.items()
            if importlib.util.find_spec(engines.PACKAGES[engine][0])
        ]
    return found


def versions(kit) -> dict:
    """Versions of what times the models here (null where a runtime is not installed)."""
    found = {"edgenas_kit": None, "python": platform.python_version(), "numpy": np.__version__}
    for name in ("onnxruntime", "tensorrt"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = None
    engines = getattr(kit, "engines", None)
    if engines:
        for engine in engines.PACKAGES:
            try:
                found[engines.PACKAGES[engine][1].split()[-1]] = engines.package_version(engine)
            except engines.EngineMissing:
                found[engines.PACKAGES[engine][1].split()[-1]] = None
    return found


class Handler(http.server.BaseHTTPRequestHandler):
    server: DeviceServer
    server_version = "edgenas-serve"
    timeout = READ_TIMEOUT_S

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _answer(self, handle) -> None:
        self.body_read = False
        retry_after = None
        try:
            self._authorise()
            status, body = 200, handle()
        except Refused as e:
            status, body, retry_after = e.status, {"error": e.reason}, e.retry_after
            self.close_connection = True  # an unread body must not be taken for the next request
            self._drain()
        data = (json.dumps(body) + "\n").encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if retry_after is not None:
                self.send_header("Retry-After", str(retry_after))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client left; nothing to tell it
            pass

    def _drain(self) -> None:
        """Read a refused request's body (within the upload limit) before answering: closing a socket
        with unread bytes resets the connection, and the client would never read the answer."""
        if self.body_read:
            return
        try:
            size = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if 0 < size <= self.server.max_upload:
            try:
                self.rfile.read(size)
            except OSError:
                pass
        self.body_read = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, unknown method), as JSON like the others."""
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # not 0.9, which http.server answers without a status line
        data = (json.dumps({"error": f"malformed request: {message or code}"}) + "\n").encode()
        try:
            self.send_response(code, message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(data)
        except OSError:
            pass

    def _authorise(self) -> None:
        given = self.headers.get("Authorization", "")
        if not given.startswith("Bearer "):
            raise Refused(401, "missing token: send the header Authorization: Bearer TOKEN (the server's --token-file)")
        if not hmac.compare_digest(given[len("Bearer ") :].strip().encode(), self.server.token):
            raise Refused(401, "wrong token: send the content of the server's --token-file")

    def _get(self) -> dict:
        if urllib.parse.urlsplit(self.path).path != "/status":
            raise Refused(404, f"unknown path {self.path[:80]!r}: GET /status, POST /bench or POST /paired")
        return self.server.status()

    def _post(self) -> dict:
        url = urllib.parse.urlsplit(self.path)
        if url.path not in ("/bench", "/paired"):
            raise Refused(404, f"unknown path {url.path[:80]!r}: GET /status, POST /bench or POST /paired")
        kit, settings = (
            self.server.kit,
            parse_settings(url.query, kit=self.server.kit, runtime=self.server.runtime, threads=self.server.threads),
        )
        body = self._body()
        if url.path == "/bench":
            parts = [body]
        elif not 0 < settings.split < len(body):
            raise Refused(
                400, f"split={settings.split} must fall inside the body ({len(body)} bytes): A's size in bytes"
            )
        else:
            parts = [body[: settings.split], body[settings.split :]]
        models = [read_upload(kit, body=part, s=settings, max_bytes=self.server.max_upload) for part in parts]
        return self.server.measurer.submit(models, settings)

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            raise Refused(411, "no Content-Length: send the model as a body of known length")
        try:
            size = int(length)
        except ValueError:
            raise Refused(400, f"Content-Length {length[:40]!r} is not a number") from None
        if size > self.server.max_upload:
            raise Refused(
                413,
                f"upload of {size:,} bytes is over the server's limit of {self.server.max_upload:,} "
                "bytes (--max-upload-mb)",
            )
        if size <= 0:
            raise Refused(400, "the upload is empty: send the model file as the request body")
        try:
            data = self.rfile.read(size)
        except OSError as e:  # a read timeout: the client stopped sending
            raise Refused(400, f"upload incomplete: {e}") from None
        finally:
            self.body_read = True
        if len(data) != size:
            raise Refused(400, f"upload incomplete: got {len(data):,} of {size:,} bytes")
        return data

    def log_message(self, format: str, *args) -> None:
        self.server.log(f"{self.address_string()} {format % args}")


# -- command line ----------------------------------------------------------------------------------
def read_token(kit, path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise kit.KitError(f"--token-file {path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if len(token) < 8:
        raise kit.KitError(
            f"--token-file {path}: the token must be at least 8 characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe())' > FILE)"
        )
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_arguments(p: argparse.ArgumentParser, kit) -> None:
    p.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this machine only)"
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free port")
    p.add_argument("--token-file", required=True, help="file holding the shared token every request must carry")
    p.add_argument("--runtime", default="onnxruntime-cpu", help=f"default runtime: one of {', '.join(kit.RUNTIMES)}")
    p.add_argument("--threads", type=int, help="default CPU threads (default: all available)")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, help="largest model accepted, MiB")
    p.add_argument(
        "--max-queue",
        type=int,
        default=MAX_QUEUE,
        help=f"requests that may wait to be timed (default {MAX_QUEUE}); more get 503 with Retry-After",
    )


def serve(args, kit) -> int:
    """Run the server until Ctrl-C or SIGTERM. Raises ``kit.KitError`` on bad settings."""
    token = read_token(kit, args.token_file)
    kit.check_runtime(args.runtime)
    if args.threads is not None and args.threads < 1:
        raise kit.KitError(f"--threads must be >= 1, got {args.threads}")
    if not args.max_upload_mb > 0:
        raise kit.KitError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if args.max_queue < 1:
        raise kit.KitError(f"--max-queue must be >= 1, got {args.max_queue}")

    def log(line: str) -> None:
        print(f"edgenas-serve {time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)

    try:
        server = DeviceServer(
            (args.host, args.port),
            kit=kit,
            token=token,
            runtime=args.runtime,
            threads=args.threads,
            max_upload=int(args.max_upload_mb * (1 << 20)),
            log=log,
            max_queue=args.max_queue,
        )
    except OSError as e:
        raise kit.KitError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host  # a TCP server's: always str
    if not is_loopback(args.host):
        log(
            f"warning: --host {args.host} makes this server reachable from the network; anyone with the token "
            "can run models on this device"
        )
    print(f"edgenas-serve: listening on http://{host}:{port} ({args.runtime}, {server.status()['device']})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
