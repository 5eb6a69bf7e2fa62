"""Time models on an edge device that runs ``edgenas_kit.py serve``: the HTTP client (``cost.OnDevice`` uses it).

``time_on_device`` sends one model and returns the device's ``edgenas.bench`` JSON: an ONNX file as
it is, the model of a kit engine runtime (LiteRT, ExecuTorch, OpenVINO, ncnn) as an uncompressed tar
of its files (``upload_body``). A device that does not answer is retried with exponential backoff for
a bounded time, then reported in one line (``DeviceUnavailable``); a request the device refuses is a
``DeviceRefused`` naming why.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from edgenas.config.profile import device_url_problem
from edgenas.device_kit import edgenas_engines as engines
from edgenas.errors import DeviceRefused, DeviceUnavailable, ParamError, UserInputError

TOKEN_ENV = "EDGENAS_DEVICE_TOKEN"
STATUS_SCHEMA = "edgenas.device/1"
STATUS_TIMEOUT_S = 10.0  # a status answer is immediate
BENCH_TIMEOUT_S = 1800.0  # waiting in the device's queue, plus a TensorRT engine build on a Jetson
DEFAULT_RETRY_S = 60.0  # how long an unreachable device is retried before the error
FIRST_BACKOFF_S = 0.5  # doubled after every failed attempt
MAX_BACKOFF_S = 10.0


def check_url(url: str, name: str = "device") -> str:
    """``http://HOST:PORT`` (a trailing slash is dropped); else a ``ParamError`` naming ``name``."""
    problem = device_url_problem(str(url))
    if problem:
        raise ParamError(name, url, problem)
    return f"http://{urllib.parse.urlsplit(str(url)).netloc}"


