"""What the machine and a process tree are doing, read from /proc (Linux only).

Used for the bench's hygiene: wait until the machine is idle before a rep, and tell afterwards
whether anything but the server and the load generator used the CPU during it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class MachineCPU:
    """Whole-machine CPU seconds since boot, summed over cores."""

    busy: float  # user + nice + system: what processes ran (co-tenant jobs show here)
    idle: float  # idle + iowait
    irq: float  # irq + softirq (loopback networking partly lands here)
    steal: float  # taken by the hypervisor

    @property
    def total(self) -> float:
        return self.busy + self.idle + self.irq + self.steal

    def __sub__(self, other: MachineCPU) -> MachineCPU:
        return MachineCPU(self.busy - other.busy, self.idle - other.idle,
                          self.irq - other.irq, self.steal - other.steal)


def machine_cpu() -> MachineCPU:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) / TICK for v in fields[:8])
    return MachineCPU(user + nice + system, idle + iowait, irq + softirq, steal)


def _processes() -> dict[int, tuple[int, int, float]]:
    """pid -> (ppid, pgid, CPU seconds incl. reaped children) for every live process."""
    table: dict[int, tuple[int, int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        rest = raw[raw.rindex(")") + 2:].split()  # the name may hold spaces and brackets
        ppid, pgid = int(rest[1]), int(rest[2])
        cpu = sum(int(v) for v in rest[11:15]) / TICK  # utime stime cutime cstime
        table[int(entry)] = (ppid, pgid, cpu)
    return table


def tree(root: int) -> dict[int, float]:
    """pid -> CPU seconds of ``root``, its descendants and its process group."""
    table = _processes()
    members = {pid for pid, (_, pgid, _) in table.items() if pgid == root}
    members.add(root)
    grew = True
    while grew:  # descendants that left the group (e.g. started their own session)
        grew = False
        for pid, (ppid, _, _) in table.items():
            if ppid in members and pid not in members:
                members.add(pid)
                grew = True
    return {pid: table[pid][2] for pid in members if pid in table}


def tree_cpu(root: int) -> float:
    return sum(tree(root).values())


def tree_rss(root: int) -> int:
    """Resident bytes of the whole tree (shared pages counted once per process)."""
    return sum(rss for _, rss in tree_rss_by_process(root))


def tree_rss_by_process(root: int) -> list[tuple[str, int]]:
    """Each process of the tree: its command line (shortened) and resident bytes."""
    found = []
    for pid in tree(root):
        try:
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        found.append((" ".join(a.decode(errors="replace") for a in argv)[:300], rss))
    return found


def wait_idle(threshold: float = 0.85, sample: float = 1.0,
              timeout: float = 180.0) -> tuple[bool, float, float]:
    """Wait until the machine is at least ``threshold`` idle over a ``sample`` window.

    Returns (became idle, the last idle share, seconds waited)."""
    started = time.monotonic()
    while True:
        before = machine_cpu()
        time.sleep(sample)
        delta = machine_cpu() - before
        share = delta.idle / delta.total if delta.total > 0 else 1.0
        waited = time.monotonic() - started
        if share >= threshold:
            return True, share, waited
        if waited >= timeout:
            return False, share, waited
