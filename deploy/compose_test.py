"""The compose deployment's test, from the host against the running containers (issue 23).

scripts/compose-test brings the project up, then runs this with
`python3 deploy/compose_test.py`; the environment names the compose command (COMPOSE, default
`docker-compose`; the project comes from COMPOSE_PROJECT_NAME). Every check prints one line;
the first failure raises and the script exits non-zero. Third-party client: Python grpcio,
stubs generated from proto/proto/greeter.proto at run time with grpc_tools.

Ports: the compose file's defaults on 127.0.0.1 (greeter1 gRPC 8081, metrics 9001/9002,
etcd 2379, NATS monitoring 8222, Jaeger query 16686, Zipkin 9411, Prometheus 9090).
"""
import base64
import json
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_tools import protoc

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
COMPOSE = shlex.split(os.environ.get("COMPOSE", "docker-compose"))
HOST = "127.0.0.1"
GREETER1 = f"{HOST}:8081"
ETCD = f"http://{HOST}:2379"
JAEGER = f"http://{HOST}:16686"
ZIPKIN = f"http://{HOST}:9411"
PROMETHEUS = f"http://{HOST}:9090"
# The compose file's registry timing (MICRO_REGISTER_TTL / MICRO_REGISTER_INTERVAL).
TTL = 5.0
INTERVAL = 4.0
# etcd expires a lease on its own clock tick; a key may outlive its TTL by this much.
EXPIRY_SLACK = 1.0
BURST = 60


class Failed(Exception):
    """A check that did not hold."""


def check(cond, what):
    if not cond:
        raise Failed(what)
    print(f"ok   {what}", flush=True)


def compose(*args):
    cmd = COMPOSE + list(args)
    print(f"$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def http_json(url, body=None, timeout=5):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def poll(limit, probe, step=0.2):
    """Calls probe until it returns something truthy or limit seconds pass; returns the last
    value and the seconds waited."""
    started = time.monotonic()
    while True:
        value = probe()
        waited = time.monotonic() - started
        if value or waited > limit:
            return value, waited
        time.sleep(step)


def stubs():
    out = tempfile.mkdtemp(prefix="micro-compose-test-")
    proto_dir = os.path.join(ROOT, "proto", "proto")
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}",
                      f"--grpc_python_out={out}", os.path.join(proto_dir, "greeter.proto")])
    if rc != 0:
        raise SystemExit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    import greeter_pb2
    import greeter_pb2_grpc
    return greeter_pb2, greeter_pb2_grpc


pb, pb_grpc = stubs()


class Caller:
    """greeter1's outside caller; tallies every Hello call by outcome."""

    def __init__(self):
        self.channel = grpc.insecure_channel(GREETER1)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = pb_grpc.GreeterStub(self.channel)
        self.ok = 0
        self.failed = 0
        # Attempts greeter2's limiter refused and greeter1 retried (the caller never sees them).
        self.retried = 0

    def hello(self, name, metadata=None):
        """(code name, msg or details) of one Hello call."""
        try:
            reply = self.stub.Hello(pb.Request(name=name), timeout=10, metadata=metadata)
            self.ok += 1
            return "OK", reply.msg
        except grpc.RpcError as err:
            self.failed += 1
            return err.code().name, err.details() or ""


def etcd_keys(service):
    """The registry's keys under /micro/registry/<service>/ (etcd's JSON gateway)."""
    prefix = f"/micro/registry/{service}/".encode()
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    try:
        reply = http_json(f"{ETCD}/v3/kv/range", {
            "key": base64.b64encode(prefix).decode(),
            "range_end": base64.b64encode(end).decode(),
            "keys_only": True,
        })
    except OSError:
        return None
    return [base64.b64decode(kv["key"]).decode() for kv in reply.get("kvs", [])]


def node_of(key):
    return key.rsplit("/", 1)[-1]


def prom(query):
    reply = http_json(f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1])
            for r in reply["data"]["result"]}


def prom_total(query):
    return sum(prom(query).values())


