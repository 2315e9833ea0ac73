"""A small HTTP load generator for 127.0.0.1: client threads on keep-alive connections.

Always bounded twice, by a number of requests and by a time limit, whichever comes first.
"""

from __future__ import annotations

import http.client
import json
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.report import percentile

HOST = "127.0.0.1"


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    statuses: Counter = field(default_factory=Counter)
    errors: int = 0
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def p(self, pct: float) -> float:
        return percentile(self.latencies, pct)


@dataclass
class Rounds(LoadResult):
    """The same load run several times: latencies of all rounds, and as its rate the median
    of the rounds' rates, so one round spoilt by other work on the machine does not decide."""

    round_rates: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, results: list[LoadResult]) -> Rounds:
        merged = cls(round_rates=[r.rate for r in results])
        for result in results:
            merged.latencies += result.latencies
            merged.statuses.update(result.statuses)
            merged.errors += result.errors
            merged.elapsed += result.elapsed
        return merged

    @property
    def rate(self) -> float:
        return statistics.median(self.round_rates) if self.round_rates else 0.0


def drive(
    port: int,
    next_path: Callable[[], str],
    *,
    headers: dict[str, str],
    clients: int,
    max_requests: int,
    max_seconds: float,
    expect: int = 200,
    follow_next: bool = False,
) -> LoadResult:
    """GET next_path() from `clients` threads until max_requests are sent or max_seconds pass.

    With `follow_next`, each client walks a list as an API client does: it follows the JSON
    body's `next` link, and starts again at next_path() when there is none.
    """
    result = LoadResult()
    lock = threading.Lock()
    sent = 0
    start_line = threading.Barrier(clients + 1)
    deadline = 0.0

    def client() -> None:
        nonlocal sent
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        latencies, statuses, errors = [], Counter(), 0
        following = None
        start_line.wait()
        while time.monotonic() < deadline:
            with lock:
                if sent >= max_requests:
                    break
                sent += 1
            path = following or next_path()
            began = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=30)
                continue
            statuses[response.status] += 1
            if response.status == expect:
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1
            if follow_next:
                following = _next_path(body) if response.status == expect else None
        conn.close()
        with lock:
            result.latencies.extend(latencies)
            result.statuses.update(statuses)
            result.errors += errors

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + max_seconds
    began = time.perf_counter()
    start_line.wait()
    for thread in threads:
        thread.join(timeout=max_seconds + 60)
    result.elapsed = time.perf_counter() - began
    return result


# DRF's pages begin with their `next` link: reading it off the head of the body spares the
# load generator decoding every page (about 0.3 ms of the CPU it shares with the server).
_NEXT = re.compile(rb'^\{"next":(null|"([^"\\]*)")')


def _next_path(body: bytes) -> str | None:
    """The path and query of a page's `next` link (absolute in the body), or None."""
    head = _NEXT.match(body)
    link = (head.group(2) or b"").decode() if head else json.loads(body).get("next")
    if not link:
        return None
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def request_json(port: int, method: str, path: str, *, headers: dict[str, str], body: dict | None = None):
    """One request on its own connection: (status, decoded JSON body or None)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        all_headers = {**headers, "Content-Type": "application/json"} if payload else headers
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, None
    finally:
        conn.close()
