#!/usr/bin/env python3
"""Plain HTTP clients at once against the device server (``edgenas_kit.py serve``): each should get an
answer, or a 503 with Retry-After, and never a reset connection.

    python benchmarks/serve_load.py --clients 20                  # the server's default queue (32)
    python benchmarks/serve_load.py --clients 20 --max-queue 4 --busy   # a smaller queue, the device busy first

Starts the server from the kit's files in a temporary folder, sends one tiny ONNX model per client
(``http.client``, no retries) after a barrier, and prints how each request ended.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from importlib import resources
from pathlib import Path

TOKEN = "serve-load-token-0123"
KIT_FILES = ("edgenas_kit.py", "edgenas_env.py", "edgenas_serve.py")


def tiny_onnx(path: Path) -> bytes:
    """A two-layer network of the space on 3x8x8 inputs, as ONNX: microseconds per run."""
    import torch

    from edgenas.search.space import Arch
    from edgenas.training.network import build_model

    torch.manual_seed(0)
    model = build_model(Arch.plain(2, 4), 3, 10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            torch.randn(1, 3, 8, 8),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path.read_bytes()


class Server:
    """``python -I edgenas_kit.py serve`` in a subprocess, on a free loopback port."""

    def __init__(self, folder: Path, *, max_queue: int | None, python: str = sys.executable):
        kit = resources.files("edgenas.device_kit")
        for name in KIT_FILES:
            (folder / name).write_bytes((kit / name).read_bytes())
        (folder / "token").write_text(TOKEN + "\n")
        args = [python, "-I", "edgenas_kit.py", "serve", "--port", "0", "--token-file", "token", "--threads", "1"]
        args += ["--max-queue", str(max_queue)] if max_queue is not None else []
        self.out, self.log = folder / "server.out", folder / "server.log"
        with open(self.out, "w") as stdout, open(self.log, "w") as stderr:
            self.proc = subprocess.Popen(args, cwd=folder, stdout=stdout, stderr=stderr)
        deadline = time.monotonic() + 60
        while "listening on http://127.0.0.1:" not in self.out.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the server did not start: " + self.log.read_text()[-2000:])
            time.sleep(0.05)
        self.port = int(self.out.read_text().split("127.0.0.1:")[1].split()[0])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 300) -> tuple:
    """One plain request: (status, Retry-After header or None, JSON answer); an exception if the connection fails."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            method,
            path,
            body=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/octet-stream"},
        )
        response = conn.getresponse()
        return response.status, response.getheader("Retry-After"), json.loads(response.read() or b"{}")
    finally:
        conn.close()


def wait_busy(port: int, timeout: float = 60) -> None:
    """Until the server is timing something (its queue counts the job in flight)."""
    deadline = time.monotonic() + timeout
    while request(port, "GET", "/status")[2].get("queue", 0) < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("the long request never started")
        time.sleep(0.02)


def fire(port: int, body: bytes, *, clients: int, runs: int) -> dict:
    """``clients`` threads send the model at once (after a barrier); how each request ended, counted."""
    barrier, ends, lock = threading.Barrier(clients), [], threading.Lock()

    def client() -> None:
        barrier.wait()
        try:
            status, retry_after, _ = request(port, "POST", f"/bench?runs={runs}&warmup=0&name=load.onnx", body)
            if status == 503:
                end = "503 with Retry-After" if retry_after and retry_after.isdigit() else "503 without Retry-After"
            else:
                end = str(status)
        except (OSError, http.client.HTTPException) as e:
            end = f"connection error: {type(e).__name__}"
        with lock:
            ends.append(end)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return dict(Counter(ends))


def load_test(*, clients: int, max_queue: int | None, runs: int, busy_runs: int = 0) -> dict:
    """A server started for the test; with ``busy_runs``, a long request is timed while the clients come."""
    with tempfile.TemporaryDirectory(prefix="edgenas-serve-load-") as tmp:
        folder = Path(tmp)
        body = tiny_onnx(folder / "load.onnx")
        server = Server(folder, max_queue=max_queue)
        try:
            blocker = None
            if busy_runs:
                blocker = threading.Thread(
                    target=request, args=(server.port, "POST", f"/bench?runs={busy_runs}&warmup=0&name=busy.onnx", body)
                )
                blocker.start()
                wait_busy(server.port)
            started = time.monotonic()
            ends = fire(server.port, body, clients=clients, runs=runs)
            seconds = time.monotonic() - started
            if blocker is not None:
                blocker.join()
            alive = server.proc.poll() is None
        finally:
            server.close()
    return {
        "clients": clients,
        "max_queue": max_queue,
        "busy": bool(busy_runs),
        "ends": ends,
        "answered": sum(n for end, n in ends.items() if not end.startswith("connection error")),
        "server_alive": alive,
        "seconds": round(seconds, 2),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--max-queue", type=int, default=None, help="the server's --max-queue (default: its own, 32)")
    p.add_argument("--runs", type=int, default=200, help="timed runs per client request")
    p.add_argument("--busy", action="store_true", help="keep the server timing a long request while the clients come")
    p.add_argument("--busy-runs", type=int, default=50_000)
    p.add_argument("--repeat", type=int, default=1, help="do it this many times (a fresh server each)")
    args = p.parse_args(argv)
    worst = 0
    for _ in range(args.repeat):
        r = load_test(
            clients=args.clients, max_queue=args.max_queue, runs=args.runs, busy_runs=args.busy_runs if args.busy else 0
        )
        worst = max(worst, r["clients"] - r["answered"])
        ends = ", ".join(f"{n} {end}" for end, n in sorted(r["ends"].items()))
        print(
            f"{r['clients']} plain clients, queue {r['max_queue'] or 'default (32)'}"
            f"{', server busy first' if r['busy'] else ''}: {r['answered']}/{r['clients']} answered ({ends}) "
            f"in {r['seconds']:.2f} s; server {'still serving' if r['server_alive'] else 'DIED'}"
        )
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main())
