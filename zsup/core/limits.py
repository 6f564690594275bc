"""A job's per-process limits (issue 16): rlimits, niceness, umask, OOM score, and the
watched ones (max_memory, max_cpu over limit_window).

Checked at the door (`parse_limits`, called by JobSpec.from_dict). The first kind is turned
into the arguments of zsup/core/spawner.py (`spawn_args`), which applies them in the child
between vfork and exec, before the program runs (circus's names); the watched ones are
sampled by zsup/core/resources.py, which restarts a process above them.
"""

from __future__ import annotations

import os
import resource

from zsup.bus.parse import parse_size
from zsup.errors import BadRequest

# option -> (resource number, counts bytes: takes sizes such as 1G)
RLIMITS = {
    "rlimit_nofile": (resource.RLIMIT_NOFILE, False),
    "rlimit_nproc": (resource.RLIMIT_NPROC, False),
    "rlimit_core": (resource.RLIMIT_CORE, True),
    "rlimit_as": (resource.RLIMIT_AS, True),
    "rlimit_cpu": (resource.RLIMIT_CPU, False),
    "rlimit_fsize": (resource.RLIMIT_FSIZE, True),
}
LIMIT_KEYS = tuple(RLIMITS) + ("nice", "umask", "oom_score_adj")
UNLIMITED = "unlimited"
WATCH_KEYS = ("max_memory", "max_cpu", "limit_window")
DEFAULT_WINDOW = 10.0  # seconds max_cpu is averaged over
MAX_WINDOW = 86400.0
MAX_RLIMIT = 2**63 - 2  # RLIM_INFINITY is 2**64-1 (and -1 in Python): "unlimited" says it


def _rlimit(option: str, value):
    """None (keep zsupd's), "unlimited", or a count/bytes."""
    if value is None or value == "":
        return None
    res, is_bytes = RLIMITS[option]
    hard = resource.getrlimit(res)[1]
    if isinstance(value, str) and value.strip().lower() in (UNLIMITED, "infinity"):
        if res == resource.RLIMIT_NOFILE:  # the kernel caps it at fs.nr_open, even for root
            raise BadRequest(f"{option}: Linux has no unlimited open files; give a number")
        if os.geteuid() != 0 and hard != resource.RLIM_INFINITY:
            raise BadRequest(f"{option}: zsupd's hard limit is {hard}; only root may make it unlimited")
        return UNLIMITED
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        size = ", a size such as 1G" if is_bytes else ""
        raise BadRequest(f"{option}: expected a number{size} or unlimited, got {value!r}")
    if is_bytes:
        number = parse_size(option, value)
    else:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise BadRequest(f"{option}: expected a number or unlimited, got {value!r}") from None
    if not 0 <= number <= MAX_RLIMIT:
        raise BadRequest(f"{option}: must be between 0 and {MAX_RLIMIT} (or unlimited), got {value!r}")
    if os.geteuid() != 0 and hard != resource.RLIM_INFINITY and number > hard:
        # only root may raise a hard limit: the spawn would fail on every start
        raise BadRequest(f"{option}: {number} is above zsupd's hard limit ({hard}); only root may raise it")
    return number


