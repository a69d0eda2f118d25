#!/usr/bin/env python3
"""Where held durability calls spend their time, from two agents' logs.

Run the primary and the secondary with TANDEM_LOG=info,tandem::hops=debug (both on
one machine: CLOCK_MONOTONIC is shared by every network namespace), then:

    scripts/hops.py PRIMARY_LOG SECONDARY_LOG

Prints, per stage of a held call's path, the median and p90 of the time from the
previous stage, over every call that went the whole way.
"""
import re
import statistics
import sys

LINE = re.compile(r'stage="?(\w+)"? id=(\d+) seq=(\d+) t_us=(\d+)')
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def read(path):
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            if "tandem::hops" not in line:
                continue
            m = LINE.search(ANSI.sub("", line))
            if m:
                out.append((m[1], int(m[2]), int(m[3]), int(m[4])))
    return out


def first(events, stage, pred, after):
    for e in events:
        if e[0] == stage and e[3] >= after and pred(e):
            return e
    return None


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: hops.py PRIMARY_LOG SECONDARY_LOG")
    p, s = read(sys.argv[1]), read(sys.argv[2])
    steps = {}
    for held in (e for e in p if e[0] == "held"):
        i, t = held[1], held[3]
        path = [("held", t)]
        ok = True
        for stage in ("capture_woke", "capture_done", "primary_in"):
            e = first(p, stage, lambda e: e[1] == i, t)
            if not e:
                ok = False
                break
            path.append((stage, e[3]))
            t = e[3]
        if not ok:
            continue
        # The barrier record sent for it (or the one it waits for, just sent).
        sent = first(p, "sent", lambda e: True, t - 2000)
        rel = first(p, "released", lambda e: e[1] == i, t)
        if not sent or not rel:
            continue
        seq = sent[2]
        if sent[3] >= t:
            path.append(("sent", sent[3]))
            t = sent[3]
        chain = [
            (p, "written", lambda e: e[2] == seq),
            (s, "read", lambda e: e[2] == seq),
            (s, "secondary_in", lambda e: e[2] == seq),
            (s, "sync_start", lambda e: e[2] >= seq),
            (s, "synced", lambda e: e[2] >= seq),
            (s, "ack_out", lambda e: e[2] >= seq),
            (s, "written", lambda e: e[2] >= seq),
            (p, "read", lambda e: e[2] >= seq),
            (p, "ack_in", lambda e: e[2] >= seq),
        ]
        for log, stage, pred in chain:
            e = first(log, stage, pred, t)
            if e and e[3] <= rel[3]:
                path.append((stage if log is p else "2:" + stage, e[3]))
                t = e[3]
        path.append(("released", rel[3]))
        for (a, ta), (b, tb) in zip(path, path[1:]):
            steps.setdefault((a, b), []).append(tb - ta)
        steps.setdefault(("held", "released (total)"), []).append(rel[3] - held[3])
    order = sorted(steps.items(), key=lambda kv: -len(kv[1]))
    print(f"{'from':>16} -> {'to':<20} {'n':>6} {'p50 us':>8} {'p90 us':>8}")
    for (a, b), v in order:
        v.sort()
        p90 = v[min(len(v) - 1, int(len(v) * 0.9))]
        print(f"{a:>16} -> {b:<20} {len(v):>6} {statistics.median(v):>8.0f} {p90:>8}")


if __name__ == "__main__":
    main()
