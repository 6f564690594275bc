"""The daemon's config file: gaffer's ini format, read with configobj, checked as a whole.

A file is either accepted entirely or refused with one line that names the file, the section,
the key and the reason (`ConfigError`), so that zsupd can keep its old config on a bad reload
and a user can fix the file without guessing.

Sections:
  [zsup] (or [gaffer], not both)   daemon settings (SETTINGS below); unknown keys are errors
  [endpoint:NAME]                  an HTTP listener: bind, certfile, keyfile, backlog,
                                   auth_file, tokens_file
  [webhooks]                       `event or topic prefix = http(s) URL`, kept as written
  [process:NAME], [process:GROUP:NAME]   a job (GROUP is its session), keys of JobSpec
  [env:NAME], [env:GROUP:NAME]     that job's environment, names upper-cased
  [env:APP.ENV]                    task environment ENV of app APP (docs/tasks.md)
  [plugin:NAME]                    left alone for plugins (they get `DaemonConfig.raw`)

The types and defaults of [zsup] and [endpoint:NAME] are configobj configspecs checked with
its Validator (zsup.daemon.config_spec); [process:...] keys are JobSpec's.

Syntax rules on top of configobj (which only knows `#` comments and would read `;key=` as a
key named ";key"):
  - a line whose first non-blank character is `;` or `#` is a comment, and so is what
    follows a section header (`[zsup] ; main settings`);
  - in a value, `#` starts a comment only at its start or after whitespace, and not inside
    quotes, as in the shell: `url = http://h/#top` keeps its `#`; `;` in a value is literal;
  - a value wholly inside matching quotes loses them (`name = "a # b"`), except `cmd` and
    `args`, which are command lines whose quotes belong to shell-like splitting;
  - values are single lines; list values (`redirect_output`, `http_endpoints`, `flapping`)
    are comma separated and split by the checks, not by configobj.
  - a value may hold three single quotes in a row, or three double quotes, not both (it
    reaches configobj inside triple quotes of the other kind).
Relative paths (cwd, log_dir, state_dir, key files, ...) are relative to the config file's
folder, so a config works whatever the daemon's current directory is; a job whose `cmd`
starts with `./` or `../` and has no `cwd` runs in that folder (gaffer's `cmd = ./dummy.py`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from urllib.parse import urlsplit

from configobj import ConfigObj, ConfigObjError, DuplicateError
from configobj.validate import ValidateError

from zsup.core.depends import DependencyError, check_graph
from zsup.core.jobspec import DEFAULT_SESSION, JobSpec, check_name
from zsup.core.signals import parse_signal
from zsup.daemon.config_spec import ENDPOINT_OPTIONAL, ENDPOINT_SPEC, SETTINGS_SPEC, validator
from zsup.daemon.sockets import parse_socket
from zsup.errors import BadRequest
from zsup.paths import default_state_dir

# Keys a [process:...] section may hold: every JobSpec option but those the section's name
# and its [env:...] section give.
JOB_KEYS = tuple(f.name for f in fields(JobSpec) if f.name not in ("name", "session", "env"))
# cmd and args are split like a shell line later: their quotes are meaningful.
LITERAL_KEYS = ("cmd", "args")

_SECTION_LINE = re.compile(r"^\[+\s*([^\]]*?)\s*\]+")


class ConfigError(BadRequest):
    """A refused config file; the message is one line: `file[:line]: [section] key: reason`."""

    file: str | None = None
    section: str | None = None
    key: str | None = None
    line: int | None = None
    reason: str | None = None

    @classmethod
    def at(cls, file: str, reason: str, section: str | None = None, key: str | None = None,
           line: int | None = None) -> "ConfigError":
        where = f"{file}:{line}:" if line else f"{file}:"
        parts = [where] + ([f"[{section}]"] if section is not None else []) + ([f"{key}:"] if key else [])
        err = cls(" ".join(parts + [reason]))
        err.file, err.section, err.key, err.line, err.reason = file, section, key, line, reason
        return err


@dataclass
class DaemonConfig:
    """A checked config file: what zsupd needs to start, and the raw file for plugins."""

    path: str
    settings: dict
    endpoints: dict = field(default_factory=dict)
    http_endpoints: list = field(default_factory=list)
    webhooks: list = field(default_factory=list)
    jobs: list = field(default_factory=list)
    # [env:APP.ENV] sections: the variables of task environment ENV of app APP (docs/tasks.md),
    # keyed "APP.ENV", names upper-cased.
    task_envs: dict = field(default_factory=dict)
    sockets: list = field(default_factory=list)  # [socket:NAME] (zsup/daemon/sockets.py)
    raw: ConfigObj | None = field(default=None, repr=False, compare=False)

    def job_dicts(self) -> list[dict]:
        """The jobs in their JSON form (the shape `load` takes), in file order."""
        return [job.to_dict() for job in self.jobs]


def load_config(path: str, overrides: dict | None = None) -> DaemonConfig:
    """Read and check a config file. `overrides` are [zsup] keys from the command line: they
    win over the file, None values are ignored, relative paths are relative to the cwd."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError.at(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError.at(path, f"not UTF-8 text (byte {exc.start})") from None
    return parse_config(text, path, overrides)