def step_calls(caller):
    print("== calls through greeter1 -> greeter2", flush=True)
    ready, _ = poll(60, lambda: http_status(f"http://{HOST}:9001/ready") == 200)
    check(ready, "greeter1 /ready answers 200")
    keys = etcd_keys("greeter2")
    check(keys and len(keys) == 1, f"one greeter2 node registered in etcd: {keys}")
    node = node_of(keys[0])
    for i in range(10):
        started = time.monotonic()
        code, msg = caller.hello(f"compose-{i}")
        took = (time.monotonic() - started) * 1e3
        check(code == "OK" and msg == f"greeter1 <- test compose-{i} from {node}",
              f"call {i}: {code} {msg!r} in {took:.0f} ms (answered by greeter2 node {node})")
    return node


def step_trace(caller):
    print("== one trace in Jaeger and in Zipkin", flush=True)
    trace_id = secrets.token_hex(16)
    caller_span = secrets.token_hex(8)
    code, msg = caller.hello("traced", metadata=[("traceparent", f"00-{trace_id}-{caller_span}-01")])
    check(code == "OK", f"traced call {trace_id}: {code} {msg!r}")

    def jaeger():
        try:
            data = http_json(f"{JAEGER}/api/traces/{trace_id}")["data"]
        except (OSError, KeyError, ValueError):
            return None
        if not data or len(data[0]["spans"]) < 3:
            return None
        trace = data[0]
        return [{
            "trace": s["traceID"].rjust(32, "0"),
            "id": s["spanID"],
            "parent": next((r["spanID"] for r in s.get("references", [])
                            if r["refType"] == "CHILD_OF"), None),
            "service": trace["processes"][s["processID"]]["serviceName"],
            "kind": next((t["value"] for t in s.get("tags", []) if t["key"] == "span.kind"), None),
        } for s in trace["spans"]]

    def zipkin():
        try:
            spans = http_json(f"{ZIPKIN}/api/v2/trace/{trace_id}")
        except (OSError, ValueError):
            return None
        if len(spans) < 3:
            return None
        return [{
            "trace": s["traceId"].rjust(32, "0"),
            "id": s["id"],
            "parent": s.get("parentId"),
            "service": s.get("localEndpoint", {}).get("serviceName"),
            "kind": (s.get("kind") or "").lower() or None,
        } for s in spans]

    for backend, fetch in (("Jaeger", jaeger), ("Zipkin", zipkin)):
        spans, waited = poll(30, fetch, step=0.5)
        check(spans is not None, f"{backend} holds trace {trace_id} ({waited:.1f} s)")
        check(len(spans) == 3 and all(s["trace"] == trace_id for s in spans),
              f"{backend}: 3 spans, one trace id: {[s['id'] for s in spans]}")
        by_parent = {s["parent"]: s for s in spans}
        g1_server = by_parent.get(caller_span)
        g1_client = by_parent.get(g1_server["id"]) if g1_server else None
        g2_server = by_parent.get(g1_client["id"]) if g1_client else None
        check(g1_server and g1_client and g2_server,
              f"{backend}: parents right: caller {caller_span} -> greeter1 server -> "
              f"greeter1 client -> greeter2 server")
        check((g1_server["service"], g1_client["service"], g2_server["service"])
              == ("greeter1", "greeter1", "greeter2")
              and (g1_server["kind"], g1_client["kind"], g2_server["kind"])
              == ("server", "client", "server"),
              f"{backend}: services and kinds: greeter1 server, greeter1 client, greeter2 server")


