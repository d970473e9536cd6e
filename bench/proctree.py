#!/usr/bin/env python3
"""CPU seconds and resident memory of a process tree, from /proc.

  proctree.py cpu PID          total CPU seconds of PID and its descendants, including
                               children that have exited and been reaped (cutime/cstime)
  proctree.py rss PID          proportional set size (PSS: shared pages divided among the
                               processes sharing them) of PID and its live descendants, KiB;
                               plain RSS summed over Postfix's many processes would count
                               shared libraries once per process
  proctree.py peak PID SECONDS [INTERVAL]
                               sample that every INTERVAL s (default 0.2) for SECONDS; print
                               the peak KiB. Each sample reads every process's smaps_rollup:
                               with Postfix's hundreds of processes that costs CPU the
                               servers share, so throughput runs sample once a second
  proctree.py machine          CPU seconds the whole machine has been busy since boot, all
                               cores (/proc/stat: user, nice, system, irq, softirq; not idle,
                               iowait or steal): the server, the load generator, the kernel's
                               I/O threads (jbd2, loop, kworker) and everything else
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


def machine():
    with open("/proc/stat") as f:
        fields = f.readline().split()
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) / TICK


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "machine":
        print(f"{machine():.2f}")
        sys.exit(0)
    pid = int(sys.argv[2])
    if cmd == "cpu":
        print(f"{cpu(pid):.2f}")
    elif cmd == "rss":
        print(rss(pid))
    elif cmd == "peak":
        end, peak = time.time() + float(sys.argv[3]), 0
        interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.2
        while time.time() < end:
            peak = max(peak, rss(pid))
            time.sleep(interval)
        print(peak)
