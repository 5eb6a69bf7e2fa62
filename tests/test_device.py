"""The device server (``edgenas_kit.py serve``) on loopback, started from a venv where torch cannot
be imported, and what talks to it: the client, a search with a ``[budget] device``, bench and compare."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_kit import device_env, export_onnx

from edgenas.deploy.export.exporter import _copy_kit
from edgenas.errors import (
    DeviceRefused,
    DeviceUnavailable,
    ProfileError,
    UserInputError,
)
from edgenas.runtime.device_client import DeviceClient, read_token, time_on_device

TOKEN = "loopback-test-token-0123"
MAX_UPLOAD_MB = 1


class Server:
    """``python -I edgenas_kit.py serve`` in a subprocess; ``start`` again after ``kill`` on the same port."""

    def __init__(self, python: Path, folder: Path):
        self.python, self.folder, self.proc, self.port = python, folder, None, 0
        (folder / "token").write_text(TOKEN + "\n")

    def start(self) -> Server:
        self.log = self.folder / "server.log"
        out = self.folder / "server.out"
        with open(out, "w") as stdout, open(self.log, "a") as stderr:
            self.proc = subprocess.Popen(
                [
                    str(self.python),
                    "-I",
                    "edgenas_kit.py",
                    "serve",
                    "--port",
                    str(self.port),
                    "--token-file",
                    "token",
                    "--threads",
                    "1",
                    "--max-upload-mb",
                    str(MAX_UPLOAD_MB),
                ],
                cwd=self.folder,
                stdout=stdout,
                stderr=stderr,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = out.read_text()
            if "listening on http://127.0.0.1:" in text:
                self.port = int(text.split("127.0.0.1:")[1].split()[0])
                return self
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.1)
        raise AssertionError("the server did not start: " + self.log.read_text())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def measured(self) -> int:
        return DeviceClient(self.url, token=TOKEN, retry_s=5).status()["measured"]


@pytest.fixture(scope="module")
def device_python(tmp_path_factory) -> Path:
    return device_env(tmp_path_factory.mktemp("venv") / "venv")


@pytest.fixture(scope="module")
def server(device_python, tmp_path_factory):
    folder = tmp_path_factory.mktemp("device")
    _copy_kit(folder)  # edgenas_kit.py, edgenas_env.py, edgenas_serve.py: what `edgenas export` copies
    s = Server(device_python, folder).start()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.onnx"
    export_onnx(path, width=8, depth=3, size=16)
    return path


def raw(server: Server, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None):
    """One request as sent, answered with (status, JSON)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


# -- the server ------------------------------------------------------------------------------------
def test_the_server_runs_without_torch_and_answers_status(server, device_python):
    probe = "import importlib.util as u; print([n for n in ('torch', 'edgenas', 'onnx') if u.find_spec(n)])"
    assert (
        subprocess.run(
            [str(device_python), "-I", "-c", probe], capture_output=True, text=True, timeout=60
        ).stdout.strip()
        == "[]"
    )
    status = DeviceClient(server.url, token=TOKEN).status()
    assert status["schema"] == "edgenas.device/1" and status["runtime"] == "onnxruntime-cpu"
    assert "onnxruntime-cpu" in status["runtimes"] and status["versions"]["onnxruntime"]
    assert status["versions"]["edgenas_kit"] and status["queue"] == 0 and status["threads"] == 1
    assert status["max_upload_bytes"] == MAX_UPLOAD_MB << 20


def test_time_on_device_returns_the_kits_bench_json(server, model):
    from edgenas.device_kit import edgenas_kit as kit

    record = time_on_device(server.url, model_path=model, token=TOKEN, threads=1, warmup=2, runs=25)
    kit.validate_bench(record)
    assert record["runs"] == 25 and record["threads"] == 1 and record["input_shape"] == [1, 3, 16, 16]
    assert record["model"] == "model.onnx" and record["model_sha256"] == kit.file_sha256(model)
    assert record["tool"].startswith("edgenas-serve") and record["device"] and record["host"]
    auto = time_on_device(
        server.url, model_path=model, token=TOKEN, threads=1
    )  # runs sized to the model, as a search times
    assert auto["runs"] >= 30


