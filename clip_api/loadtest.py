"""`clip-api loadtest URL`: concurrent clients sending mixed text/image requests to a local server.

Our own small client rather than a load tool (locust, k6, vegeta): what this report needs is
exactly what such tools abstract away. Each response is classified by status *and* header (a 503
is acceptable only with `Retry-After`), a connection reset or an early close is a failure in its
own right (not a retried request), the server's resident memory is read from /proc at the start,
throughout and at the end, and the clients of one hostile client are reported apart from the
others. Threads with `http.client` (keep-alive, one connection per client) suffice: the request
bodies are built once, so a client's work per request is a `send` and a JSON-sized `recv`.

The hostile client (`--hostile`) sends, in turn, a full batch of the longest texts (each one
random word: BPE's worst case) and the most pixels per request in JPEGs with the most scans the
limits admit, and ignores Retry-After; the other clients' figures are reported apart from it.

Bounded by construction: loopback URLs only, at most `MAX_CLIENTS` clients and `MAX_DURATION_S`
seconds, an optional request cap, and a per-request timeout; after the duration no new request
starts and the run ends once those in flight are answered or time out.

Acceptable: 200, and 429/503 carrying `Retry-After`. Everything else (any other status, a 503
without `Retry-After`, a reset, a timeout, a close without an answer) is a failure: it is counted,
listed with the error code from the body, and makes the command exit 1.
"""

from __future__ import annotations

import base64
import http.client
import io
import ipaddress
import json
import os
import random
import socket
import string
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

MAX_CLIENTS = 256
MAX_DURATION_S = 600.0
SHORT_TEXTS = (
    "a photo of a dog", "a cat sleeping on a sofa", "a red bicycle leaning on a wall", "two people walking on a beach",
    "a bowl of ramen", "a city skyline at night", "a diagram of a neural network", "a child flying a kite",
    "snow on a mountain ridge", "a plate of pasta with basil", "an old wooden boat", "a street market in the rain",
)


class LoadTestError(ValueError):
    """The settings are refused (a non-loopback URL, out of bounds)."""


@dataclass
class LoadSettings:
    url: str
    clients: int = 8
    duration_s: float = 10.0
    mix: dict[str, float] = field(default_factory=lambda: {"text": 0.5, "image": 0.5})
    hostile: bool = False
    server_pids: tuple[int, ...] = ()
    timeout_s: float = 60.0
    max_requests: int | None = None
    image_size: tuple[int, int] = (1024, 768)
    retry_wait_max_s: float = 1.0  # a rejected client waits min(Retry-After, this) before its next request
    seed: int = 0


def parse_mix(text: str) -> dict[str, float]:
    """`text=0.5,image=0.5` -> weights (normalised); only text and image are known."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in ("text", "image"):
            raise LoadTestError(f"unknown request kind {name!r} in --mix (text, image)")
        try:
            weights[name] = float(value)
        except ValueError:
            raise LoadTestError(f"--mix {part!r}: the weight must be a number") from None
        if weights[name] < 0:
            raise LoadTestError(f"--mix {part!r}: the weight must be >= 0")
    total = sum(weights.values())
    if total <= 0:
        raise LoadTestError("--mix needs a positive weight, e.g. text=0.5,image=0.5")
    return {name: weight / total for name, weight in weights.items()}


def check_settings(settings: LoadSettings) -> tuple[str, int, str]:
    """(host, port, path) of a loopback http URL, after checking the bounds."""
    parts = urlsplit(settings.url)
    if parts.scheme != "http" or not parts.hostname:
        raise LoadTestError(f"{settings.url!r}: an http://host:port/path URL is needed")
    host = parts.hostname
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, parts.port or 80, type=socket.SOCK_STREAM)}
    except socket.gaierror as exc:
        raise LoadTestError(f"{host!r} does not resolve: {exc}") from None
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise LoadTestError(f"{host!r} is not a loopback address: the load generator only targets this machine")
    if not 1 <= settings.clients <= MAX_CLIENTS:
        raise LoadTestError(f"--clients must be within 1..{MAX_CLIENTS}")
    if not 0 < settings.duration_s <= MAX_DURATION_S:
        raise LoadTestError(f"--duration must be within (0, {MAX_DURATION_S:g}] seconds")
    if settings.max_requests is not None and settings.max_requests < 1:
        raise LoadTestError("--max-requests must be >= 1")
    if not 0 < settings.timeout_s <= 120:
        raise LoadTestError("--timeout must be within (0, 120] seconds")
    return host, parts.port or 80, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


# ---------------------------------------------------------------- request bodies


def photo_like_jpeg(width: int, height: int, seed: int) -> bytes:
    """A JPEG of a photograph's size and entropy: smooth shapes plus sensor-like noise (~150-300 KB at 1024x768)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.int16) + rng.normal(0, 6, (height, width, 3)).astype(np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def ordinary_bodies(settings: LoadSettings, images: int = 4) -> dict[str, list[bytes]]:
    width, height = settings.image_size
    jpegs = [photo_like_jpeg(width, height, settings.seed + i) for i in range(images)]
    return {
        "text": [json.dumps({"text": t}).encode() for t in SHORT_TEXTS],
        "image": [json.dumps({"image": base64.b64encode(j).decode()}).encode() for j in jpegs],
    }


