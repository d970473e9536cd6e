#!/usr/bin/env python3
"""CPU seconds and resident memory of a process tree, from /proc.

  proctree.py cpu PID          total CPU seconds of PID and its descendants, including
                               children that have exited and been reaped (cutime/cstime)
  proctree.py rss PID          proportional set size (PSS: shared pages divided among the
                               processes sharing them) of PID and its live descendants, KiB;
                               plain RSS summed over Postfix's many processes would count
                               shared libraries once per process
  proctree.py peak PID SECONDS sample that every 0.2 s for SECONDS; print the peak KiB
"""
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    rest = data[data.rindex(")") + 2:].split()
    # fields after the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return int(rest[1]), [int(x) for x in rest[11:15]]


def tree(root):
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                ppid, _ = stat(int(name))
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu(root):
    total = 0
    for p in tree(root):
        try:
            _, t = stat(p)
        except OSError:
            continue
        total += sum(t)  # utime + stime + reaped children's
    return total / TICK


def rss(root):
    total = 0
    for p in tree(root):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


if __name__ == "__main__":
    cmd, pid = sys.argv[1], int(sys.argv[2])
    if cmd == "cpu":
        print(f"{cpu(pid):.2f}")
    elif cmd == "rss":
        print(rss(pid))
    elif cmd == "peak":
        end, peak = time.time() + float(sys.argv[3]), 0
        while time.time() < end:
            peak = max(peak, rss(pid))
            time.sleep(0.2)
        print(peak)
