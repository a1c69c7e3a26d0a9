"""CPU accounting from /proc, shared by the benchmarks."""

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return children


def proc_tree_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of a process and of each of its children, by pid."""
    return {p: proc_cpu_seconds(p) for p in [pid, *proc_children(pid)]}


def machine_busy() -> tuple[float, float]:
    """(total, busy) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) / CLOCK_TICKS, (sum(values) - idle) / CLOCK_TICKS


def proc_descendants(pid: int) -> list[int]:
    """A process and all its descendants (children of children too), by pid."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(proc_children(current))
    return tree


def proc_memory_kib(pid: int) -> dict[str, int]:
    """{"rss": KiB, "pss": KiB} of one process; PSS from /proc/<pid>/smaps_rollup (shares of pages
    shared with other processes, e.g. a forked parent's), 0 if unreadable or gone."""
    out = {"rss": 0, "pss": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss"] = int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return out
