#!/usr/bin/env python3
"""The failover test of issue 16 (run by scripts/ha-test.sh, which builds the servers, starts
SeaweedFS and cleans up): three instances of each service on one PostgreSQL behind Debian's
HAProxy, a bounded load through HAProxy, and the faults:

- SIGKILL of both services' leaders, KILLS times: each time a write is acknowledged by a new
  leader within 5 s (the failover time: the kill to that acknowledgement);
- a rolling restart (SIGTERM, the server drains and hands the lease over, start again) of
  every instance of each service, one after another: no client request fails;
- long form only: PostgreSQL restarted under load, then its synchronous standby (made with
  pg_basebackup) promoted while the primary is SIGKILLed, the services following the
  multi-host connection string (target_session_attrs=read-write).

Then the checks: every acknowledged membership and upload is in the change feed exactly once
(and nothing the load did not ask for), every instance answers the transitive members of every
team exactly as a BFS over the final edges says, and every acknowledged upload downloads
byte-identical from every instance. Standard library only. Every request is logged, one JSON
line each, to WORK/requests.jsonl; the figures go to WORK/report.json and stdout.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

TEAMS = 60
PERSONS = 400
FAILOVER_LIMIT = 5.0
# A write the client could not get acknowledged within this is a failed request.
WRITE_DEADLINE = 15.0
LEASE_TTL_MS = 900


def now():
    return time.monotonic()


def free_port():
    """A free loopback port below the ephemeral range (as scripts/ports.sh chooses)."""
    while True:
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def request(port, method, path, body=None, headers=None, timeout=20):
    """One HTTP request on a fresh connection: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def status_of(port, path):
    try:
        return request(port, "GET", path, timeout=2)[0]
    except OSError:
        return None


