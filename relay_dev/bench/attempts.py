"""The delivery attempt alone against the raw post: CPU per post, same receiver, same threads.

    python -m relay_dev.bench.attempts [--posts 5000] [--subscribers 100] [--threads 64] [--repeat 2]

The throughput scenario compares the whole relay (publish, event log, index read, attempts,
receipts) with a plain sender; this one takes the attempt out of it, to say where the rest goes.
Each side runs in its own process, one after the other, posting the same signed-size CloudEvent
body to the bench's loopback receiver (run in a third process):

* `relay`: `relay.pipeline.delivery.attempt` on a `relay.outbound.sender.Sender` as the pools build it (the guard
  on every attempt, the per-origin gate with `RELAY_ORIGIN_SLOTS`, Standard Webhooks signing,
  the pinned transport), from `RELAY_ATTEMPT_THREADS` threads;
* `raw`: `requests.Session.post` from as many threads on one pooled session, as
  `relay_dev.bench.rawsend` does.

It prints posts per second and CPU milliseconds per post (user + system, the sender's process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
_BODY = json.dumps(
    {
        "specversion": "1.0",
        "id": "bench-000000",
        "source": "/bench",
        "type": "bench.attempts",
        "time": "2026-01-01T00:00:00Z",
        "datacontenttype": "application/json",
        "data": {"orderId": 1, "customer": "c" * 40, "amount": 12.5, "items": [{"sku": "a", "qty": 2}]},
    }
).encode("utf-8")


def _receiver() -> None:
    from relay_dev.bench.receiver import Receiver

    receiver = Receiver()
    print(receiver.url("attempts", 0), flush=True)
    sys.stdin.readline()
    receiver.close()


deferred: list[int] = []  # attempts the relay's gate handed back (list.append is thread-safe)


def _relay_post(urls: list[str], threads: int) -> Callable[[int], None]:
    from relay.core.models import Target
    from relay.core.settings import Settings
    from relay.outbound import signing
    from relay.outbound.sender import Sender
    from relay.pipeline.delivery import attempt

    settings = Settings.from_environ({**os.environ, "RELAY_ALLOW_PRIVATE_TARGETS": "true"})
    sender = Sender(
        allow_private=True,
        timeout=settings.delivery_timeout,
        user_agent=signing.USER_AGENT,
        pool_size=threads,
        origin_slots=min(settings.origin_slots, threads),
    )
    note = signing.Notification(_BODY, {"Content-Type": signing.JSON_TYPE})
    targets = [Target(sub=f"s{n}", url=url, secret=_SECRET) for n, url in enumerate(urls)]

    def post(n: int) -> None:
        while True:
            result = attempt(sender, targets[n % len(targets)], f"e{n}", note)
            if not result.deferred:
                break
            # Handed back unsent by the per-origin gate: the relay would queue it for later; here
            # it is counted (the summary shows it) and made again.
            deferred.append(n)
        if result.status_code != 200:
            raise RuntimeError(f"attempt {n}: {result.verdict}")

    return post


def _raw_post(urls: list[str], threads: int) -> Callable[[int], None]:
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=threads)
    session.mount("http://", adapter)
    headers = {"Content-Type": "application/json; charset=utf-8"}

    def post(n: int) -> None:
        response = session.post(urls[n % len(urls)], data=_BODY, headers={**headers, "webhook-id": f"e{n}"}, timeout=30)
        _ = response.content
        if response.status_code != 200:
            raise RuntimeError(f"post {n}: {response.status_code}")

    return post


def _side(kind: str, base: str, posts: int, subscribers: int, threads: int) -> None:
    urls = [base.rsplit("/s/", 1)[0] + f"/s/{n}" for n in range(subscribers)]
    post = (_relay_post if kind == "relay" else _raw_post)(urls, threads)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, range(min(posts, 4 * threads))))  # connections open, code warm
        cpu0, t0 = sum(os.times()[:2]), time.monotonic()
        list(pool.map(post, range(posts)))
        t1, cpu1 = time.monotonic(), sum(os.times()[:2])
    print(
        json.dumps(
            {
                "side": kind,
                "per_second": posts / (t1 - t0),
                "cpu_ms_per_post": 1000 * (cpu1 - cpu0) / posts,
                "handed_back": len(deferred),
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m relay_dev.bench.attempts", description=__doc__.split("\n\n")[0])
    p.add_argument("--posts", type=int, default=5000)
    p.add_argument("--subscribers", type=int, default=100)
    p.add_argument("--threads", type=int, help="default: RELAY_ATTEMPT_THREADS")
    p.add_argument("--repeat", type=int, default=2, help="runs of each side, alternating")
    p.add_argument("--side", help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.side == "receiver":
        _receiver()
        return 0
    if args.threads is None:
        from relay.core.settings import Settings

        args.threads = Settings.from_environ().attempt_threads
    if args.side:
        _side(args.side, args.base, args.posts, args.subscribers, args.threads)
        return 0
    me = [sys.executable, "-m", "relay_dev.bench.attempts"]
    receiver = subprocess.Popen([*me, "--side", "receiver"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert receiver.stdin and receiver.stdout
    try:
        base = receiver.stdout.readline().strip()
        common = ["--base", base, "--posts", str(args.posts), "--subscribers", str(args.subscribers)]
        results: dict[str, list[dict[str, float]]] = {"relay": [], "raw": []}
        for _ in range(args.repeat):
            for side in ("relay", "raw"):
                out = subprocess.run(
                    [*me, "--side", side, *common, "--threads", str(args.threads)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                results[side].append(json.loads(out.strip().splitlines()[-1]))
        for side, runs in results.items():
            rates = ", ".join(f"{r['per_second']:,.0f}" for r in runs)
            cpu = ", ".join(f"{r['cpu_ms_per_post']:.3f}" for r in runs)
            back = sum(int(r["handed_back"]) for r in runs)
            print(f"{side:5}  posts/s {rates}   CPU ms per post {cpu}   ({args.threads} threads; {back} handed back)")
    finally:
        receiver.stdin.write("stop\n")
        receiver.stdin.flush()
        receiver.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