def _int(option: str, value, low: int, high: int):
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadRequest(f"{option}: expected an integer, got {value!r}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise BadRequest(f"{option}: expected an integer, got {value!r}") from None
    if not low <= number <= high:
        raise BadRequest(f"{option}: must be between {low} and {high}, got {value!r}")
    return number


def _umask(value):
    """An octal string ("022", "0o022"): a JSON number is refused, 22 and 0o22 are too easy to mix up."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"umask: write it as an octal string such as \"022\", got {value!r}")
    text = value.strip().lower().removeprefix("0o")
    try:
        number = int(text, 8)
    except ValueError:
        raise BadRequest(f"umask: expected octal digits such as 022, got {value!r}") from None
    if not 0 <= number <= 0o777:
        raise BadRequest(f"umask: must be between 000 and 777, got {value!r}")
    return f"{number:03o}"


def _current_oom() -> int:
    try:
        with open("/proc/self/oom_score_adj") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def parse_limits(data: dict) -> dict:
    """The limit options of a job dict, checked: BadRequest naming the option."""
    out = {option: _rlimit(option, data.get(option)) for option in RLIMITS}
    nice = _int("nice", data.get("nice"), -20, 19)
    if nice is not None and nice < os.getpriority(os.PRIO_PROCESS, 0) and os.geteuid() != 0:
        raise BadRequest(f"nice: only root may lower the niceness below zsupd's ({os.getpriority(os.PRIO_PROCESS, 0)})")
    oom = _int("oom_score_adj", data.get("oom_score_adj"), -1000, 1000)
    if oom is not None and oom < _current_oom() and os.geteuid() != 0:
        raise BadRequest(f"oom_score_adj: only root may set it below zsupd's ({_current_oom()})")
    out.update(nice=nice, umask=_umask(data.get("umask")), oom_score_adj=oom)
    out.update(_watched(data))
    out.update(_cgroup(data))
    return out


def _memory(data: dict, key: str, example: str) -> int | None:
    """A size of memory in bytes (at least 1M), or None when `key` is not given."""
    value = data.get(key)
    if value in (None, ""):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadRequest(f"{key}: expected a size such as {example}, got {value!r}")
    size = parse_size(key, value)
    if size < 1024 * 1024:
        raise BadRequest(f"{key}: must be at least 1M, got {value!r}")
    return size


def _percent(data: dict, key: str, example: str) -> float | None:
    """A percentage of one CPU (`150` or `150%`), or None when `key` is not given; the caller
    checks its range."""
    value = data.get(key)
    if value in (None, ""):
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value.strip().removesuffix("%") if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise BadRequest(f"{key}: expected a percentage of one CPU such as {example}, got {value!r}") from None


def _cgroup(data: dict) -> dict:
    """cgroup_memory_max (bytes), cgroup_cpu_max (percent of one CPU), cgroup_pids_max: the
    job's cgroup v2 limits (zsup/core/cgroup.py), None for none."""
    cpu = _percent(data, "cgroup_cpu_max", "150")
    if cpu is not None and not 1 <= cpu <= 100 * 4096:
        raise BadRequest(f"cgroup_cpu_max: must be between 1 and {100 * 4096}, got {data.get('cgroup_cpu_max')!r}")
    return {"cgroup_memory_max": _memory(data, "cgroup_memory_max", "1G"), "cgroup_cpu_max": cpu,
            "cgroup_pids_max": _int("cgroup_pids_max", data.get("cgroup_pids_max"), 1, 2**31 - 1)}


def _watched(data: dict) -> dict:
    """max_memory (bytes, of RSS), max_cpu (percent of one CPU, averaged over limit_window s)."""
    memory = _memory(data, "max_memory", "512M")
    cpu = _percent(data, "max_cpu", "80 or 150%")
    if cpu is not None and not 0 < cpu <= 100 * 4096:
        raise BadRequest(f"max_cpu: must be above 0 and at most {100 * 4096}, got {data.get('max_cpu')!r}")
    window = data.get("limit_window")
    if window in (None, ""):
        window = DEFAULT_WINDOW
    else:
        try:
            if isinstance(window, bool):
                raise ValueError
            window = float(str(window).strip())
        except ValueError:
            raise BadRequest(f"limit_window: expected seconds, got {window!r}") from None
        if not 1 <= window <= MAX_WINDOW:
            raise BadRequest(f"limit_window: must be between 1 and {MAX_WINDOW:g} seconds, "
                             f"got {data.get('limit_window')!r}")
    return {"max_memory": memory, "max_cpu": cpu, "limit_window": window}


def has_limits(spec) -> bool:
    return any(getattr(spec, key) is not None for key in LIMIT_KEYS)


def spawn_args(spec) -> dict:
    """The keyword arguments of spawner.spawn for a job's limits (soft = hard = the value)."""
    limits = []
    for option, (res, _) in RLIMITS.items():
        value = getattr(spec, option)
        if value is not None:
            number = -1 if value == UNLIMITED else value
            limits.append((res, number, number))
    return {"limits": limits, "nice": spec.nice, "oom_score_adj": spec.oom_score_adj,
            "umask": None if spec.umask is None else int(spec.umask, 8)}
