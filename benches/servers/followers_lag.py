#!/usr/bin/env python3
"""Follower lag at a fixed write rate (issue 16), driven over loopback with the stdlib only.

Writes `PUT /teams/bench/members/p{k}` to the writer at RATE a second (WRITERS connections,
each write sent at its scheduled time), while one long poll per follower
(`GET /changes?after=..&wait=5`) notes when each revision arrives there. The lag of a write
on a follower is the arrival of its revision (its `X-Revision`) minus the moment the writer's
answer reached the client; negative when the follower had it before the client did.

    followers_lag.py --writer 127.0.0.1:28191 --follower 127.0.0.1:28192 \
        --follower 127.0.0.1:28193 --rate 1000 --duration 10
"""
import argparse
import http.client
import json
import threading
import time


def percentile(values, p):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--writer", required=True)
    parser.add_argument("--follower", action="append", required=True)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--writers", type=int, default=16)
    args = parser.parse_args()

    host, port = args.writer.split(":")
    setup = http.client.HTTPConnection(host, int(port), timeout=10)
    setup.request("PUT", "/teams/bench")
    response = setup.getresponse()
    response.read()
    start_revision = int(response.getheader("X-Revision"))

    total = int(args.rate * args.duration)
    acked = {}  # revision -> ack time
    late = []
    failures = [0]
    lock = threading.Lock()
    counter = [0]
    t0 = time.monotonic() + 0.5

    def writer():
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        body = json.dumps({"role": "member"})
        while True:
            with lock:
                k = counter[0]
                counter[0] += 1
            if k >= total:
                return
            due = t0 + k / args.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            sent = time.monotonic()
            conn.request("PUT", f"/teams/bench/members/p{k}", body=body,
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            done = time.monotonic()
            with lock:
                if response.status == 200:
                    acked[int(response.getheader("X-Revision"))] = done
                    late.append(sent - due)
                else:
                    failures[0] += 1

    arrivals = {f: {} for f in args.follower}
    stop = threading.Event()

    def watch(follower):
        fhost, fport = follower.split(":")
        conn = http.client.HTTPConnection(fhost, int(fport), timeout=30)
        after = start_revision
        while not stop.is_set():
            conn.request("GET", f"/changes?after={after}&limit=1000&wait=1")
            response = conn.getresponse()
            page = json.loads(response.read())
            now = time.monotonic()
            for change in page.get("changes", []):
                arrivals[follower].setdefault(change["revision"], now)
            after = max(after, page.get("next", after))

    watchers = [threading.Thread(target=watch, args=(f,), daemon=True) for f in args.follower]
    for thread in watchers:
        thread.start()
    writers = [threading.Thread(target=writer) for _ in range(args.writers)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    elapsed = time.monotonic() - t0
    time.sleep(2)
    stop.set()

    print(f"writes: {len(acked)} acknowledged, {failures[0]} failed, "
          f"{len(acked) / elapsed:.0f}/s achieved (target {args.rate:.0f}/s); "
          f"sent late by p50 {percentile(late, 50) * 1000:.1f} ms, "
          f"p99 {percentile(late, 99) * 1000:.1f} ms")
    for follower in args.follower:
        lags = [(arrivals[follower][r] - t) * 1000 for r, t in acked.items()
                if r in arrivals[follower]]
        missing = sum(1 for r in acked if r not in arrivals[follower])
        print(f"follower {follower}: lag ms p50 {percentile(lags, 50):.1f} "
              f"p90 {percentile(lags, 90):.1f} p99 {percentile(lags, 99):.1f} "
              f"max {max(lags):.1f}; {missing} writes never seen")


if __name__ == "__main__":
    main()
