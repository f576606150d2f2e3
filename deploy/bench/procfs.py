"""/proc: CPU, memory and context switches of processes, and of the machine."""

import os

def cpu_ticks(pid):
    """(utime, stime) of the whole process (all its threads), in ticks."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]), int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0, 0


def ctx_switches(pid):
    """Voluntary + involuntary context switches of all threads of pid."""
    n = 0
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if "ctxt_switches:" in line:
                        n += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return n


def smaps(pid):
    """{"uss","pss","rss"} in bytes from /proc/PID/smaps_rollup."""
    d = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    d[parts[0][:-1]] = int(parts[1]) * 1024
    except OSError:
        return None
    return {"uss": d.get("Private_Clean", 0) + d.get("Private_Dirty", 0),
            "pss": d.get("Pss", 0), "rss": d.get("Rss", 0)}


def tcp_active_opens():
    """Outgoing TCP connections opened so far, machine-wide (/proc/net/snmp)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("ActiveOpens")])


def machine_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def thread_count(pid):
    """Threads of pid (entries of /proc/PID/task); 0 if it is gone."""
    try:
        return len(os.listdir("/proc/%d/task" % pid))
    except OSError:
        return 0


def listen_overflows():
    """Connections dropped so far because a listen queue was full, machine-wide
    (TcpExt ListenOverflows in /proc/net/netstat; TCP only); None if unknown."""
    try:
        with open("/proc/net/netstat") as f:
            rows = [line.split() for line in f if line.startswith("TcpExt:")]
        return int(rows[1][rows[0].index("ListenOverflows")])
    except (OSError, IndexError, ValueError):
        return None