def parse_config(text: str, path: str = "<config>", overrides: dict | None = None) -> DaemonConfig:
    """Check a config given as text; `path` names it in errors and anchors relative paths
    (a name in angle brackets means "no file": the current directory is used)."""
    if path.startswith("<"):
        base_dir = os.getcwd()
    else:
        base_dir = os.path.dirname(os.path.abspath(path))
    return _Reader(path, base_dir).read(text, overrides or {})


def _strip_comment(value: str) -> str:
    """Cut an inline `#` comment: at the start or after whitespace, outside quotes."""
    quote = None
    for i, ch in enumerate(value):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or value[i - 1].isspace()):
            return value[:i].strip()
    if quote:  # an apostrophe in plain words: ignore quotes rather than swallow a comment
        m = re.search(r"(?:^|\s)#", value)
        return value[: m.start()].strip() if m else value.strip()
    return value.strip()


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


class _Reader:
    def __init__(self, path: str, base_dir: str):
        self.path = path
        self.base_dir = base_dir
        self.validator = validator(base_dir)

    def fail(self, reason: str, section: str | None = None, key: str | None = None,
             line: int | None = None) -> ConfigError:
        return ConfigError.at(self.path, reason, section, key, line)

    # -- syntax -------------------------------------------------------------------------

    def parse(self, text: str) -> ConfigObj:
        """Let configobj parse the structure (sections, keys, duplicates, bad lines), with each
        value cut at its comment, unquoted, and given to configobj in triple quotes, which it
        keeps verbatim: its own value syntax (lists, `#` anywhere, quotes) never applies."""
        lines, sections = [], []
        section = None
        for line in text.lstrip("\ufeff").splitlines():
            stripped = line.strip()
            if stripped.startswith(";"):
                line = "#" + stripped[1:]
            elif stripped.startswith("["):
                m = _SECTION_LINE.match(stripped)
                if m:
                    section = m.group(1)
                    if stripped[m.end():].lstrip().startswith(";"):  # `[zsup] ; comment`
                        line = stripped[: m.end()] + " #" + stripped[m.end():].lstrip()[1:]
            elif stripped and not stripped.startswith("#") and "=" in stripped:
                key, _, value = line.partition("=")
                value = _strip_comment(value)
                if key.strip() not in LITERAL_KEYS:
                    value = _unquote(value)
                quotes = "\'\'\'" if "\'\'\'" not in value else '"""'
                if quotes in value:
                    raise self.fail("a value cannot hold both \'\'\' and \"\"\"", section,
                                    key.strip(), len(lines) + 1)
                line = f"{key}= {quotes}{value}{quotes}"
            lines.append(line)
            sections.append(section)
        try:
            raw = ConfigObj(lines, interpolation=False, list_values=False, raise_errors=True)
        except ConfigObjError as exc:
            number = getattr(exc, "line_number", None)
            original = text.lstrip("\ufeff").splitlines()
            bad = original[number - 1].strip() if number and number <= len(original) else ""
            sec = sections[number - 1] if number and number <= len(sections) else None
            if isinstance(exc, DuplicateError) and bad.startswith("["):
                raise self.fail("duplicate section", sec, line=number) from None
            if isinstance(exc, DuplicateError):
                raise self.fail("duplicate key", sec, bad.partition("=")[0].strip(), number) from None
            raise self.fail(f"cannot parse {bad!r}", sec, line=number) from None
        return raw

    # -- meaning ------------------------------------------------------------------------

    def read(self, text: str, overrides: dict) -> DaemonConfig:
        raw = self.parse(text)
        if raw.scalars:
            raise self.fail("keys must be inside a section such as [zsup]", key=raw.scalars[0])
        main, endpoints, webhooks, processes, envs, task_envs, sockets = None, {}, None, [], {}, {}, []
        for sname in raw.sections:
            sec = raw[sname]
            if sec.sections:
                raise self.fail(f"subsection [[{sec.sections[0]}]] is not allowed", sname)
            kind, colon, rest = sname.partition(":")
            kind = kind.strip().lower()
            parts = [p.strip() for p in rest.split(":")] if colon else []
            if kind in ("zsup", "gaffer") and not colon:
                if main is not None:
                    raise self.fail(f"cannot be used together with [{main}]: use one", sname)
                main = sname
            elif kind == "endpoint" and len(parts) == 1:
                self.check_section_name(sname, parts[0])
                endpoints[parts[0]] = self.endpoint(sname, sec)
            elif kind == "webhooks" and not colon:
                webhooks = sname
            elif kind == "env" and len(parts) == 1 and parts[0].count(".") == 1:
                for part in parts[0].split("."):
                    self.check_section_name(sname, part)
                task_envs[parts[0]] = self.env_vars(sname, sec)
            elif kind in ("process", "env") and len(parts) in (1, 2):
                for part in parts:
                    self.check_section_name(sname, part)
                session, name = parts if len(parts) == 2 else (DEFAULT_SESSION, parts[0])
                if kind == "process":
                    processes.append((sname, session, name))
                elif (session, name) in envs:
                    raise self.fail(f"duplicate of [{envs[(session, name)]}]", sname)
                else:
                    envs[(session, name)] = sname
            elif kind == "plugin" and parts and all(parts):
                pass
            elif kind == "socket" and len(parts) == 1:
                self.check_section_name(sname, parts[0])
                try:
                    spec = parse_socket(parts[0], dict(sec))
                    if spec.unix_path:  # relative to the config file, as other paths are
                        spec = replace(spec, bind="unix:" + self.resolve(spec.unix_path))
                    sockets.append(spec)
                except BadRequest as exc:
                    key, _, reason = exc.message.partition(": ")
                    raise self.fail(reason, sname, key) from None
            else:
                raise self.fail("unknown section (expected zsup, endpoint:NAME, webhooks, "
                                "process:NAME, process:GROUP:NAME, env:NAME, socket:NAME or plugin:NAME)", sname)

        settings = self.settings(main, raw[main] if main else {}, overrides)
        for name in settings["http_endpoints"]:
            if name not in endpoints:
                raise self.fail(f"no [endpoint:{name}] section for {name!r}", main or "zsup",
                                "http_endpoints")
        hooks = self.webhooks(webhooks, raw[webhooks]) if webhooks else []
        jobs = self.jobs(raw, processes, envs, settings)
        for job, (sname, _, _) in zip(jobs, processes):
            missing = [n for n in job.sockets if n not in {sock.name for sock in sockets}]
            if missing:
                raise self.fail(f"no [socket:{missing[0]}] section", sname, "sockets")
        try:  # `depends`: every job named is in the file, and no cycle (zsup/core/depends.py)
            check_graph({job.fullname: job.depends for job in jobs},
                        scheduled={job.fullname for job in jobs if job.schedule})
        except DependencyError as exc:
            sname = next(s for s, sess, name in processes if f"{sess}.{name}" == exc.job)
            raise self.fail(exc.message.partition(": ")[2], sname, "depends") from None
        total = sum(job.numprocesses for job in jobs)
        if total > settings["max_processes_total"]:
            raise self.fail(f"the jobs want {total} processes in all, above max_processes_total "
                            f"({settings['max_processes_total']})", main or "zsup", "max_processes_total")
        return DaemonConfig(path=self.path, settings=settings, endpoints=endpoints,
                            http_endpoints=list(settings["http_endpoints"]), webhooks=hooks,
                            jobs=jobs, task_envs=task_envs, sockets=sockets, raw=raw)

    def env_vars(self, sname: str, sec) -> dict:
        env = {}
        for key, value in sec.items():
            upper = key.upper()
            if upper in env or not upper or "=" in upper or "\0" in upper:
                raise self.fail("duplicate or invalid variable name", sname, key)
            env[upper] = value
        return env

    def check_section_name(self, sname: str, name: str) -> None:
        try:
            check_name("name", name)
        except BadRequest as exc:
            raise self.fail(exc.message, sname) from None

    def resolve(self, value: str) -> str:
        return os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(value)))

    def settings(self, sname: str | None, sec, overrides: dict) -> dict:
        """[zsup] keys checked against SETTINGS_SPEC, then command-line overrides, then the
        spec's defaults and those derived from state_dir."""
        label = sname or "zsup"
        out = {}
        for key in sec:
            if key not in SETTINGS_SPEC:
                raise self.fail("unknown key", label, key)
        for key, value in sec.items():
            out[key] = self.check(SETTINGS_SPEC[key], value, label, key)
        command_line = validator(os.getcwd())  # relative paths given there are the cwd's
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in SETTINGS_SPEC:
                raise self.fail("unknown setting given on the command line", key=key)
            try:
                out[key] = command_line.check(SETTINGS_SPEC[key], value)
            except ValidateError as exc:
                raise self.fail(f"{exc} (given on the command line)", key=key) from None
        for key, check in SETTINGS_SPEC.items():
            if out.get(key) is None:
                out[key] = self.validator.get_default_value(check)
        # The same rule as every other tool, so zsupctl finds the bus without a config file.
        state = out["state_dir"] = out["state_dir"] or default_state_dir()
        out["plugin_dir"] = out["plugin_dir"] or os.path.join(state, "plugins")
        out["bus"] = out["bus"] or f"ipc://{os.path.join(state, 'zsupd.sock')}"
        out["pub"] = out["pub"] or f"ipc://{os.path.join(state, 'zsupd-pub.sock')}"
        out["log_dir"] = out["log_dir"] or os.path.join(state, "logs")
        if out["max_request_size"] < 1024:
            raise self.fail(f"must be at least 1k, got {out['max_request_size']}", label, "max_request_size")
        if not out["insecure_tcp"] and not out["curve_secret_key_file"]:
            for key in ("bus", "pub", "bus_tcp", "pub_tcp"):
                if out[key] and out[key].startswith("tcp://"):
                    raise self.fail("a TCP endpoint needs curve_secret_key_file "
                                    "(or insecure_tcp = true)", label, key)
        return out

    def check(self, spec: str, value, sname: str, key: str):
        """One value through its configspec check; a refusal names the section and key."""
        try:
            return self.validator.check(spec, value)
        except ValidateError as exc:
            raise self.fail(str(exc), sname, key) from None

    def endpoint(self, sname: str, sec) -> dict:
        for key in sec:
            if key not in ENDPOINT_SPEC:
                raise self.fail("unknown key", sname, key)
        out = {key: self.check(ENDPOINT_SPEC[key], value, sname, key) for key, value in sec.items()}
        for key, check in ENDPOINT_SPEC.items():
            if out.get(key) is None:
                out[key] = self.validator.get_default_value(check)
            if out[key] is None and key in ENDPOINT_OPTIONAL:
                del out[key]
        if out["keyfile"] and not out["certfile"]:
            raise self.fail("a keyfile needs a certfile", sname, "keyfile")
        if out.get("cacert") and not out["certfile"]:
            raise self.fail("a cacert (mutual TLS) needs a certfile", sname, "cacert")
        return out

    def webhooks(self, sname: str, sec) -> list[tuple[str, str]]:
        hooks = []
        for pattern, url in sec.items():
            if not pattern or any(ch.isspace() for ch in pattern):
                raise self.fail("an event name or topic prefix has no spaces", sname, pattern)
            parts = urlsplit(url.strip())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise self.fail(f"expected an http:// or https:// URL, got {url!r}", sname, pattern)
            hooks.append((pattern, url.strip()))
        return hooks

    def jobs(self, raw: ConfigObj, processes: list, envs: dict, settings: dict) -> list[JobSpec]:
        jobs, seen = [], {}
        for sname, session, name in processes:
            if (session, name) in seen:
                raise self.fail(f"duplicate job {session}.{name} (also [{seen[(session, name)]}])", sname)
            seen[(session, name)] = sname
            jobs.append(self.job(sname, session, name, raw[sname], raw, envs.get((session, name)),
                                 settings))
        for key, sname in envs.items():
            if key not in seen:
                raise self.fail(f"no [process:{sname.partition(':')[2]}] section for it", sname)
        return jobs

    def job(self, sname, session, name, sec, raw, env_section, settings) -> JobSpec:
        data = {}
        for key, value in sec.items():
            if key == "env":
                raise self.fail(f"use an [env:{sname.partition(':')[2]}] section", sname, key)
            if key in ("name", "session"):
                raise self.fail("given by the section name [process:GROUP:NAME]", sname, key)
            if key not in JOB_KEYS:
                raise self.fail("unknown key", sname, key)
            data[key] = value.strip()
        data.update(name=name, session=session)
        if data.get("cwd"):
            data["cwd"] = self.resolve(data["cwd"])
        elif data.get("cmd", "").lstrip("\"' ").startswith(("./", "../")):
            # gaffer runs `cmd = ./dummy.py` next to its config file.
            data["cwd"] = self.base_dir
        if data.get("log_dir"):
            data["log_dir"] = self.resolve(data["log_dir"])
        data.setdefault("ring_size", settings["ring_size"])
        data.setdefault("ring_max_bytes", settings["ring_max_bytes"])
        if data.get("stop_signal"):
            try:  # parse_signal's message does not name the option
                parse_signal(data["stop_signal"])
            except BadRequest as exc:
                raise self.fail(exc.message, sname, "stop_signal") from None
        if env_section:
            data["env"] = self.env_vars(env_section, raw[env_section])
        try:
            return JobSpec.from_dict(data)
        except BadRequest as exc:
            key, sep, reason = exc.message.partition(": ")
            if sep and (key in JOB_KEYS or key in ("name", "session")):
                raise self.fail(reason, sname, key) from None
            raise self.fail(exc.message, sname) from None