def test_refused_requests_get_a_clear_status_and_the_server_goes_on(server, model):
    onnx = model.read_bytes()
    cases = [
        (("GET", "/status"), {}, None, 401, "missing token"),
        (("GET", "/status"), {"Authorization": "Bearer wrong-token-xxxxxxxx"}, None, 401, "wrong token"),
        (
            ("POST", "/bench"),
            {**AUTH, "Content-Length": str((MAX_UPLOAD_MB << 20) + 1)},
            None,
            413,
            "over the server's limit",
        ),
        (("POST", "/bench"), AUTH, onnx[: len(onnx) // 2], 400, "is not an ONNX model"),
        (("POST", "/bench"), AUTH, b"this is not a model", 400, "is not an ONNX model"),
        (("POST", "/bench"), AUTH, b"", 400, "the upload is empty"),
        (("POST", "/bench?threads=many"), AUTH, onnx, 400, "threads='many' is not an integer"),
        (("POST", "/bench?runtime=tflite"), AUTH, onnx, 400, "unknown runtime 'tflite'"),
        (("POST", "/bench?colour=red"), AUTH, onnx, 400, "unknown setting 'colour'"),
        (("POST", "/upload"), AUTH, onnx, 404, "unknown path"),
        (("POST", "/paired?split=0"), AUTH, onnx, 400, "split=0 must fall inside the body"),
    ]
    for (method, path), headers, body, status, reason in cases:
        got, answer = raw(server, method, path, body=body, headers=headers)
        assert (got, reason in answer["error"]) == (status, True), (path, headers.keys(), got, answer)
        assert raw(server, "GET", "/status", headers=AUTH)[0] == 200  # still serving
    with pytest.raises(DeviceRefused, match=r"refused GET /status \(401\): wrong token"):
        time_on_device(server.url, model_path=model, token="wrong-token-xxxxxxxx")


def test_a_malformed_request_and_a_client_that_stops_mid_upload(server, model):
    import socket

    for request, status in ((b"GET /status HTTP/1.1 junk\r\n\r\n", b"400"), (b"BREW /pot HTTP/1.1\r\n\r\n", b"501")):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(request)
            answer = b"".join(iter(lambda: s.recv(4096), b""))
            assert answer.split()[1] == status and b'{"error": "malformed request: ' in answer, answer
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:  # claims 1000 bytes, sends 10
        s.sendall(
            f"POST /bench HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Length: 1000\r\n\r\n0123456789".encode()
        )
        s.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: s.recv(4096), b""))
        assert answer.split()[1] == b"400" and b"upload incomplete: got 10 of 1,000 bytes" in answer, answer
    assert time_on_device(server.url, model_path=model, token=TOKEN, threads=1, warmup=1, runs=5)["runs"] == 5