def read_token(token_file: str | Path | None = None, *, flag: str = "device_token_file") -> str:
    """The device's token: ``$EDGENAS_DEVICE_TOKEN`` if set, else the content of ``token_file``."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    if not token_file:
        raise UserInputError(f"the device needs its token: set {TOKEN_ENV} or name a file with {flag}")
    try:
        token = Path(token_file).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"{flag} {token_file}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if not token:
        raise UserInputError(
            f"{flag} {token_file}: the file is empty; it must hold the token the server was started with"
        )
    return token


def upload_kind(runtime: str) -> str:
    """How a model of ``runtime`` travels (the server's ``upload`` setting): "tar" for the kit's engine
    runtimes (the model, its weights and its metadata file), "file" for ONNX."""
    return "tar" if runtime in engines.RUNTIMES else "file"


def upload_body(path: str | Path, runtime: str) -> bytes:
    """What is sent for the model file ``path`` on ``runtime``: the file itself (``upload_kind`` "file"), or
    an uncompressed tar of it, the weights beside it and its metadata file where there is one, under the
    names the server takes (``edgenas_engines.upload_names``: model.xml, model.bin, model.xml.json, ...)."""
    path = Path(path)
    if upload_kind(runtime) == "file":
        return _read(path)
    names, metadata = engines.upload_names(runtime)
    local = [path, *engines.companion_files(path)]  # the model, its weights, its metadata: as names are ordered
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, source in zip([*names, metadata], local):
            if name == metadata and not source.is_file():
                continue  # optional: the server then records the runtime alone
            data = _read(source)
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644  # mtime 0, owner root: the same files give the same bytes
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UserInputError(f"{path}: cannot be read ({e.strerror or e})") from None


class DeviceClient:
    """Requests to one device server; ``retry_s`` bounds how long an unreachable server is retried."""

    def __init__(self, url: str, *, token: str, retry_s: float = DEFAULT_RETRY_S, timeout_s: float = BENCH_TIMEOUT_S):
        self.url, self.token, self.retry_s, self.timeout_s = check_url(url), token, retry_s, timeout_s
        self._max_upload: int | None = None  # the device's --max-upload-mb, in bytes, once asked

    def status(self, *, retry_s: float | None = None) -> dict:
        answer = self._request("GET", path="/status", timeout=STATUS_TIMEOUT_S, retry_s=retry_s)
        if answer.get("schema") != STATUS_SCHEMA:
            raise DeviceRefused(f"{self.url} is not an edgenas device server (status schema {answer.get('schema')!r})")
        return answer

    def bench(
        self,
        body: bytes,
        *,
        runtime: str,
        threads: int | None = None,
        batch: int = 1,
        warmup: int = 10,
        runs: int | None = None,
        name: str = "model.onnx",
    ) -> dict:
        """The device's bench JSON for one model, ``body`` as ``upload_body`` makes it for ``runtime`` (an ONNX
        file; a tar of the files of a LiteRT, ExecuTorch, OpenVINO or ncnn model); ``runs=None`` sizes the
        runs to the model."""
        query = {
            "runtime": runtime,
            "batch": batch,
            "warmup": warmup,
            "runs": runs or "auto",
            "name": name,
            "upload": upload_kind(runtime),
        }
        if threads is not None:
            query["threads"] = threads
        self._check_size(len(body), name)
        return self._request("POST", path="/bench?" + urllib.parse.urlencode(query), body=body, timeout=self.timeout_s)

    def paired(
        self,
        onnx_a: bytes,
        *,
        onnx_b: bytes,
        runtime: str,
        threads: int | None = None,
        batch: int = 1,
        rounds: int = 15,
        warmup: int = 5,
        runs: int = 20,
        name: str = "pair",
    ) -> dict:
        """A and B (each as ``upload_body`` makes it) timed in alternation on the device: ``{"bench_a", "bench_b", "ratios"}``."""
        query = {
            "runtime": runtime,
            "batch": batch,
            "rounds": rounds,
            "warmup": warmup,
            "runs": runs,
            "name": name,
            "split": len(onnx_a),
            "upload": upload_kind(runtime),
        }
        if threads is not None:
            query["threads"] = threads
        self._check_size(len(onnx_a) + len(onnx_b), name)
        return self._request(
            "POST", path="/paired?" + urllib.parse.urlencode(query), body=onnx_a + onnx_b, timeout=self.timeout_s
        )

    def _check_size(self, size: int, name: str) -> None:
        """Refuse here an upload the device would refuse (it closes the connection on an unread body)."""
        if self._max_upload is None:
            self._max_upload = int(self.status().get("max_upload_bytes", 0)) or None
        if self._max_upload and size > self._max_upload:
            raise DeviceRefused(
                f"{name}: {size:,} bytes is over the upload limit of the device at {self.url} "
                f"({self._max_upload:,} bytes; its --max-upload-mb)"
            )

    def _request(
        self, method: str, *, path: str, body: bytes | None = None, timeout: float, retry_s: float | None = None
    ) -> dict:
        budget = self.retry_s if retry_s is None else retry_s
        deadline, delay, attempts = time.monotonic() + budget, FIRST_BACKOFF_S, 0
        while True:
            attempts += 1
            try:
                return self._once(method, path=path, body=body, timeout=timeout)
            except _Retry as e:
                reason = e.reason
            if time.monotonic() + delay > deadline:
                raise DeviceUnavailable(
                    f"device {self.url} is not answering ({reason}) after {attempts} attempt"
                    f"{'s' if attempts > 1 else ''} in {budget:g} s: start `edgenas_kit.py serve` "
                    "there again (a search continues with --resume)",
                    reason=reason,
                )
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    def _once(self, method: str, *, path: str, body: bytes | None, timeout: float) -> dict:
        request = urllib.request.Request(
            self.url + path,
            data=body,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/octet-stream"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return _json(response.read(), self.url)
        except urllib.error.HTTPError as e:
            reason = _json(e.read(), self.url, quiet=True).get("error") or e.reason
            if e.code == 503:  # its queue is full: the device is there, just busy
                raise _Retry(f"busy: {reason}") from None
            raise DeviceRefused(
                f"device {self.url} refused {method} {path.split('?')[0]} ({e.code}): {reason}"
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as e:
            raise _Retry(_reason(e)) from None  # refused, reset, timed out, or cut off mid-answer


class _Retry(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _reason(e: BaseException) -> str:
    inner = getattr(e, "reason", None)
    if isinstance(inner, BaseException):
        e = inner
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _json(data: bytes, url: str, *, quiet: bool = False) -> dict:
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        if quiet:
            return {}
        raise DeviceRefused(f"{url} answered with something that is not edgenas JSON: {data[:60]!r}")
    return answer


def time_on_device(
    url: str,
    *,
    model_path: str | Path,
    token: str,
    runtime: str = "onnxruntime-cpu",
    threads: int | None = None,
    batch: int = 1,
    warmup: int = 10,
    runs: int | None = None,
    retry_s: float = DEFAULT_RETRY_S,
) -> dict:
    """Time the model file ``model_path`` (ONNX; for LiteRT, ExecuTorch, OpenVINO and ncnn the exported
    file, sent with the files beside it) on the device server at ``url``; the device's bench JSON.

    The device builds what ``runtime`` needs (a TensorRT engine for ``batch``), times it with the
    kit's own measurement (``runs=None``: warm-up, then at least 30 runs and 0.3 s) and answers
    with the ``edgenas.bench`` record: ``p50_ms``, its ``device``, ``host``, ``runtime_version``.
    """
    path = Path(model_path)
    body = upload_body(path, runtime)
    client = DeviceClient(url, token=token, retry_s=retry_s)
    return client.bench(body, runtime=runtime, threads=threads, batch=batch, warmup=warmup, runs=runs, name=path.name)