def fail(message):
    print(f"ha-test: FAILED: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


class Processes:
    """Every process started here, its PID written to WORK/pids for the shell's trap."""

    def __init__(self, work):
        self.path = os.path.join(work, "pids")
        self.lock = threading.Lock()

    def started(self, popen):
        with self.lock, open(self.path, "a") as f:
            f.write(f"{popen.pid}\n")
        return popen


class Instance:
    def __init__(self, service, index, binary, config, work, procs):
        self.service, self.index, self.binary, self.config = service, index, binary, config
        self.name = f"{service[0]}{index}"
        self.port = free_port()
        self.log = os.path.join(work, "logs", f"{self.name}.log")
        self.procs = procs
        self.process = None

    def start(self):
        log = open(self.log, "a")
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
        self.process = self.procs.started(subprocess.Popen(
            [self.binary, "--config", self.config, "serve", "--dev",
             "--listen", f"127.0.0.1:{self.port}"],
            stdout=log, stderr=log, env=env, stdin=subprocess.DEVNULL))
        log.close()

    def wait_healthy(self, limit=60):
        deadline = now() + limit
        while status_of(self.port, "/health") != 200:
            if self.process.poll() is not None:
                fail(f"{self.name} exited with {self.process.returncode}; see {self.log}")
            if now() > deadline:
                fail(f"{self.name} not healthy after {limit} s; see {self.log}")
            time.sleep(0.05)

    def is_writer(self):
        return status_of(self.port, "/health/writer") == 200

    def signal(self, sig):
        self.process.send_signal(sig)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Postgres:
    """Debian's PostgreSQL: the primary from scripts/postgres.sh, a standby made here."""

    def __init__(self, work, scripts):
        self.work, self.scripts = work, scripts
        bins = sorted(os.listdir("/usr/lib/postgresql"), key=lambda v: [int(x) for x in v.split(".")])
        self.bin = f"/usr/lib/postgresql/{bins[-1]}/bin"
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        self.primary_dir = os.path.join(work, "pg-primary")
        self.standby_data = os.path.join(work, "pg-standby")
        self.primary_port = None
        self.standby_port = None
        self.promoted_after = None

    def run(self, *args, check=True):
        return subprocess.run(self.as_owner + list(args), check=check, capture_output=True, text=True)

    def start_primary(self):
        subprocess.run(["bash", os.path.join(self.scripts, "postgres.sh"), "start", self.primary_dir],
                       check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(self.primary_dir, "env")) as f:
            env = f.read()
        self.primary_port = int(env.split("PGPORT=")[1].split()[0])

    def sql(self, port, statement):
        out = self.run(f"{self.bin}/psql", "-h", "127.0.0.1", "-p", str(port), "-U", "lpstore",
                       "-d", "postgres", "-Atc", statement)
        return out.stdout.strip()

    def start_standby(self):
        """A synchronous streaming standby: pg_basebackup, then synchronous_standby_names."""
        self.standby_port = free_port()
        os.makedirs(self.standby_data, mode=0o700)
        if os.getuid() == 0:
            subprocess.run(["chown", "postgres", self.standby_data], check=True)
        self.run(f"{self.bin}/pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port),
                 "-U", "lpstore", "-D", self.standby_data, "-X", "stream", "-R",
                 "-d", f"host=127.0.0.1 port={self.primary_port} user=lpstore application_name=standby")
        # The promoted standby must not wait for a standby of its own: its setting is empty.
        self.run(f"{self.bin}/pg_ctl", "-D", self.standby_data, "-w", "-t", "60",
                 "-l", os.path.join(self.standby_data, "server.log"), "-o",
                 f"-p {self.standby_port} -c listen_addresses=127.0.0.1 -c unix_socket_directories= "
                 "-c fsync=off -c full_page_writes=off -c max_connections=300 "
                 "-c synchronous_standby_names= -c log_min_messages=warning", "start")
        self.sql(self.primary_port, "ALTER SYSTEM SET synchronous_standby_names = 'standby'")
        self.sql(self.primary_port, "SELECT pg_reload_conf()")
        deadline = now() + 30
        while self.sql(self.primary_port,
                       "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'") != "sync":
            if now() > deadline:
                fail("the standby did not become synchronous within 30 s")
            time.sleep(0.2)

    def url(self):
        if self.standby_port:
            return (f"host=127.0.0.1,127.0.0.1 port={self.primary_port},{self.standby_port} "
                    "user=lpstore dbname=postgres target_session_attrs=read-write")
        return f"host=127.0.0.1 port={self.primary_port} user=lpstore dbname=postgres"

    def restart_primary(self):
        # -l again: the restarted postmaster would otherwise log to (and hold open) our pipe.
        data = os.path.join(self.primary_dir, "data")
        subprocess.run(self.as_owner + [f"{self.bin}/pg_ctl", "-D", data, "-w", "-t", "60", "-m", "fast",
                                        "-l", os.path.join(data, "server.log"), "restart"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill_primary_and_promote(self):
        """SIGKILL the primary's postmaster and every backend of it, then promote the standby."""
        with open(os.path.join(self.primary_dir, "data", "postmaster.pid")) as f:
            postmaster = int(f.readline())
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(postmaster)],
                                  capture_output=True, text=True).stdout.split()
        for pid in [postmaster] + [int(c) for c in children]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        killed = now()
        self.run(f"{self.bin}/pg_ctl", "-D", self.standby_data, "-w", "-t", "60", "promote")
        # PostgreSQL's own part: a promote that arrives while the standby waits for WAL from
        # the dead primary waits out wal_retrieve_retry_interval (5 s by default) first.
        self.promoted_after = round(now() - killed, 3)
        return killed

    def stop(self):
        if self.standby_port:
            self.run(f"{self.bin}/pg_ctl", "-D", self.standby_data, "-m", "immediate", "-w", "-t", "10",
                     "stop", check=False)
        subprocess.run(["bash", os.path.join(self.scripts, "postgres.sh"), "stop", self.primary_dir],
                       check=False, capture_output=True)


HAPROXY = """\
global
  # Writes are retried by HAProxy only while it holds them whole: room for the load's uploads.
  tune.bufsize 131072
  maxconn 1000
defaults
  mode http
  # Also the pause before a connection is retried while a backend has one server up (the
  # writer): on loopback a connect answers at once, refused or not.
  timeout connect 300ms
  # The librarian's /health lists the object store: slower than a check interval at times.
  timeout check 2s
  timeout client 30s
  timeout server 30s
  option http-buffer-request
  # A fresh connection to the server per request: a server that stops closes its idle
  # keep-alive connections, and a request HAProxy had just sent on one of them would be
  # answered by closing the client's connection without a response (HAProxy does not replay a
  # request that failed on a reused connection). A fresh connection fails at connect instead,
  # which is retried.
  option http-server-close
  # 503 is a follower's not_leader (or a server draining); the body was not read, nothing was
  # written. empty-response/response-timeout may replay a write that was applied: the load's
  # writes are idempotent (PUT) or carry Idempotency-Key.
  retry-on 503 conn-failure empty-response response-timeout
  retries 15
  option redispatch 1
  # Readers: a stopped instance refuses connections, and a refused request is redispatched
  # at once to another instance (HAProxy does not wait when several servers are up).
  default-server check inter 500ms fall 2 rise 1
{sections}"""

SERVICE = """\
frontend {service}
  bind 127.0.0.1:{port}
  acl read method GET HEAD OPTIONS
  use_backend {service}_read if read
  default_backend {service}_write
backend {service}_write
  option httpchk GET /health/writer
  http-check expect status 200
  # A writer that stopped accepting stays up for two seconds (ten checks): its requests are
  # retried every 300 ms (timeout connect) and redispatched, and by then the next writer is
  # up, so that a handover answers no request with "no server available". (With five, a
  # librarian handover on the loaded machine once took longer: drain, the download counts,
  # the release, the new writer's catch-up.)
  default-server check inter 200ms fall 10 rise 1
  http-response set-header X-Served-By %[srv_name]
{servers}backend {service}_read
  option httpchk GET /health
  http-response set-header X-Served-By %[srv_name]
{servers}"""


class Load:
    """Writers and readers through HAProxy until stopped; every request logged."""

    def __init__(self, directory_port, librarian_port, log_path, seed):
        self.ports = {"directory": directory_port, "librarian": librarian_port}
        self.log = open(log_path, "w")
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.phase = "start"
        self.rng = random.Random(seed)
        self.run_id = f"{seed:x}"
        pairs = [(f"ha-t{g:02d}", f"ha-t{m:02d}") for g in range(TEAMS) for m in range(g + 1, TEAMS)]
        pairs += [(f"ha-t{g:02d}", f"ha-p{p:03d}") for g in range(TEAMS) for p in range(PERSONS)]
        self.rng.shuffle(pairs)
        self.pairs = iter(pairs)
        self.uploads = iter(range(1, 10**9))
        self.memberships = {}  # (team, member) -> outcome
        self.files = {}  # filename -> outcome
        self.acks = {"directory": [], "librarian": []}  # (time acknowledged, served by)
        self.requests = []  # (start, end, phase, kind, ok, attempts)
        self.threads = []

    def record(self, entry):
        with self.lock:
            self.log.write(json.dumps(entry) + "\n")

    def write(self, service, method, path, body, headers, key):
        """Sends until acknowledged (200/201) or WRITE_DEADLINE; a 503, 502, 504 or a broken
        connection is repeated (the same request, the same Idempotency-Key)."""
        started = now()
        attempts = 0
        while True:
            attempts += 1
            sent = now()
            try:
                status, answer_headers, data = request(self.ports[service], method, path, body, headers)
                error = None
            except OSError as e:
                status, answer_headers, data, error = None, {}, b"", repr(e)
            done = now()
            served_by = answer_headers.get("x-served-by")
            if status not in (200, 201) and error is None:
                error = data[:300].decode("utf-8", "replace")
            self.record({"t": round(sent, 4), "ms": round((done - sent) * 1000, 1), "phase": self.phase,
                         "service": service, "method": method, "path": path, "key": key,
                         "attempt": attempts, "status": status, "served_by": served_by, "error": error})
            if status in (200, 201):
                with self.lock:
                    self.acks[service].append((done, served_by))
                return True, attempts, answer_headers, data, done
            if status not in (None, 502, 503, 504) or done - started > WRITE_DEADLINE:
                return False, attempts, answer_headers, data, done
            time.sleep(0.05)

    def membership_writer(self):
        while not self.stopping.is_set():
            with self.lock:
                team, member = next(self.pairs)
            start, phase = now(), self.phase
            ok, attempts, headers, _, done = self.write(
                "directory", "PUT", f"/teams/{team}/members/{member}", b'{"role":"member"}',
                {"content-type": "application/json"}, f"{team}/{member}")
            self.memberships[(team, member)] = {"acked": ok, "revision": int(headers.get("x-revision", 0))}
            with self.lock:
                self.requests.append((start, done, phase, "membership", ok, attempts))
            time.sleep(0.02)

    def uploader(self):
        while not self.stopping.is_set():
            with self.lock:
                n = next(self.uploads)
                size = self.rng.choice([300, 4000, 20000, 70000])
                body = self.rng.randbytes(size)
            filename = f"u{n:06d}"
            start, phase = now(), self.phase
            ok, attempts, headers, data, done = self.write(
                "librarian", "POST", f"/buckets/ha/files?filename={filename}", body,
                {"content-type": "application/octet-stream",
                 "idempotency-key": f"ha-{self.run_id}-{n}"}, filename)
            record = json.loads(data) if ok else {}
            self.files[filename] = {"acked": ok, "id": record.get("id"), "size": size,
                                    "sha256": hashlib.sha256(body).hexdigest(),
                                    "revision": int(headers.get("x-revision", 0))}
            with self.lock:
                self.requests.append((start, done, phase, "upload", ok, attempts))
            time.sleep(0.05)

    def reader(self):
        rng = random.Random(self.rng.random())
        while not self.stopping.is_set():
            start, phase = now(), self.phase
            acked = [(name, f) for name, f in list(self.files.items()) if f["acked"]]
            if acked and rng.random() < 0.5:
                name, f = rng.choice(acked)
                service, path = "librarian", f"/{f['id']}/{name}"
            else:
                name, f = None, None
                service, path = "directory", f"/teams/ha-t{rng.randrange(TEAMS):02d}/members"
            try:
                status, headers, data = request(self.ports[service], "GET", path)
                error = None
            except OSError as e:
                status, headers, data, error = None, {}, b"", repr(e)
            # Every team exists before the load starts; a download must be the uploaded bytes.
            ok = status == 200 if f is None else (
                status == 200 and hashlib.sha256(data).hexdigest() == f["sha256"])
            self.record({"t": round(start, 4), "ms": round((now() - start) * 1000, 1), "phase": phase,
                         "service": service, "method": "GET", "path": path, "status": status,
                         "served_by": headers.get("x-served-by"), "error": error, "ok": ok})
            with self.lock:
                self.requests.append((start, now(), phase, "read", ok, 1))
            time.sleep(0.01)

    def start(self):
        for target in [self.membership_writer, self.membership_writer, self.uploader,
                       self.reader, self.reader]:
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(WRITE_DEADLINE + 30)
        self.log.close()

    def first_ack_after(self, service, since, killed):
        with self.lock:
            for done, served_by in self.acks[service]:
                if done > since and served_by != killed:
                    return done
        return None


class Cluster:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        os.makedirs(os.path.join(self.work, "logs"), exist_ok=True)
        self.procs = Processes(self.work)
        self.pg = Postgres(self.work, os.path.dirname(os.path.abspath(__file__)))
        self.instances = {"directory": [], "librarian": []}
        self.haproxy = None
        self.ports = {}

    def configs(self):
        url = self.pg.url()
        common = f"[server]\nlease_ttl_ms = {LEASE_TTL_MS}\n[server.limits]\nshutdown_grace_secs = 20\n"
        s3 = (f'{{ type = "s3", endpoint = "{os.environ["SEAWEEDFS_S3_ENDPOINT"]}", '
              f'region = "{os.environ["SEAWEEDFS_S3_REGION"]}", '
              f'access_key = "{os.environ["SEAWEEDFS_S3_ACCESS_KEY"]}", '
              f'secret_key = "{os.environ["SEAWEEDFS_S3_SECRET_KEY"]}" }}')
        prefix = f"ha{random.getrandbits(40):010x}"
        for service in ("directory", "librarian"):
            for i in range(3):
                data = os.path.join(self.work, f"{service}{i}")
                os.makedirs(data, exist_ok=True)
                text = common + f'[store]\nbackend = "postgres"\ndata_dir = "{data}"\n'
                if service == "librarian":
                    text += f'token_secret = "{"ab" * 32}"\ngc_interval_secs = 0\n'
                text += f'[store.postgres]\nurl = "{url}"\nschema = "{service}"\nretry_ms = 15000\n'
                if service == "librarian":
                    text += (f'[object_store]\nprotocol = {s3}\ncontainer_prefix = "{prefix}"\n'
                             f'spool_dir = "{data}"\n')
                config = os.path.join(self.work, f"{service}{i}.toml")
                with open(config, "w") as f:
                    f.write(text)
                binary = os.path.join(self.args.bin, service)
                self.instances[service].append(Instance(service, i, binary, config, self.work, self.procs))

    def start(self):
        self.pg.start_primary()
        if self.args.standby:
            self.pg.start_standby()
        self.configs()
        # One at a time: the first creates the schema.
        for service in self.instances:
            for instance in self.instances[service]:
                instance.start()
                instance.wait_healthy()
        sections = ""
        for service, instances in self.instances.items():
            self.ports[service] = free_port()
            servers = "".join(f"  server {i.name} 127.0.0.1:{i.port}\n" for i in instances)
            sections += SERVICE.format(service=service, port=self.ports[service], servers=servers)
        config = os.path.join(self.work, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(HAPROXY.format(sections=sections))
        binary = next(p for p in ("/usr/sbin/haproxy", "/usr/bin/haproxy") if os.path.exists(p))
        log = open(os.path.join(self.work, "logs", "haproxy.log"), "w")
        self.haproxy = self.procs.started(subprocess.Popen(
            [binary, "-db", "-f", config], stdout=log, stderr=log, stdin=subprocess.DEVNULL))
        for service in self.instances:
            self.leader(service)
            deadline = now() + 20
            while status_of(self.ports[service], "/health") != 200:
                if now() > deadline:
                    fail(f"HAProxy does not answer for {service}")
                time.sleep(0.1)

    def leader(self, service, limit=20):
        """The one instance whose /health/writer answers 200."""
        deadline = now() + limit
        while True:
            leading = [i for i in self.instances[service] if i.process.poll() is None and i.is_writer()]
            if len(leading) > 1:
                fail(f"two {service} writers: {[i.name for i in leading]}")
            if leading:
                return leading[0]
            if now() > deadline:
                fail(f"no {service} writer after {limit} s")
            time.sleep(0.05)

    def stop(self):
        for instances in self.instances.values():
            for instance in instances:
                instance.stop()
        if self.haproxy and self.haproxy.poll() is None:
            self.haproxy.terminate()
            self.haproxy.wait()
        self.pg.stop()


def kills(cluster, load, count, report):
    """SIGKILL both leaders at once, `count` times; the failover time of each service."""
    failovers = {"directory": [], "librarian": []}
    for round_ in range(count):
        load.phase = f"kill{round_}"
        leaders = {s: cluster.leader(s) for s in cluster.instances}
        killed_at = now()
        for instance in leaders.values():
            instance.signal(signal.SIGKILL)
        for instance in leaders.values():
            instance.process.wait()
        for service, instance in leaders.items():
            deadline = killed_at + 30
            while (acked := load.first_ack_after(service, killed_at, instance.name)) is None:
                if now() > deadline:
                    fail(f"kill {round_}: no {service} write acknowledged 30 s after the kill")
                time.sleep(0.01)
            failovers[service].append(acked - killed_at)
            print(f"kill {round_}: {service} {instance.name} killed; a write acknowledged at the new "
                  f"leader after {acked - killed_at:.2f} s", flush=True)
        for instance in leaders.values():
            instance.start()
        for instance in leaders.values():
            instance.wait_healthy()
        time.sleep(0.5)
    report["failover_s"] = {}
    for service, times in failovers.items():
        if not times:
            continue
        report["failover_s"][service] = {
            "kills": len(times), "p50": round(statistics.median(times), 3), "max": round(max(times), 3),
            "all": [round(t, 3) for t in times]}
        if max(times) > FAILOVER_LIMIT:
            fail(f"{service}: a failover took {max(times):.2f} s (limit {FAILOVER_LIMIT} s)")


def rolling_restart(cluster, load, report):
    """SIGTERM, wait for the drained exit, start, wait healthy; each instance in turn."""
    load.phase = "rolling"
    started = now()
    for service, instances in cluster.instances.items():
        for instance in instances:
            instance.signal(signal.SIGTERM)
            code = instance.process.wait(60)
            if code != 0:
                fail(f"{instance.name} exited with {code} after SIGTERM; see {instance.log}")
            instance.start()
            instance.wait_healthy()
            # HAProxy's next check (every 200 ms) sees it up before the next one goes down.
            time.sleep(1.0)
            print(f"rolling restart: {instance.name} restarted", flush=True)
    time.sleep(1.0)
    load.phase = "after-rolling"
    in_phase = [r for r in list(load.requests) if r[2] == "rolling"]
    failed = [r for r in in_phase if not r[4]]
    retried = [r for r in in_phase if r[5] > 1]
    report["rolling_restart"] = {"seconds": round(now() - started, 1), "requests": len(in_phase),
                                 "failed": len(failed), "client_retries": len(retried)}
    print(f"rolling restart: {len(in_phase)} requests, {len(failed)} failed, {len(retried)} repeated "
          "by the client after a 503", flush=True)
    if failed:
        fail(f"{len(failed)} client requests failed during the rolling restart")


def outage(cluster, load, report, name, action):
    """Runs `action`, which returns the moment from which writes are awaited (the database
    back up after a restart; the primary killed), and waits for writes to resume."""
    load.phase = name
    at = action()
    for service in cluster.instances:
        deadline = at + 60
        while load.first_ack_after(service, at, None) is None:
            if now() > deadline:
                fail(f"{name}: no {service} write acknowledged within 60 s")
            time.sleep(0.01)
    resumed = {s: round(load.first_ack_after(s, at, None) - at, 3) for s in cluster.instances}
    report[name] = {"writes_resumed_after_s": resumed, "load_average": os.getloadavg()}
    promoted = cluster.pg.promoted_after if name == "standby_promotion" else None
    if promoted is not None:
        report[name]["standby_promoted_after_s"] = promoted
    print(f"{name}: writes resumed after {resumed}"
          + (f" (the standby was promoted after {promoted})" if promoted is not None else ""),
          flush=True)
    time.sleep(2)


def feed(port, query):
    """Every event of GET /changes with `query`, oldest first, and the head read up to. A
    page may hold no match and still end before the head (the server looks at a bounded
    number of events per page): only `next` reaching `head` ends the feed."""
    events, after = [], 0
    while True:
        status, _, data = request(port, "GET", f"/changes?after={after}&limit=1000{query}")
        if status != 200:
            fail(f"GET /changes answered {status}: {data[:200]!r}")
        page = json.loads(data)
        events += page["changes"]
        if page["next"] >= page["head"]:
            return events, page["head"]
        after = page["next"]


def check(cluster, load, report, leader_only):
    # A write the load gave up on may still be applied after the load stopped (HAProxy waits
    # 30 s for an answer, the client 20 s, and a writer retries PostgreSQL for 15 s), between
    # the feed's reading and the instances' answers. So the directory is compared at a moment
    # its head did not move across the whole comparison, tried again until it does.
    for _ in range(12):
        problems, directory_checks, moved = check_directory(cluster, load, leader_only)
        if not moved:
            break
        print(f"ha-test: the directory's head moved during the check ({moved}); again", flush=True)
        time.sleep(5)
    else:
        problems.append("the directory's head kept moving 60 s after the load stopped")
    librarian_problems, librarian_checks = check_librarian(cluster, load, leader_only)
    problems += librarian_problems
    report["checks"] = {
        **directory_checks,
        **librarian_checks,
        "instances_read": "leader only" if leader_only else "all three, with min_revision",
        "problems": problems[:50],
    }
    for p in problems[:50]:
        print(f"ha-test: {p}", file=sys.stderr)
    if problems:
        fail(f"{len(problems)} problems in the final check")


def check_directory(cluster, load, leader_only):
    """The directory's part of the final check: its problems, its counts for the report, and
    how its head moved while it ran (None when it did not)."""
    problems = []
    # The directory: each acknowledged membership exactly once in the feed, nothing else.
    directory = cluster.leader("directory")
    added = {}
    events, head = feed(directory.port, "&kind=membership.added")
    for event in events:
        if event.get("team", "").startswith("ha-t"):
            key = (event["team"], event["member"])
            added[key] = added.get(key, 0) + 1
    acked = {k for k, v in load.memberships.items() if v["acked"]}
    for key in acked:
        if added.get(key) != 1:
            problems.append(f"membership {key} acknowledged, {added.get(key, 0)} times in the feed")
    for key, n in added.items():
        if key not in load.memberships:
            problems.append(f"membership {key} in the feed but never asked for")
        elif n != 1:
            problems.append(f"membership {key} {n} times in the feed")
    # A BFS over the final edges (every membership the feed holds), against every instance.
    members = {}
    for team, member in added:
        members.setdefault(team, set()).add(member)
    highest = max([v["revision"] for v in load.memberships.values() if v["acked"]] or [0])
    instances = [directory] if leader_only else cluster.instances["directory"]
    compared = 0
    for g in range(TEAMS):
        team = f"ha-t{g:02d}"
        expected, queue = set(), [team]
        while queue:
            for member in members.get(queue.pop(), ()):
                if member not in expected:
                    expected.add(member)
                    queue.append(member)
        answers = {}
        for instance in instances:
            status, _, data = request(instance.port, "GET",
                                      f"/teams/{team}/members?transitive=true&min_revision={highest}",
                                      headers={"x-min-revision": str(highest)})
            answers[instance.name] = sorted(json.loads(data)["members"]) if status == 200 else status
        for name, answer in answers.items():
            compared += 1
            if answer != sorted(expected):
                got = answer if not isinstance(answer, list) else f"{len(answer)} members"
                problems.append(f"{name}: {team} has {got}, the BFS says {len(expected)}")
    _, head_after = feed(directory.port, "&kind=membership.added")
    checks = {
        "memberships_acknowledged": len(acked),
        "memberships_unacknowledged": len(load.memberships) - len(acked),
        "memberships_in_feed": len(added),
        "teams_compared_with_bfs": compared,
    }
    return problems, checks, None if head_after == head else f"{head} -> {head_after}"


def check_librarian(cluster, load, leader_only):
    """The librarian's part of the final check: its problems and its counts for the report."""
    problems = []
    # The librarian: each acknowledged upload once in the feed, byte-identical everywhere.
    librarian = cluster.leader("librarian")
    created = {}
    events, _ = feed(librarian.port, "&kind=file.created&bucket=ha")
    for event in events:
        created.setdefault(event["filename"], []).append(event["file"])
    for name, ids in created.items():
        if name not in load.files:
            problems.append(f"upload {name} in the feed but never asked for")
        elif len(ids) != 1:
            problems.append(f"upload {name} {len(ids)} times in the feed: {ids}")
    downloads = 0
    readers = [librarian] if leader_only else cluster.instances["librarian"]
    for name, f in sorted(load.files.items()):
        if not f["acked"]:
            continue
        if created.get(name) != [f["id"]]:
            problems.append(f"upload {name} acknowledged as {f['id']}, in the feed as {created.get(name)}")
        for instance in readers:
            status, _, data = request(instance.port, "GET", f"/{f['id']}/{name}")
            downloads += 1
            if status != 200 or hashlib.sha256(data).hexdigest() != f["sha256"]:
                problems.append(f"{instance.name}: {name} (file {f['id']}) answered {status}, "
                                f"{len(data)} bytes, not the {f['size']} uploaded")
    checks = {
        "uploads_acknowledged": sum(f["acked"] for f in load.files.values()),
        "uploads_unacknowledged": sum(not f["acked"] for f in load.files.values()),
        "downloads_compared": downloads,
    }
    return problems, checks


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["short", "long"])
    parser.add_argument("--bin", required=True, help="the directory holding `directory` and `librarian`")
    parser.add_argument("--work", required=True)
    parser.add_argument("--kills", type=int)
    parser.add_argument("--phases", help="a comma-separated subset of kills,rolling,postgres,standby")
    parser.add_argument("--leader-only", action="store_true",
                        help="read the final check from the leaders only (followers not caught up)")
    args = parser.parse_args()
    # Stopped from outside (the shell's trap): the `finally` below stops every process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    kill_count = args.kills if args.kills is not None else (3 if args.mode == "short" else 20)
    phases = (args.phases or ("kills,rolling,standby" if args.mode == "short" else "kills,rolling,postgres,standby")).split(",")
    report = {"mode": args.mode, "phases": phases, "kills": kill_count, "load_average_start": os.getloadavg()}
    args.standby = "standby" in phases
    cluster = Cluster(args)
    load = None
    try:
        cluster.start()
        load = Load(cluster.ports["directory"], cluster.ports["librarian"],
                    os.path.join(args.work, "requests.jsonl"), random.getrandbits(32))
        for g in range(TEAMS):
            ok, *_ = load.write("directory", "PUT", f"/teams/ha-t{g:02d}", b"", {}, f"ha-t{g:02d}")
            if not ok:
                fail(f"creating team ha-t{g:02d}")
        # Every instance has applied the teams before the readers start.
        for instance in cluster.instances["directory"]:
            deadline = now() + 20
            while status_of(instance.port, f"/teams/ha-t{TEAMS - 1:02d}/members") != 200:
                if now() > deadline:
                    fail(f"{instance.name} does not know team ha-t{TEAMS - 1:02d} 20 s after it was created")
                time.sleep(0.05)
        started = now()
        load.start()
        time.sleep(2)
        if "kills" in phases:
            kills(cluster, load, kill_count, report)
        if "rolling" in phases:
            rolling_restart(cluster, load, report)
        if "postgres" in phases:
            outage(cluster, load, report, "postgres_restart", lambda: (cluster.pg.restart_primary(), now())[1])
        if "standby" in phases:
            outage(cluster, load, report, "standby_promotion", cluster.pg.kill_primary_and_promote)
        time.sleep(1)
        load.stop()
        report["load_seconds"] = round(now() - started, 1)
        phases_seen = {}
        for _, _, phase, kind, ok, attempts in load.requests:
            entry = phases_seen.setdefault(phase.rstrip("0123456789"), {"requests": 0, "failed": 0, "repeated": 0})
            entry["requests"] += 1
            entry["failed"] += not ok
            entry["repeated"] += attempts > 1
        report["requests_by_phase"] = phases_seen
        report["load_average_end"] = os.getloadavg()
        check(cluster, load, report, args.leader_only)
    finally:
        if load and not load.stopping.is_set():
            load.stop()
        cluster.stop()
        with open(os.path.join(args.work, "report.json"), "w") as f:
            json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))
    print("ha-test: passed")


if __name__ == "__main__":
    main()