def series(port, prefix):
    """The sum of a greeter's own /metrics samples whose line starts with `prefix`."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix))


G2_REFUSED = 'micro_ratelimit_refused_total{limiter="server"}'
G1_RETRIES = 'micro_client_retries_total{service="greeter2"}'


def step_burst(caller):
    """greeter2's limiter refuses the excess with 429. greeter1 marks the idempotent
    Greeter.Test (issue 24), so it retries those refusals within its retry budget: each
    refusal at greeter2 is either retried by greeter1 or reaches the caller as the 429."""
    print(f"== a burst of {BURST} concurrent calls above greeter2's 50/s, burst 20", flush=True)
    time.sleep(1.0)  # the bucket refills after the calls before
    refused_before, retries_before = series(9002, G2_REFUSED), series(9001, G1_RETRIES)
    with ThreadPoolExecutor(max_workers=BURST) as pool:
        results = list(pool.map(lambda i: caller.hello(f"burst-{i}"), range(BURST)))
    ok = sum(1 for code, _ in results if code == "OK")
    refused = [d for code, d in results if code != "OK"]
    codes = {json.loads(d).get("code") if d.startswith("{") else d for d in refused}
    check(ok > 0 and codes <= {429},
          f"burst: {ok} answered, {len(refused)} refused, only with go-micro's 429: {codes}")
    at_greeter2 = series(9002, G2_REFUSED) - refused_before
    retried = series(9001, G1_RETRIES) - retries_before
    check(at_greeter2 > 0 and at_greeter2 == retried + len(refused),
          f"greeter2's limiter refused {at_greeter2:g} calls with 429: greeter1 retried "
          f"{retried:g} of them on the idempotent Greeter.Test, {len(refused)} reached the caller")
    caller.retried += int(retried)
    return ok, len(refused)


def step_prometheus(caller):
    print("== Prometheus' counts equal the calls", flush=True)
    def both_up():
        up = prom('up{job="micro"}')
        return len(up) == 2 and all(v == 1 for v in up.values())

    up, _ = poll(20, both_up)
    check(up, "Prometheus scrapes greeter1 and greeter2 (up == 1 for both)")
    want = {
        ('micro_request_total{service="greeter1",endpoint="Greeter.Hello",status="success"}', caller.ok),
        ('micro_request_total{service="greeter1",endpoint="Greeter.Hello",status="fail"}', caller.failed),
        ('micro_request_total{service="greeter2",endpoint="Greeter.Test",status="success"}', caller.ok),
        ('micro_request_total{service="greeter2",endpoint="Greeter.Test",status="fail"}',
         caller.failed + caller.retried),
        ('micro_client_request_total{service="greeter2",endpoint="Greeter.Test",status="success"}', caller.ok),
    }

    def counts():
        got = {(q, n, prom_total(q)) for q, n in want}
        return got if all(n == v for _, n, v in got) else None

    got, waited = poll(20, counts, step=0.5)
    got = got or {(q, n, prom_total(q)) for q, n in want}
    for query, n, value in sorted(got):
        check(value == n, f"{query} = {value:g}, calls made: {n}")


def breaker_state():
    try:
        with urllib.request.urlopen(f"http://{HOST}:9001/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    lines = [line for line in text.splitlines() if line.startswith("micro_breaker_state{")]
    return lines


def step_stop_start(caller):
    print("== docker-compose stop greeter2: deregisters, greeter1's breaker opens", flush=True)
    compose("stop", "greeter2")
    keys = etcd_keys("greeter2")
    check(keys == [], f"greeter2's key left etcd as it stopped: {keys}")
    check(breaker_state() == ['micro_breaker_state{breaker="greeter2"} 0'],
          f"greeter1's breaker closed before: {breaker_state()}")
    seen = []
    for i in range(30):
        code, msg = caller.hello(f"down-{i}")
        seen.append(code)
        if code == "OK" and msg.startswith("greeter1 <- fallback for"):
            check(breaker_state() == ['micro_breaker_state{breaker="greeter2"} 2'],
                  f"breaker open after {i} failed calls ({seen[:-1]}): the fallback "
                  f"answers {msg!r}; greeter1 series {breaker_state()}")
            break
        time.sleep(0.1)
    else:
        raise Failed(f"no fallback answer in 30 calls: {seen}")

    print("== docker-compose start greeter2: the breaker closes", flush=True)
    compose("start", "greeter2")
    keys, waited = poll(30, lambda: etcd_keys("greeter2"))
    check(keys and len(keys) == 1, f"greeter2 registered again in {waited:.1f} s: {keys}")
    node = node_of(keys[0])

    def real():
        code, msg = caller.hello("back")
        return msg if code == "OK" and msg == f"greeter1 <- test back from {node}" else None

    msg, waited = poll(30, real, step=0.3)
    check(msg, f"calls answered by greeter2 again after {waited:.1f} s: {msg!r}")
    state = breaker_state()
    check(state == ['micro_breaker_state{breaker="greeter2"} 0'],
          f"greeter1's breaker closed (0 closed, 1 half-open, 2 open): {state}")


def step_kill():
    print("== docker-compose kill -s KILL greeter2: its key leaves etcd within the TTL", flush=True)
    keys = etcd_keys("greeter2")
    check(keys and len(keys) == 1, f"greeter2 registered before the kill: {keys}")
    compose("kill", "-s", "KILL", "greeter2")
    gone, waited = poll(TTL + 10, lambda: etcd_keys("greeter2") == [], step=0.1)
    check(gone and waited <= TTL + EXPIRY_SLACK,
          f"greeter2's key gone {waited:.1f} s after SIGKILL (TTL {TTL:g} s)")
    compose("start", "greeter2")
    keys, waited = poll(30, lambda: etcd_keys("greeter2"))
    check(keys, f"greeter2 started again and registered in {waited:.1f} s")


def step_etcd_replaced(caller):
    print("== etcd replaced by an empty one: both re-register within one interval", flush=True)
    compose("rm", "-sf", "etcd")
    compose("up", "-d", "etcd")
    answering, _ = poll(30, lambda: etcd_keys("greeter1") is not None)
    check(answering is not None, "the new etcd answers")
    started = time.monotonic()

    def both():
        g1, g2 = etcd_keys("greeter1"), etcd_keys("greeter2")
        return (g1, g2) if g1 and g2 else None

    keys, waited = poll(INTERVAL + 10, both, step=0.1)
    waited = time.monotonic() - started
    check(keys and waited <= INTERVAL + EXPIRY_SLACK,
          f"greeter1 and greeter2 registered in the new etcd {waited:.1f} s after it answered "
          f"(interval {INTERVAL:g} s): {keys}")
    node = node_of(keys[1][0])

    def real():
        code, msg = caller.hello("after-etcd")
        return msg if code == "OK" and msg == f"greeter1 <- test after-etcd from {node}" else None

    msg, waited = poll(20, real, step=0.3)
    check(msg, f"calls succeed again ({waited:.1f} s): {msg!r}")


def step_events(caller):
    """greeter2 publishes each Test answer on greeter.events through NATS; greeter1's
    subscriber handles them (its micro_broker_delivered_total grows)."""
    print("== events: greeter2 -> NATS -> greeter1", flush=True)
    delivered = 'micro_broker_delivered_total{topic="greeter.events"}'
    published = 'micro_broker_published_total{topic="greeter.events"}'
    before = series(9001, delivered)
    for i in range(5):
        code, _ = caller.hello(f"event-{i}")
        check(code == "OK", f"event call {i}: {code}")
    ok, _ = poll(10, lambda: series(9001, delivered) >= before + 5)
    check(ok, f"greeter1 handled greeter2's events: {delivered} "
              f"{before:g} -> {series(9001, delivered):g}")
    check(series(9002, published) >= 5,
          f"greeter2 published them: {published} {series(9002, published):g}")
    healthz = http_status(f"http://{HOST}:8222/healthz")
    check(healthz == 200, f"NATS /healthz answers {healthz}")


def main():
    caller = Caller()
    step_calls(caller)
    step_events(caller)
    step_trace(caller)
    step_burst(caller)
    step_prometheus(caller)
    step_stop_start(caller)
    step_kill()
    step_etcd_replaced(caller)
    caller.channel.close()
    print("compose test: every check passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Failed as err:
        print(f"FAIL {err}", flush=True)
        sys.exit(1)
