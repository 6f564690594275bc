"""Where zsupd's job output goes: the Manager's output callback, adapted to the log writer
(zsup/core/logfiles) or to a log target (journal, syslog: zsup/daemon/logtargets.py), with
each job's log settings merged once per job spec.

Thread rule: `write` runs on the IO loop's thread (output) and on the supervisor's (hook
output), and only hands the batch on: the writer and the targets have threads of their own.
"""

from __future__ import annotations

from zsup.core.jobspec import JobSpec
from zsup.core.logfiles import LogSettings, LogWriter


class JobLogs:
    """Adapts the Manager's output callback to the LogWriter: one LogSettings per job spec."""

    def __init__(self, writer: LogWriter, defaults: LogSettings, target=None):
        self.writer = writer
        self.target = target  # a LogTarget (journal, syslog) instead of the files, or None
        self.defaults = defaults
        self._cache: dict[int, tuple[JobSpec, LogSettings]] = {}

    def settings(self, spec: JobSpec) -> LogSettings:
        hit = self._cache.get(id(spec))
        if hit is None or hit[0] is not spec:
            hit = (spec, LogSettings.merge(self.defaults, spec.to_dict()))
            self._cache[id(spec)] = hit
        return hit[1]

    def write(self, job, label, spec, pid, os_pid, seq, data, lines=None) -> None:
        settings = self.settings(spec)
        if settings.log:
            if self.target is None:
                self.writer.write(job, label, settings, pid, os_pid, seq, data, lines)
            else:
                self.target.write(job, label, pid, os_pid, seq, data)


def log_defaults(settings: dict) -> LogSettings:
    return LogSettings(
        log=settings["log"], log_dir=settings["log_dir"], log_format=settings["log_format"],
        log_max_bytes=settings["log_max_bytes"], log_backups=settings["log_backups"],
        log_rotate=settings["log_rotate"],
    )