def worst_jpeg(width: int, height: int, scans: int) -> bytes:
    """A valid progressive JPEG with exactly `scans` scans: Pillow's progressive script, its last
    scan (an AC refinement of a flat image: a few bytes) repeated; the decoder re-runs each scan
    over the whole image, so the cost is pixels x scans in a small file."""
    from PIL import Image

    from inference_code.preprocess import jpeg_scan_count

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 130, 140)).save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    sos = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]
    eoi = data.rindex(b"\xff\xd9")
    base = jpeg_scan_count(data, stop_after=10_000)
    if scans < base:
        raise LoadTestError(f"a progressive JPEG needs at least {base} scans")
    result = data[:eoi] + data[sos[-1]:eoi] * (scans - base) + data[eoi:]
    if jpeg_scan_count(result, stop_after=scans + 1) != scans:
        raise RuntimeError("could not build the worst-case JPEG")
    return result


def hostile_bodies(limits, seed: int = 0) -> dict[str, list[bytes]]:
    """The most work the limits admit per request: a full batch of the longest texts, each one
    random word (BPE's worst case), and the most pixels per request in images with the most scans."""
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=limits.max_text_chars)) for _ in range(limits.max_batch_size)]
    texts = json.dumps({"texts": words}).encode()
    # the largest image the limits admit, 4:3 (well within the aspect ratio), as many as the request's pixels allow
    height = int((limits.max_image_pixels * 3 / 4) ** 0.5)
    width = min(limits.max_image_pixels // height, int(height * limits.max_aspect_ratio))
    count = max(1, min(limits.max_batch_size, limits.max_request_pixels // (width * height)))
    jpeg = worst_jpeg(width, height, limits.max_jpeg_scans)
    encoded = base64.b64encode(jpeg).decode()
    per_request = max(1, min(count, (int(limits.max_request_bytes * 0.95) - 20) // (len(encoded) + 3)))
    images = json.dumps({"images": [encoded] * per_request}).encode()
    return {"text": [texts], "image": [images]}


# ---------------------------------------------------------------- running


@dataclass
class Outcome:
    client: int
    hostile: bool
    kind: str
    started: float
    latency_s: float
    status: int | None  # None: no HTTP answer
    retry_after: str | None = None
    code: str = ""  # the body's error code, or the exception's name


def classify(outcome: Outcome) -> str:
    """The label the report counts under: '200', '503+Retry-After', '503 without Retry-After', 'reset', ..."""
    if outcome.status is None:
        return outcome.code or "no answer"
    if outcome.status in (429, 503):
        return f"{outcome.status}+Retry-After" if outcome.retry_after is not None else f"{outcome.status} without Retry-After"
    return str(outcome.status)


def acceptable(outcome: Outcome) -> bool:
    return outcome.status == 200 or (outcome.status in (429, 503) and outcome.retry_after is not None)


def _error_code(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""


def _exception_label(exc: BaseException) -> str:
    if isinstance(exc, http.client.RemoteDisconnected):  # a ConnectionResetError too: test it first
        return "closed without an answer"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe"
    return type(exc).__name__


class _Run:
    def __init__(self, settings: LoadSettings, host: str, port: int, path: str, bodies: dict, hostile: dict | None):
        self.settings, self.host, self.port, self.path = settings, host, port, path
        self.bodies, self.hostile_bodies = bodies, hostile
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.started = 0.0
        self.stop_at = 0.0
        self.issued = 0

    def _claim(self) -> bool:
        with self.lock:
            if time.monotonic() >= self.stop_at:
                return False
            if self.settings.max_requests is not None and self.issued >= self.settings.max_requests:
                return False
            self.issued += 1
            return True

    def client(self, index: int, hostile: bool) -> None:
        rng = random.Random(self.settings.seed * 1_000 + index)
        kinds = ["text", "image"] if hostile else list(self.settings.mix)
        weights = [1, 1] if hostile else [self.settings.mix[k] for k in kinds]
        pool = self.hostile_bodies if hostile else self.bodies
        connection = None
        turn = 0
        while self._claim():
            kind = kinds[turn % 2] if hostile else rng.choices(kinds, weights)[0]
            turn += 1
            body = rng.choice(pool[kind])
            if connection is None:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=self.settings.timeout_s)
            began = time.monotonic()
            try:
                connection.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                outcome = Outcome(index, hostile, kind, began - self.started, time.monotonic() - began, response.status,
                                  response.getheader("Retry-After"), "" if response.status == 200 else _error_code(payload))
                if response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                outcome = Outcome(index, hostile, kind, began - self.started, time.monotonic() - began, None, code=_exception_label(exc))
                connection.close()
                connection = None
            with self.lock:
                self.outcomes.append(outcome)
            # the hostile client ignores Retry-After, as an attacker would: it retries at once to get its work admitted
            if not hostile and outcome.retry_after is not None and outcome.status in (429, 503) and self.settings.retry_wait_max_s > 0:
                try:
                    wait = min(float(outcome.retry_after), self.settings.retry_wait_max_s)
                except ValueError:
                    wait = self.settings.retry_wait_max_s
                time.sleep(max(0.0, min(wait, self.stop_at - time.monotonic())))
        if connection is not None:
            connection.close()


# ---------------------------------------------------------------- memory


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def local_mode_processes(url: str, workdir: Path = Path(".local")) -> dict[str, int]:
    """When URL is local mode's API gateway: its process and its inference servers (`python -m
    inference_code serve`, started by local_mode/inference_servers.py as its children)."""
    state_file = Path(workdir) / "state.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return {}
    api = urlsplit(state.get("api", ""))
    target = urlsplit(url)
    if (api.port, api.hostname) != (target.port, target.hostname) or rss_mb(state.get("pid", -1)) is None:
        return {}
    found = {"local mode (gateway, Lambda handler, moto)": state["pid"]}
    for child in descendants(state["pid"]):
        command = _cmdline(child)
        if "inference_code" in command and "serve" in command:
            port = command[command.index("--port") + 1] if "--port" in command else "?"
            found[f"inference server :{port}"] = child
    return found


class _MemoryWatch:
    """RSS of the named processes at start, every second (peak) and at the end."""

    def __init__(self, find):
        self.find = find  # () -> {name: pid}; re-read at the end (a restarted server has a new pid)
        self.start: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self.end: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="loadtest-rss")

    def _read(self) -> dict[str, float]:
        return {name: value for name, pid in self.find().items() if (value := rss_mb(pid)) is not None}

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            for name, value in self._read().items():
                self.peak[name] = max(self.peak.get(name, 0.0), value)

    def __enter__(self):
        self.start = self._read()
        self.peak = dict(self.start)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self.end = self._read()
        for name, value in self.end.items():
            self.peak[name] = max(self.peak.get(name, 0.0), value)


# ---------------------------------------------------------------- report


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def latency_summary(outcomes: list[Outcome]) -> dict:
    values = [o.latency_s * 1000 for o in outcomes]
    return {"count": len(values), **{f"p{q}_ms": (round(v, 1) if (v := percentile(values, q)) is not None else None) for q in (50, 95, 99)}}


def summarise(outcomes: list[Outcome], elapsed_s: float) -> dict:
    ok = [o for o in outcomes if o.status == 200]
    failures = Counter((classify(o), o.code) for o in outcomes if not acceptable(o))
    seen: dict[tuple, list[float]] = {}
    for o in outcomes:
        if not acceptable(o):
            seen.setdefault((classify(o), o.code), []).append(o.started)
    return {
        "requests": len(outcomes),
        "statuses": dict(sorted(Counter(classify(o) for o in outcomes).items())),
        "acceptable": sum(acceptable(o) for o in outcomes),
        "failures": [{"status": status, "code": code, "count": count,
                      "first_s": round(min(seen[status, code]), 2), "last_s": round(max(seen[status, code]), 2)}
                     for (status, code), count in failures.most_common()],
        "latency_200": latency_summary(ok),
        "latency_200_by_kind": {kind: latency_summary([o for o in ok if o.kind == kind]) for kind in sorted({o.kind for o in ok})},
        "latency_all": latency_summary(outcomes),
        "throughput_200_per_s": round(len(ok) / elapsed_s, 1) if elapsed_s else 0.0,
        "requests_per_s": round(len(outcomes) / elapsed_s, 1) if elapsed_s else 0.0,
    }


def run_loadtest(settings: LoadSettings, limits=None, processes=None) -> dict:
    """Run the clients and return the report (a dict, JSON-ready). `limits` (a ServingLimits)
    sizes the hostile requests; `processes` () -> {name: pid} names the processes whose RSS is read."""
    host, port, path = check_settings(settings)
    if limits is None:
        from clip_core.limits import ServingLimits

        limits = ServingLimits()
    bodies = ordinary_bodies(settings)
    hostile = hostile_bodies(limits, settings.seed) if settings.hostile else None
    if processes is None:
        named = {f"server pid {pid}": pid for pid in settings.server_pids}
        processes = lambda: named  # noqa: E731
    run = _Run(settings, host, port, path, bodies, hostile)
    threads = [threading.Thread(target=run.client, args=(i, False), name=f"loadtest-{i}", daemon=True) for i in range(settings.clients)]
    if settings.hostile:
        threads.append(threading.Thread(target=run.client, args=(settings.clients, True), name="loadtest-hostile", daemon=True))
    with _MemoryWatch(processes) as memory:
        run.started = time.monotonic()
        run.stop_at = run.started + settings.duration_s
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=settings.duration_s + settings.timeout_s + 30)
        elapsed = time.monotonic() - run.started
    stuck = sum(thread.is_alive() for thread in threads)
    with run.lock:
        outcomes = list(run.outcomes)
    report = {
        "url": settings.url,
        "clients": settings.clients,
        "hostile_clients": 1 if settings.hostile else 0,
        "duration_s": settings.duration_s,
        "elapsed_s": round(elapsed, 1),
        "mix": settings.mix,
        "image_size": list(settings.image_size),
        "cpu": cpu_model(),
        "load_average": _load_average(),
        "all": summarise(outcomes, elapsed),
        "rss_mb": {name: {"start": round(memory.start.get(name, 0), 1) or None, "peak": round(memory.peak.get(name, 0), 1) or None,
                          "end": round(memory.end.get(name, 0), 1) or None}
                   for name in sorted({*memory.start, *memory.end})},
        "clients_still_running": stuck,
    }
    if settings.hostile:
        report["ordinary_clients"] = summarise([o for o in outcomes if not o.hostile], elapsed)
        report["hostile_client"] = summarise([o for o in outcomes if o.hostile], elapsed)
        report["hostile_requests"] = {kind: f"{len(b[0]):,} bytes" for kind, b in hostile.items()}
    report["passed"] = not report["all"]["failures"] and not stuck
    return report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return "unknown"


def _load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def render(report: dict) -> str:
    def latency(summary: dict) -> str:
        lat = summary["latency_200"]
        return f"200s p50 / p95 / p99: {lat['p50_ms']} / {lat['p95_ms']} / {lat['p99_ms']} ms"

    lines = [
        f"loadtest {report['url']}: {report['clients']} clients" + (" + 1 hostile" if report["hostile_clients"] else "")
        + f" for {report['duration_s']:g} s (ran {report['elapsed_s']} s)",
        f"CPU: {report['cpu']}; load average at the end: {report['load_average']}",
    ]
    everything = report["all"]
    lines.append(f"requests: {everything['requests']} ({everything['requests_per_s']}/s), 200s: {everything['throughput_200_per_s']}/s")
    lines.append("statuses: " + ", ".join(f"{label}: {count}" for label, count in everything["statuses"].items()))
    lines.append(latency(everything) + "; by kind: " + ", ".join(
        f"{kind} p50 {s['p50_ms']} / p99 {s['p99_ms']} ms" for kind, s in everything["latency_200_by_kind"].items()))
    if report["hostile_clients"]:
        ordinary, hostile = report["ordinary_clients"], report["hostile_client"]
        lines.append(f"ordinary clients: {ordinary['requests']} requests, {latency(ordinary)}")
        lines.append(f"hostile client: {hostile['requests']} requests (" + ", ".join(f"{k}: {v}" for k, v in hostile["statuses"].items())
                     + f"), {latency(hostile)}; bodies: {report['hostile_requests']}")
    for name, rss in report["rss_mb"].items():
        lines.append(f"RSS {name}: {rss['start']} MB at start, {rss['peak']} MB peak, {rss['end']} MB at the end")
    if not report["rss_mb"]:
        lines.append("RSS: no server process known (pass --server-pid, or target local mode's API gateway)")
    if everything["failures"]:
        lines.append("FAILURES (neither 200 nor 429/503 with Retry-After):")
        lines.extend(f"  {f['count']} x {f['status']}" + (f" {f['code']}" if f["code"] and f["code"] != f["status"] else "")
                     + f" (sent between {f['first_s']} s and {f['last_s']} s)" for f in everything["failures"])
    if report["clients_still_running"]:
        lines.append(f"FAILURE: {report['clients_still_running']} clients did not finish")
    lines.append("passed: no failures" if report["passed"] else "FAILED")
    return "\n".join(lines)
