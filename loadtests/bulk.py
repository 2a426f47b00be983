"""Large requests, closed loop: 1,024 real rows a request as V2 JSON or in the binary tensor
extension (inputs and outputs binary), for rows a second in both encodings.

    python -m loadtests.bulk --port 8000 --format binary --seconds 10 --connections 2

wrk sends its bodies one a line, which a binary body cannot be, so this is its own client: a
thread per keep-alive connection sends bytes built before the clock starts and reads each
answer by its content-length. A request costs the server milliseconds (30,720 numbers to read
and to record), the client microseconds, so a Python client is not the bottleneck here.
Prints (or writes, ``--out``) one JSON object.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.hist import LogHistogram
from loadtests.payloads import rows

ROWS = 1024


def rows_of(model: str, count: int = ROWS) -> np.ndarray:
    """``count`` real rows of the model's reference split (repeated when it has fewer)."""
    x = rows(model)
    return np.ascontiguousarray(np.resize(x, (count, x.shape[1])), dtype=np.float32)


def json_body(x: np.ndarray, name: str = "input") -> bytes:
    values = ",".join(np.format_float_positional(v, unique=True, trim="0") for v in x.ravel())
    return (f'{{"inputs":[{{"name":"{name}","shape":[{x.shape[0]},{x.shape[1]}],'
            f'"datatype":"FP32","data":[{values}]}}]}}').encode()


def binary_body(x: np.ndarray, name: str = "input") -> tuple[bytes, int]:
    """The body and its JSON header's length (the Inference-Header-Content-Length)."""
    head = json.dumps({
        "inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "parameters": {"binary_data_output": True}}).encode()
    return head + x.tobytes(), len(head)


def http_request(path: str, body: bytes, header_length: int | None) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\n"
            "content-type: " + ("application/octet-stream" if header_length is not None
                                else "application/json") + "\r\n")
    if header_length is not None:
        head += f"inference-header-content-length: {header_length}\r\n"
    return head.encode() + b"\r\n" + body


def read_answer(sock: socket.socket, pending: bytearray) -> tuple[int, bytes]:
    """One whole HTTP answer (status, body) off a keep-alive connection; ``pending`` holds
    what was read past it."""
    while (end := pending.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        pending += chunk
    head = bytes(pending[:end]).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    length = next(int(line.split(":", 1)[1]) for line in head[1:]
                  if line.lower().startswith("content-length:"))
    total = end + 4 + length
    while len(pending) < total:
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-answer")
        pending += chunk
    body = bytes(pending[end + 4:total])
    del pending[:total]
    return status, body


def run(port: int, path: str, request: bytes, connections: int, seconds: float,
        warmup: float = 1.0) -> dict[str, Any]:
    """Closed loop for ``warmup`` + ``seconds``; only the last ``seconds`` are counted."""
    start = time.perf_counter()
    counting, stop = start + warmup, start + warmup + seconds
    hist = LogHistogram()
    lock = threading.Lock()
    counts = {"ok": 0, "errors": 0}
    problems: list[str] = []

    def worker() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                pending = bytearray()
                while (sent := time.perf_counter()) < stop:
                    sock.sendall(request)
                    status, _ = read_answer(sock, pending)
                    took = time.perf_counter() - sent
                    if sent >= counting:
                        with lock:
                            counts["ok" if status == 200 else "errors"] += 1
                            hist.record(took)
        except (OSError, ValueError, StopIteration) as exc:
            problems.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"requests": counts["ok"], "errors": counts["errors"] + len(problems),
            "problems": problems[:3], "rps": round(counts["ok"] / seconds, 1),
            "rows_per_second": round(counts["ok"] * ROWS / seconds, 1),
            "p50_ms": _ms(hist, 0.5), "p99_ms": _ms(hist, 0.99)}


def _ms(hist: LogHistogram, q: float) -> float | None:
    value = hist.quantile(q)
    return round(value * 1000, 3) if value is not None else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="breast-cancer")
    p.add_argument("--path", default=None, help="default: /v2/models/MODEL/infer")
    p.add_argument("--format", choices=("json", "binary"), default="json")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=2)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    x = rows_of(a.model)
    if a.format == "json":
        body, header_length = json_body(x), None
    else:
        body, header_length = binary_body(x)
    path = a.path or f"/v2/models/{a.model}/infer"
    result = {"format": a.format, "rows_per_request": ROWS, "body_bytes": len(body),
              "connections": a.connections,
              **run(a.port, path, http_request(path, body, header_length), a.connections,
                    a.seconds, a.warmup)}
    text = json.dumps(result)
    if a.out:
        a.out.write_text(text)
    else:
        print(text)
    return 0 if result["requests"] and not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
