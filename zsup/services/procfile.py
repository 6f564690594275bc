"""Procfile applications: the `name: command` files of foreman, honcho and gaffer.

A Procfile becomes one zsup session (the *app*, by default the name of the Procfile's folder)
with one job per process type. `Procfile.job_dicts` gives those jobs in the form that
`JobSpec.from_dict` and the bus's `load` command take; `export_ini` and `export_json` write
the same jobs as a zsupd config fragment or a JSON file (gaffer's `export`).

Commands are kept exactly as written and run with `shell = true`: a Procfile line is a shell
line (foreman runs it with `sh -c`), so pipes, `&&` and `$PORT` work as users expect. `$VAR`
is *not* substituted here: the `.env` variables travel in the job's `env`, and the shell
expands them when the process starts. That way an exported config shows the command the
user wrote, and changing the `[env:...]` section is enough to change what it runs with.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable

from zsup.core.envfile import load_env_files, read_text
from zsup.core.jobspec import NAME_RE
from zsup.errors import BadRequest

LINE_RE = re.compile(r"^([A-Za-z0-9_\-]+)\s*:(.*)$")
PREFIX_RE = re.compile(r"^(PORT=\$\(\(\d+ \+ \$\{ZSUP_INSTANCE:-1\} - 1\)\); export PORT; )?"
                       r"PS=[A-Za-z0-9_\-]+\.\$\{ZSUP_INSTANCE:-1\}; HONCHO_PROCESS_NAME=\$PS; "
                       r"export PS HONCHO_PROCESS_NAME; ")
APP_BAD_CHARS_RE = re.compile(r"[^A-Za-z0-9_\-]")
REDIRECT_OUTPUT = ["stdout", "stderr"]
# configobj splits its input with str.splitlines(), which breaks lines at all of these.
INI_LINE_BREAKS = set("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


class Procfile:
    """A parsed Procfile with its application name, root folder and environment."""

    def __init__(self, path: str, root: str, app: str, env: dict[str, str], processes: dict[str, str]):
        self.path = path
        self.root = root
        self.app = app
        self.env = env
        self.processes = processes

    @classmethod
    def load(
        cls,
        path: str,
        root: str | None = None,
        env_files: list[str] | None = None,
        app_name: str | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> "Procfile":
        """Read a Procfile and its environment.

        root defaults to the Procfile's folder; app_name to the root's folder name. With no
        env_files (None or empty), `<root>/.env` is read when it exists; given files are read
        in order, a later one winning, and a missing one is an error. With `warn`, lines
        honcho would skip are skipped and reported through it (else they are errors in .env
        files and silently skipped in the Procfile).
        """
        path = os.path.abspath(path)
        processes = parse_procfile(read_text(path, "Procfile"), path, warn)
        root = os.path.abspath(root) if root else os.path.dirname(path)
        if not os.path.isdir(root):
            raise BadRequest(f"{root}: no such application root directory")
        if not env_files:
            default_env = os.path.join(root, ".env")
            env_files = [default_env] if os.path.isfile(default_env) else []
        env = load_env_files(env_files, warn)
        app = app_name_for(app_name or os.path.basename(root.rstrip(os.sep)))
        return cls(path, root, app, env, processes)

    def ports(self, base: int | None) -> dict[str, int]:
        """Each type's base PORT: base + 100 per type in Procfile order (foreman, honcho)."""
        return {} if base is None else {name: base + 100 * i for i, name in enumerate(self.processes)}

    def job_dicts(self, concurrency: dict[str, int] | None = None, names: list[str] | None = None,
                  port: int | None = None) -> list[dict]:
        """One job dict per process type (all, or those in names), in Procfile order.

        Each command is preceded by `instance_prefix`: the instance's name, and its PORT when
        `port` (the app's base port) is given. The ports do not move when `names` leaves
        types out: `web` keeps its port whichever types run.
        """
        concurrency = concurrency or {}
        self.check_types(concurrency)
        self.check_types(names or [])
        wanted = list(self.processes) if not names else [n for n in self.processes if n in names]
        ports = self.ports(port)
        return [
            {
                "name": name,
                "session": self.app,
                "cmd": instance_prefix(name, ports.get(name)) + self.processes[name],
                "shell": True,
                "cwd": self.root,
                "env": dict(self.env),
                "numprocesses": concurrency.get(name, 1),
                "redirect_output": list(REDIRECT_OUTPUT),
            }
            for name in wanted
        ]

    def check_types(self, names) -> None:
        """Refuse a process type the Procfile does not define, listing those it does."""
        for name in names:
            if name not in self.processes:
                known = ", ".join(self.processes)
                raise BadRequest(f"unknown process type {name!r} (known: {known})")

    def export_json(self, concurrency: dict[str, int] | None = None, names: list[str] | None = None,
                    port: int | None = None) -> str:
        """The jobs as a JSON list, ready for the bus's `load` command or the HTTP API."""
        return json.dumps(self.job_dicts(concurrency, names, port), indent=2) + "\n"

    def export_ini(self, concurrency: dict[str, int] | None = None, names: list[str] | None = None,
                   port: int | None = None) -> str:
        """The jobs as zsupd config sections, to include in or append to a zsupd config file.

        Each type gets `[process:<app>:<type>]` and, when the app has an environment,
        `[env:<app>:<type>]` (an empty env section would only be noise).
        """
        lines = [f"# exported by zsup from {self.path}"]
        for job in self.job_dicts(concurrency, names, port):
            section = f"{self.app}:{job['name']}"
            try:
                cmd = ini_command(job["cmd"])
            except BadRequest as exc:
                raise BadRequest(f"{self.app}.{job['name']}: {exc.message}") from None
            lines += [
                "",
                f"[process:{section}]",
                f"cmd = {cmd}",
                f"cwd = {ini_value(job['cwd'])}",
                "shell = true",
                f"numprocesses = {job['numprocesses']}",
                f"redirect_output = {', '.join(job['redirect_output'])}",
            ]
            if job["env"]:
                lines += ["", f"[env:{section}]"]
                lines += [f"{key} = {ini_value(value)}" for key, value in job["env"].items()]
        return "\n".join(lines) + "\n"


