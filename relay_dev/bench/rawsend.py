"""The raw ceiling: a plain `requests.Session` posting the same bodies to the same receiver.

Run as its own process, like the relay, so it shares no interpreter lock with the receiver:

    python -m relay_dev.bench.rawsend JOB.json

`JOB.json` is `{"concurrency": n, "urls": [...], "bodies": [{"body": text, "headers": {...}}]}`;
every body goes to every URL, body by body (the order a fan-out produces). No signing, no guard,
no logging: each thread takes the next post and sends it on one shared, pooled session. The
process prints `ready` once set up, starts when a line arrives on its standard input, and prints
one JSON line: `{"t0", "t1" (time.monotonic()), "ok", "failed", "cpu_seconds"}`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

_SKIP = {"host", "content-length", "connection", "transfer-encoding"}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    concurrency = int(job["concurrency"])
    urls: list[str] = job["urls"]
    bodies = [
        (b["body"].encode("utf-8"), {k: v for k, v in b["headers"].items() if k.lower() not in _SKIP})
        for b in job["bodies"]
    ]
    posts = [(url, body, headers) for body, headers in bodies for url in urls]
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=concurrency)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    lock = threading.Lock()
    position = iter(range(len(posts)))
    ok = failed = 0

    def work() -> None:
        nonlocal ok, failed
        while True:
            with lock:
                index = next(position, None)
            if index is None:
                return
            url, body, headers = posts[index]
            try:
                response = session.post(url, data=body, headers=headers, timeout=30)
                _ = response.content  # read the body to its end, as a webhook sender does
                good = 200 <= response.status_code < 300
            except requests.RequestException:
                good = False
            with lock:
                if good:
                    ok += 1
                else:
                    failed += 1

    threads = [threading.Thread(target=work, daemon=True) for _ in range(concurrency)]
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.monotonic()
    cpu0 = sum(os.times()[:2])
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    t1 = time.monotonic()
    cpu = sum(os.times()[:2]) - cpu0
    print(json.dumps({"t0": t0, "t1": t1, "ok": ok, "failed": failed, "cpu_seconds": cpu}), flush=True)
    session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