def test_two_clients_at_once_are_timed_one_after_the_other(server, model):
    answers = []

    def client():
        answers.append(time_on_device(server.url, model_path=model, token=TOKEN, threads=1, warmup=5, runs=400))

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(answers) == 2
    (_, a1), (b0, _) = sorted((r["server"]["timed_from"], r["server"]["timed_to"]) for r in answers)
    assert a1 <= b0, "the two timed intervals overlap"
    kinds = [
        ("start" if ": start " in line else "end")
        for line in server.log.read_text().splitlines()
        if line.split()[2:3] == ["timing"]
    ]
    assert len(kinds) >= 4 and kinds == ["start", "end"] * (len(kinds) // 2)  # the log: never two starts in a row


def test_the_client_retries_with_backoff_then_gives_one_line(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(DeviceUnavailable) as info:
        DeviceClient(f"http://127.0.0.1:{port}", token=TOKEN, retry_s=1.2).status()
    assert 0.5 <= time.monotonic() - started < 10
    message = str(info.value)
    assert "\n" not in message and "is not answering" in message and "attempts in 1.2 s" in message


def test_the_token_comes_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGENAS_DEVICE_TOKEN", raising=False)
    with pytest.raises(UserInputError, match="set EDGENAS_DEVICE_TOKEN or name a file with budget.device_token_file"):
        read_token(None, flag="budget.device_token_file")
    (tmp_path / "t").write_text("from-file\n")
    assert read_token(tmp_path / "t") == "from-file"
    with pytest.raises(UserInputError, match="cannot be read"):
        read_token(tmp_path / "missing")
    monkeypatch.setenv("EDGENAS_DEVICE_TOKEN", "from-env")
    assert read_token(tmp_path / "t") == "from-env"


@pytest.mark.parametrize(
    "budget,message",
    [
        (
            'device = "127.0.0.1:8765"',
            "budget.device = '127.0.0.1:8765' is not allowed; give the device server's address",
        ),
        ('device = "https://host:8765"', "give the device server's address as http://HOST:PORT"),
        ('device = "http://host:8765"\nruntime = "torch-cpu"', "cannot run on a device server"),
        ('device_token_file = "token"', "budget.device_token_file is set but budget.device is not"),
        ('device = "http://host:1"\ndevice_retry_s = 0', "budget.device_retry_s = 0.0 is not allowed"),
    ],
)
def test_device_budget_settings_are_checked(tmp_path, budget, message):
    from edgenas.config.profile import load_profile

    path = tmp_path / "p.toml"
    path.write_text(f"[budget]\n{budget}\n")
    with pytest.raises(ProfileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_profile(path)


# -- a search against the device ---------------------------------------------------------------------
def device_profile(path: Path, url: str, *, max_latency_ms: float, retry_s: float = 1.0) -> Path:
    """tests/data/profiles/ci.toml, wider (32 -> 8 in one step), its latency budget measured on ``url``."""
    from conftest import CI_PROFILE

    text = CI_PROFILE.read_text().replace("max_width = 12", "max_width = 32").replace("min_width = 4", "min_width = 8")
    text = text.replace("width_step = 4", "width_step = 24").replace(
        "[data]",
        (
            f'[budget]\nmax_latency_ms = {max_latency_ms}\nbatch = 64\ndevice = "{url}"\ndevice_retry_s = {retry_s}\n\n[data]'
        ),
    )
    path.write_text(text)
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_search_measures_on_the_device_skips_over_budget_and_resumes_without_measuring(
    server, tmp_path, monkeypatch, one_thread
):
    import edgenas
    from edgenas.runtime.cost import OnDevice
    from edgenas.runtime.device_client import DeviceClient
    from edgenas.runtime.target import Target
    from edgenas.search.space import Arch

    monkeypatch.setenv("EDGENAS_DEVICE_TOKEN", TOKEN)
    source = OnDevice(
        DeviceClient(server.url, token=TOKEN), Target("classify", (1, 8, 8), 10, "onnxruntime-cpu", 1, 64)
    )
    widest = min(source.latency_ms(Arch.plain(2, 32)) for _ in range(2))  # the first candidate: over half of it
    budget = round(widest / 2, 4)
    profile = device_profile(tmp_path / "device.toml", server.url, max_latency_ms=budget)
    before, lines = server.measured(), []
    summary = edgenas.discover(profile, dataset="digits", out=tmp_path / "run", device="cpu", log=lines.append)
    measured = server.measured() - before

    journal, latencies = read_jsonl(tmp_path / "run" / "journal.jsonl"), read_jsonl(tmp_path / "run" / "latency.jsonl")
    assert any(r["status"] == "skipped" and "latency" in r["reason"] for r in journal)
    assert any(r["status"] == "trained" for r in journal)
    for r in journal:  # skipped exactly when the device's figure is over the budget
        assert (r["status"] == "skipped") == (r["latency_ms"] > budget), r
    keys = [r["key"] for r in latencies]
    assert len(keys) == len(set(keys)) == measured  # each architecture measured once, each measurement kept
    status = DeviceClient(server.url, token=TOKEN).status()
    assert all(
        r["source"]["source"] == "device"
        and r["source"]["url"] == server.url
        and r["source"]["device"] == status["device"]
        and r["source"]["batch"] == 64
        for r in latencies
    )
    assert summary["latency_ms"] <= budget and any("ahead of need" in line for line in lines)

    for name in ("summary.json", "model.pt"):  # as if killed before the final training
        (tmp_path / "run" / name).unlink()
    before = server.measured()
    again = edgenas.discover(
        profile, dataset="digits", out=tmp_path / "run", device="cpu", resume=True, log=lines.append
    )
    assert server.measured() == before and again["arch"] == summary["arch"]  # nothing measured again
    assert read_jsonl(tmp_path / "run" / "latency.jsonl") == latencies


def test_a_search_is_refused_before_run_json_when_the_device_does_not_answer(tmp_path, monkeypatch):
    import socket

    from click.testing import CliRunner

    from edgenas.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = device_profile(tmp_path / "p.toml", f"http://127.0.0.1:{port}", max_latency_ms=1.0)
    monkeypatch.setenv("EDGENAS_DEVICE_TOKEN", TOKEN)
    r = CliRunner().invoke(
        main, ["discover", "--profile", str(profile), "--out", str(tmp_path / "run"), "--device", "cpu"]
    )
    assert r.exit_code == 2, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith(
        f"edgenas: error: budget.device http://127.0.0.1:{port} does not answer (Connection refused)"
    )
    assert not (tmp_path / "run" / "run.json").exists()
    monkeypatch.delenv("EDGENAS_DEVICE_TOKEN")
    r = CliRunner().invoke(
        main, ["discover", "--profile", str(profile), "--out", str(tmp_path / "run"), "--device", "cpu"]
    )
    assert r.exit_code == 2 and "set EDGENAS_DEVICE_TOKEN or name a file with budget.device_token_file" in r.output


@pytest.mark.slow
def test_a_device_killed_mid_search_stops_it_in_one_line_and_resume_ends_at_the_same_arch(
    device_python, tmp_path, monkeypatch, one_thread
):
    import edgenas

    folder = tmp_path / "device"
    folder.mkdir()
    _copy_kit(folder)
    server = Server(device_python, folder).start()
    try:
        # A budget nothing breaks: the decisions do not hang on the figures of a noisy shared machine.
        profile = device_profile(tmp_path / "device.toml", server.url, max_latency_ms=1e6, retry_s=1.0)
        monkeypatch.setenv("EDGENAS_DEVICE_TOKEN", TOKEN)
        reference = edgenas.discover(
            profile, dataset="digits", out=tmp_path / "whole", device="cpu", log=lambda _: None
        )

        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [
            str(Path(sys.executable).with_name("edgenas")),
            "discover",
            "--profile",
            str(profile),
            "--out",
            str(tmp_path / "run"),
            "--device",
            "cpu",
        ]
        search = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        journal = tmp_path / "run" / "journal.jsonl"
        deadline = time.monotonic() + 240
        while not (journal.exists() and journal.read_text().count("\n") >= 1) and time.monotonic() < deadline:
            assert search.poll() is None, search.communicate()
            time.sleep(0.05)
        server.kill()
        _, err = search.communicate(timeout=240)
        assert search.returncode == 1, err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"edgenas: error: device {server.url} is not answering") and "--resume" in last, err
        assert "Traceback" not in err
        records = read_jsonl(journal)  # every line whole
        assert 1 <= len(records) < reference["candidates"] and not (tmp_path / "run" / "summary.json").exists()

        server.start()  # the same port: the profile names it
        resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=240)
        assert resumed.returncode == 0, resumed.stderr
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["arch"] == reference["arch"]
        assert read_jsonl(journal)[: len(records)] == records
        keys = [r["key"] for r in read_jsonl(tmp_path / "run" / "latency.jsonl")]
        assert len(keys) == len(set(keys))
    finally:
        server.kill()


# -- bench and compare against the device ------------------------------------------------------------
def test_bench_and_compare_with_device(server, model, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edgenas.cli import main
    from edgenas.deploy.bench import read_bench

    (tmp_path / "token").write_text(TOKEN)
    runner = CliRunner()
    r = runner.invoke(
        main,
        [
            "bench",
            str(model),
            "--device",
            server.url,
            "--device-token-file",
            str(tmp_path / "token"),
            "--threads",
            "1",
            "--warmup",
            "2",
            "--runs",
            "20",
            "--json",
            str(tmp_path / "b.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    record = read_bench(tmp_path / "b.json")
    assert record["runs"] == 20 and record["tool"].startswith("edgenas-serve") and record["model"] == str(model)

    monkeypatch.setenv("EDGENAS_DEVICE_TOKEN", TOKEN)
    r = runner.invoke(
        main,
        [
            "compare",
            "models",
            str(model),
            str(model),
            "--device",
            server.url,
            "--threads",
            "1",
            "--rounds",
            "6",
            "--warmup",
            "1",
            "--runs",
            "5",
            "--json-a",
            str(tmp_path / "a.json"),
        ],
    )
    assert r.exit_code in (0, 1) and "6 rounds of A and B in alternation on onnxruntime-cpu" in r.output, r.output
    assert read_bench(tmp_path / "a.json")["rounds"] == 6

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    for args, message in [
        (["bench", str(engine), "--device", server.url], "--device sends an ONNX model"),
        (["bench", str(model), "--device", "localhost"], "--device localhost: give the device server's address"),
        (
            ["bench", str(model), "--device", server.url, "--runtime", "torch-cpu"],
            "--runtime torch-cpu: a device server",
        ),
        (["compare", "files", "a.json", "b.json", "--device", server.url], "No such option"),  # --device times models
    ]:
        r = runner.invoke(main, args)
        assert r.exit_code == 2 and message in r.output, (args, r.output)


# -- a latency table built on the device, and a search that predicts with it --------------------------
@pytest.mark.slow
def test_a_table_built_on_the_device_predicts_a_search_whose_winner_the_device_measures(
    server, tmp_path, monkeypatch, one_thread
):
    from click.testing import CliRunner

    import edgenas
    from edgenas.cli import main

    monkeypatch.setenv("EDGENAS_DEVICE_TOKEN", TOKEN)
    profile = device_profile(tmp_path / "device.toml", server.url, max_latency_ms=1e6)
    profile.write_text(
        profile.read_text().replace("max_width = 32", "max_width = 16").replace("width_step = 24", "width_step = 8")
    )  # under the 1 MB upload limit
    table = tmp_path / "table.json"
    runner, before = CliRunner(), server.measured()
    r = runner.invoke(
        main,
        [
            "latency-table",
            "--profile",
            str(profile),
            "--device",
            server.url,
            "--quick",
            "--model",
            "regression",
            "--samples",
            "24",
            "--out",
            str(table),
        ],
    )
    assert r.exit_code == 0, r.output
    built = json.loads(table.read_text())
    status = DeviceClient(server.url, token=TOKEN).status()
    assert built["built_for"]["device_url"] == server.url and built["built_for"]["device"] == status["device"]
    assert built["built_for"]["batch"] == 64 and server.measured() - before == 24 + 1  # the networks, one empty graph
    r = runner.invoke(
        main,
        [
            "latency-check",
            str(table),
            "--device",
            server.url,
            "--quick",
            "--samples",
            "4",
            "--json",
            str(tmp_path / "check.json"),
        ],
    )
    assert r.exit_code == 0 and "4 random networks: median |error|" in r.output, r.output
    assert json.loads((tmp_path / "check.json").read_text())["measured_on"]["device_url"] == server.url

    profile.write_text(profile.read_text().replace("[budget]\n", f'[budget]\nlatency_table = "{table}"\n'))
    before = server.measured()
    summary = edgenas.discover(profile, dataset="digits", out=tmp_path / "run", device="cpu", log=lambda _: None)
    assert summary["latency_source"]["source"] == "table" and summary["latency_source"]["device_url"] == server.url
    assert summary["latency_measured_on"]["source"] == "device" and summary["latency_ms"] > 0
    assert server.measured() - before == 2  # no candidate: one empty graph (the device's name), the winner

    built["built_for"]["device"] = "another board"
    table.write_text(json.dumps(built))
    with pytest.raises(ProfileError, match="was built for device 'another board'"):
        edgenas.discover(profile, dataset="digits", out=tmp_path / "run2", device="cpu", log=lambda _: None)
    assert not (tmp_path / "run2" / "run.json").exists()
    r = runner.invoke(main, ["latency-check", str(table), "--device", server.url, "--quick", "--samples", "4"])
    assert r.exit_code == 2 and "was built for device 'another board'" in r.output, r.output


@pytest.mark.parametrize("name", ["cpu-1thread", "jetson-fp16"])
def test_the_target_profiles_show_the_device_line_commented(name):
    from importlib import resources

    from edgenas.config.profile import load_profile, parse_profile

    text = (resources.files("edgenas.builtin_profiles") / f"{name}.toml").read_text()
    assert load_profile(name).budget.device == ""
    uncommented = text.replace("# device = ", "device = ").replace("# device_token_file = ", "device_token_file = ")
    budget = parse_profile(uncommented, name, name).budget
    assert budget.device.startswith("http://") and budget.device_token_file.endswith(".token")


def test_a_model_over_the_upload_limit_is_refused_before_it_is_sent(server, tmp_path):
    big = tmp_path / "big.onnx"
    big.write_bytes(b"\0" * ((MAX_UPLOAD_MB << 20) + 1))
    with pytest.raises(DeviceRefused, match=r"big.onnx: 1,048,577 bytes is over the upload limit .* --max-upload-mb"):
        time_on_device(server.url, model_path=big, token=TOKEN)


def test_serve_refuses_bad_settings_in_one_line(server, device_python):
    from edgenas.device_kit import edgenas_serve as serve

    (server.folder / "short").write_text("abc\n")
    for args, message in [
        (["--token-file", "missing"], "--token-file missing: cannot be read"),
        (["--token-file", "short"], "the token must be at least 8 characters"),
        (["--token-file", "token", "--port", str(server.port)], f"cannot listen on 127.0.0.1:{server.port}"),
        (["--token-file", "token", "--runtime", "tflite"], "unknown runtime 'tflite'"),
        (["--port", "0"], "the following arguments are required: --token-file"),
    ]:
        r = subprocess.run(
            [str(device_python), "-I", "edgenas_kit.py", "serve", *args],
            cwd=server.folder,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert serve.is_loopback("127.0.0.1") and serve.is_loopback("::1") and serve.is_loopback("localhost")
    assert not serve.is_loopback("0.0.0.0") and not serve.is_loopback("192.168.1.20")


# -- OpenVINO and ncnn: a model of two files, sent as one uncompressed tar ---------------------------
TWO_FILE_RUNTIMES = ("openvino-cpu", "ncnn-cpu")


@pytest.fixture(scope="module")
def engine_server(tmp_path_factory):
    """A server in a venv with numpy, onnxruntime, openvino and ncnn only (no torch, no edgenas)."""
    from edgenas.runtime.backend import is_available

    if not all(is_available(r) for r in TWO_FILE_RUNTIMES):
        pytest.skip("openvino and ncnn (pip install 'edgenas[openvino,ncnn]') convert the models here")
    python = device_env(tmp_path_factory.mktemp("venv") / "venv", "openvino", "ncnn")
    folder = tmp_path_factory.mktemp("engines")
    _copy_kit(folder)
    s = Server(python, folder).start()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def two_file_models(tmp_path_factory) -> dict[str, Path]:
    """A small random-weight classifier converted by the openvino-cpu and ncnn-cpu plug-ins, as export names them."""
    import torch

    from edgenas.runtime.backend import backend_of
    from edgenas.search.space import Arch
    from edgenas.training.network import build_model

    torch.manual_seed(0)
    model = build_model(Arch.plain(3, 8), 3, 10).eval()
    folder = tmp_path_factory.mktemp("two-file")
    return {
        runtime: backend_of(runtime).convert(
            model, out=folder / f"model{backend_of(runtime).suffix}", input_chw=(3, 16, 16)
        )
        for runtime in TWO_FILE_RUNTIMES
    }


@pytest.mark.parametrize("runtime", TWO_FILE_RUNTIMES)
def test_an_openvino_or_ncnn_model_is_timed_on_the_device_from_one_archive(engine_server, two_file_models, runtime):
    from edgenas.device_kit import edgenas_kit as kit

    status = DeviceClient(engine_server.url, token=TOKEN).status()
    assert runtime in status["runtimes"] and status["versions"][runtime.split("-")[0]]
    path = two_file_models[runtime]
    record = time_on_device(
        engine_server.url, model_path=path, token=TOKEN, runtime=runtime, threads=1, warmup=2, runs=10
    )
    kit.validate_bench(record)
    assert record["runtime"] == runtime and record["runs"] == 10 and record["threads"] == 1
    assert record["input_shape"] == [1, 3, 16, 16] and record["model"] == path.name
    assert record["runtime_version"] == status["versions"][runtime.split("-")[0]]


def _tar(members: list[tuple[str, bytes, bytes]]) -> bytes:
    """An uncompressed tar of (name, type, data) members: tarfile.REGTYPE, SYMTYPE (data: the link target), ..."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, __import__("io").BytesIO(data))
            else:
                info.linkname = data.decode()
                tar.addfile(info)
    return buffer.getvalue()


def test_an_archive_is_read_strictly_and_the_server_goes_on(engine_server, two_file_models):
    import gzip
    import tarfile

    from edgenas.runtime.device_client import upload_body

    xml = two_file_models["openvino-cpu"]
    files = [(p.name.replace(xml.stem, "model"), p.read_bytes()) for p in (xml, xml.with_suffix(".bin"))]
    good = _tar([(name, tarfile.REGTYPE, data) for name, data in files])
    assert tarfile.open(fileobj=__import__("io").BytesIO(upload_body(xml, "openvino-cpu"))).getnames() == [
        "model.xml",
        "model.bin",
        "model.xml.json",
    ]
    path = "/bench?runtime=openvino-cpu&threads=1&warmup=1&runs=3&upload=tar"
    (xml_name, xml_data), (bin_name, bin_data) = files
    cases = [
        (
            "/bench?runtime=openvino-cpu",
            good,
            400,
            "runs a model of two files: send upload=tar, an uncompressed tar of model.xml and model.bin",
        ),
        ("/bench?runtime=onnxruntime-cpu&upload=tar", good, 400, "takes the model file itself as the body"),
        ("/bench?upload=zip&runtime=openvino-cpu", good, 400, "upload='zip': give file"),
        (path, gzip.compress(good), 400, "the body is not an uncompressed tar archive"),
        (path, b"not a tar at all" * 64, 400, "the body is not an uncompressed tar archive"),
        (path, good[:700], 400, "upload=tar: the body is not an uncompressed tar archive"),  # cut inside model.xml
        (
            path,
            _tar([("../model.xml", tarfile.REGTYPE, xml_data), (bin_name, tarfile.REGTYPE, bin_data)]),
            400,
            "the archive holds '../model.xml': openvino-cpu takes model.xml, model.bin and optionally model.xml.json",
        ),
        (path, _tar([("/tmp/model.xml", tarfile.REGTYPE, xml_data)]), 400, "the archive holds '/tmp/model.xml'"),
        (path, _tar([("sub/model.bin", tarfile.REGTYPE, bin_data)]), 400, "the archive holds 'sub/model.bin'"),
        (
            path,
            _tar([(xml_name, tarfile.REGTYPE, xml_data), (bin_name, tarfile.SYMTYPE, b"/etc/passwd")]),
            400,
            "the archive's model.bin is not a regular file",
        ),
        (
            path,
            _tar([(xml_name, tarfile.REGTYPE, xml_data), (xml_name, tarfile.REGTYPE, xml_data)]),
            400,
            "the archive holds model.xml twice",
        ),
        (path, _tar([(xml_name, tarfile.REGTYPE, xml_data)]), 400, "the archive lacks model.bin"),
        (
            path,
            _tar([(xml_name, tarfile.REGTYPE, xml_data), (bin_name, tarfile.REGTYPE, b"")]),
            400,
            "is not a model OpenVINO can compile",
        ),
        (
            "/bench?runtime=ncnn-cpu&upload=tar",
            good,
            400,
            "the archive holds 'model.xml': ncnn-cpu takes model.ncnn.param",
        ),
    ]
    for query, body, status, reason in cases:
        got, answer = raw(engine_server, "POST", query, body=body, headers=AUTH)
        assert (got, reason in answer.get("error", "")) == (status, True), (query, got, answer)
    got, answer = raw(
        engine_server, "POST", path, body=good, headers=AUTH
    )  # without its metadata: NCHW, shape from the IR
    assert got == 200 and answer["runs"] == 3 and answer["input_shape"] == [1, 3, 16, 16], answer


def test_a_search_budget_on_the_device_times_candidates_on_openvino_and_ncnn(engine_server, monkeypatch, one_thread):
    """What a search with ``[budget] device`` and an OpenVINO or ncnn runtime does for each candidate."""
    from edgenas.runtime.cost import OnDevice
    from edgenas.runtime.target import Target
    from edgenas.search.space import Arch

    for runtime in TWO_FILE_RUNTIMES:
        source = OnDevice(
            DeviceClient(engine_server.url, token=TOKEN), Target("classify", (1, 8, 8), 10, runtime, 1, 4)
        )
        source.check()
        before = engine_server.measured()
        assert source.latency_ms(Arch.plain(2, 8)) > 0 and engine_server.measured() == before + 1
        assert source.identity()["runtime"] == runtime and source.identity()["source"] == "device"