def parse_procfile(text: str, source: str = "<Procfile>", warn: Callable[[str], None] | None = None) -> dict[str, str]:
    """Parse Procfile text into {type: command}, in file order; `source` names it in messages.

    As honcho does, a line that is not `name: command` (or has no command) is skipped, with
    `warn("<source>:<line>: ...")` when warn is given; a file of only comments is an empty
    app. A name zsup cannot use as a job name (honcho accepts a leading '-') and a type given
    twice are errors: skipping them would silently drop or replace a process honcho runs.
    """
    processes: dict[str, str] = {}
    for lineno, line in enumerate(text.lstrip("\ufeff").split("\n"), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = LINE_RE.match(stripped)
        if not match or not match.group(2).strip():
            if warn:
                why = "no command" if match else "not 'name: command'"
                warn(f"{source}:{lineno}: {why}, line skipped: {stripped!r}")
            continue
        name, cmd = match.group(1), match.group(2).strip()
        if not NAME_RE.match(name):
            raise BadRequest(
                f"{source}:{lineno}: invalid process type {name!r} "
                "(letters, digits, '_' and '-', not starting with '-')"
            )
        if name in processes:
            raise BadRequest(f"{source}:{lineno}: duplicate process type {name!r}")
        processes[name] = cmd
    return processes


def instance_prefix(ptype: str, port: int | None) -> str:
    """The shell statements put before a type's command to give each instance its own
    name (`PS`, `HONCHO_PROCESS_NAME`: `web.2`) and, with a port, `PORT` (type base + N - 1).

    N is `ZSUP_INSTANCE`, the slot zsup's supervisor gives each kept process of a job
    (1, 2, ...; a restarted process takes the slot back), so scaling in zsupd keeps the
    numbering foreman and honcho use.
    """
    names = f"PS={ptype}.${{ZSUP_INSTANCE:-1}}; HONCHO_PROCESS_NAME=$PS; export PS HONCHO_PROCESS_NAME; "
    if port is None:
        return names
    return f"PORT=$(({port} + ${{ZSUP_INSTANCE:-1}} - 1)); export PORT; " + names


def strip_instance_prefix(cmd: str) -> str:
    """The command as the user wrote it, without what `instance_prefix` put before it."""
    match = PREFIX_RE.match(cmd)
    return cmd[match.end():] if match else cmd


def parse_concurrency(value: str) -> dict[str, int]:
    """'web=2,worker=1' -> {'web': 2, 'worker': 1}, the `-c/--concurrency` option.

    0 is allowed (the type is loaded but not started, as numprocesses = 0 means).
    """
    result: dict[str, int] = {}
    for part in (value or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, count = (s.strip() for s in part.partition("="))
        if not sep or not name or not NAME_RE.match(name):
            raise BadRequest(f"concurrency: bad entry {part!r} (expected process=number)")
        try:
            number = int(count)
        except ValueError:
            raise BadRequest(f"concurrency: bad entry {part!r} ({count!r} is not a whole number)") from None
        if number < 0:
            raise BadRequest(f"concurrency: bad entry {part!r} (the number must be >= 0)")
        if name in result:
            raise BadRequest(f"concurrency: bad entry {part!r} ({name!r} is given twice)")
        result[name] = number
    return result


def base_port(option: int | None, env: dict[str, str], os_env: dict[str, str] | None = None) -> int:
    """The app's base PORT: `-p/--port`, else PORT from the .env files, else from zsup's own
    environment, else 5000. A PORT that is not a port number is a BadRequest."""
    os_env = os.environ if os_env is None else os_env
    for value, where in ((option, "--port"), (env.get("PORT"), "PORT in the env file"),
                         (os_env.get("PORT"), "PORT in the environment"), (5000, "")):
        if value is None or value == "":
            continue
        try:
            number = int(value)
        except ValueError:
            raise BadRequest(f"{where}: port {value!r} is not a number") from None
        if not 1 <= number <= 65535:  # worded as every tool words a bad port (zsup/cli/options.py)
            raise BadRequest(f"{where}: port {number} is out of range (1-65535)")
        return number
    raise AssertionError("unreachable")


def app_name_for(name: str) -> str:
    """Make a folder name usable as a session name: other characters become '_'.

    A leading '-' is replaced too, since session names may not start with one.
    """
    name = APP_BAD_CHARS_RE.sub("_", name or "")
    if name.startswith("-"):
        name = "_" + name[1:]
    return name or "app"


def ini_command(value: str) -> str:
    """A command line as zsupd's config reader takes it: written as is (its quotes belong to
    the shell), so only what that reader would cut or strip is refused."""
    comment = value.lstrip().startswith("#") or " #" in value or "\t#" in value
    if "\n" in value or INI_LINE_BREAKS & set(value) or value != value.strip() or comment:
        raise BadRequest(f"cannot write the command {value!r} to an ini file (zsupd would read it differently); use --format json")
    return value


def ini_value(value: str) -> str:
    """Quote a value so that configobj reads it back unchanged.

    configobj has no escapes: a value with ',' would become a list, ' #' would start a comment,
    and edge spaces would be stripped, so such values are quoted with a quote character the
    value does not contain, or triple quotes (which also carry newlines) when it has both.
    """
    if INI_LINE_BREAKS & set(value):
        raise BadRequest(f"cannot write {value!r} to an ini file (line break other than \\n); export as JSON")
    edges = value[:1] + value[-1:]
    if value and not any(c.isspace() or c in "'\"" for c in edges) and not set(",#\n") & set(value):
        return value
    if "\n" not in value:
        if '"' not in value:
            return f'"{value}"'
        if "'" not in value:
            return f"'{value}'"
    if '"""' not in value:
        return f'"""{value}"""'
    if "'''" not in value:
        return f"'''{value}'''"
    raise BadRequest(f"cannot write {value!r} to an ini file (mixed quotes); export as JSON")
