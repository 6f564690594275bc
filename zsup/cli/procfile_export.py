"""`zsup export` and `zsup check`: the application written out for other supervisors, and
checked without running anything.

ini and json are zsupd's own formats (one job per process type, scaled by zsupd, instance
numbers and PORTs from the command's instance prefix). The service formats follow foreman:
every process *instance* (`web.1`, `web.2`) becomes its own service with its own PORT,
written from template files with `string.Template` (`$name` / `${name}`, `$$` for `$`).
zsup's templates are in zsup/cli/export_templates/<format>/; `--template DIR` takes a file
`DIR/<file name>` first, so a user overrides one file and keeps the others. The variables
each template gets are listed in docs/procfile.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import string
from importlib import resources
from typing import TextIO
from xml.sax.saxutils import escape as xml_escape

from zsup.cli.procfile_app import app_port, load_procfile
from zsup.errors import BadRequest, ZsupError
from zsup.services.procfile import Procfile, parse_concurrency

EXPORT_FORMATS = ("ini", "json", "systemd", "supervisord", "runit", "upstart", "launchd")


class Templates:
    """Template files of one format: `--template DIR/<name>` first, else zsup's own."""

    def __init__(self, fmt: str, override: str | None):
        self.fmt = fmt
        self.override = override
        if override and not os.path.isdir(override):
            raise BadRequest(f"--template {override}: no such directory")

    def render(self, name: str, **values: object) -> str:
        if self.override and os.path.isfile(os.path.join(self.override, name)):
            path = os.path.join(self.override, name)
            with open(path, encoding="utf-8") as f:
                text = f.read()
        else:
            path = f"zsup/cli/export_templates/{self.fmt}/{name}"
            text = resources.files("zsup.cli").joinpath("export_templates", self.fmt, name).read_text("utf-8")
        try:
            return string.Template(text).substitute({k: str(v) for k, v in values.items()})
        except KeyError as exc:
            raise BadRequest(f"template {path}: unknown variable ${exc.args[0]}") from None
        except ValueError as exc:
            raise BadRequest(f"template {path}: {exc}") from None


class Instance:
    """One process of the export: type, number, name, PORT, command and environment."""

    def __init__(self, procfile: Procfile, ptype: str, number: int, port: int):
        self.type = ptype
        self.number = number
        self.name = f"{ptype}.{number}"
        self.port = port
        self.command = procfile.processes[ptype]
        self.env = {**procfile.env, "PORT": str(port), "PS": self.name, "HONCHO_PROCESS_NAME": self.name}


def instances(procfile: Procfile, concurrency: dict[str, int], base: int) -> list[Instance]:
    """Every instance, in Procfile order: foreman's numbering and ports."""
    procfile.check_types(concurrency)
    ports = procfile.ports(base)
    return [Instance(procfile, ptype, n, ports[ptype] + n - 1)
            for ptype in procfile.processes for n in range(1, concurrency.get(ptype, 1) + 1)]


def systemd_quote(value: str) -> str:
    """One ExecStart= argument: double-quoted, with systemd's own `$` and `%` doubled."""
    value = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%")
    return f'"{value}"'


def systemd_env_file(env: dict[str, str]) -> str:
    """An EnvironmentFile= for systemd: KEY="value", with \\ " $ and ` escaped (systemd
    expands $VAR in these files). It has no escape for a newline: such a value is refused."""
    lines = ["# exported by zsup"]
    for key, value in env.items():
        if "\n" in value or "\r" in value:
            raise BadRequest(f"cannot write {key} to a systemd EnvironmentFile (its value has a line break)")
        for char in '\\"$`':
            value = value.replace(char, "\\" + char)
        lines.append(f'{key}="{value}"')
    return "\n".join(lines) + "\n"


def supervisord_value(value: str) -> str:
    """A value in supervisord's `environment=`: quoted, `%` doubled (its own expansions).

    supervisord splits that line with a non-POSIX shlex (no escapes) and then strips every
    quote character from both ends of a value, so a value with both quote characters, or
    starting or ending with one, cannot be written."""
    if '"' not in value and "'" not in value[:1] + value[-1:]:
        quoted = f'"{value}"'
    elif "'" not in value and '"' not in value[:1] + value[-1:]:
        quoted = f"'{value}'"
    else:
        raise BadRequest(f"cannot write {value!r} to supervisord's environment= (its quoting cannot carry it)")
    return quoted.replace("%", "%%")


def export_services(procfile: Procfile, fmt: str, insts: list[Instance], args: argparse.Namespace) -> dict[str, str]:
    """{relative file name: text} of a service format."""
    t = Templates(fmt, args.template)
    app, root, user = procfile.app, procfile.root, args.user
    log = args.log or f"/var/log/{app}"
    files: dict[str, str] = {}
    if fmt == "systemd":
        units = []
        files[f"{app}.env"] = systemd_env_file(procfile.env)
        for i in insts:
            unit = f"{app}-{i.type}.{i.number}"
            units.append(f"{unit}.service")
            files[f"{unit}.service"] = t.render(
                "process.service", app=app, process_name=i.name, type=i.type, number=i.number, port=i.port,
                root=root, unit=unit, env_file=os.path.join(os.path.abspath(args.out), f"{app}.env"),
                exec_start="/bin/sh -c " + systemd_quote(i.command), user_line=f"User={user}\n" if user else "")
        files[f"{app}.target"] = t.render("app.target", app=app, units=" ".join(units))
    elif fmt == "supervisord":
        programs, names = [], []
        for i in insts:
            program = f"{app}-{i.type}-{i.number}"
            names.append(program)
            environment = ",".join(f"{k}={supervisord_value(v)}" for k, v in i.env.items())
            programs.append(t.render(
                "program.conf", app=app, program=program, process_name=f"{i.type}-{i.number}", type=i.type,
                number=i.number, port=i.port, root=root, log=log, environment=environment,
                command=("/bin/sh -c " + shlex.quote(i.command)).replace("%", "%%"),
                user_line=f"user={user}\n" if user else ""))
        files[f"{app}.conf"] = t.render("app.conf", app=app, programs="".join(programs),
                                        program_names=",".join(names))
    elif fmt == "runit":
        for i in insts:
            service = f"{app}-{i.type}-{i.number}"
            env_dir = os.path.join(os.path.abspath(args.out), service, "env")
            for key, value in i.env.items():
                files[f"{service}/env/{key}"] = value + "\n"
            values = dict(app=app, process_name=i.name, type=i.type, number=i.number, port=i.port,
                          root_sh=shlex.quote(root), env_dir_sh=shlex.quote(env_dir),
                          command_sh=shlex.quote(i.command), log_sh=shlex.quote(os.path.join(log, service)),
                          chpst_user=f"-u {shlex.quote(user)} " if user else "")
            files[f"{service}/run"] = t.render("run", **values)
            files[f"{service}/log/run"] = t.render("log_run", **values)
    elif fmt == "upstart":
        files[f"{app}.conf"] = t.render("app.conf", app=app)
        for ptype in dict.fromkeys(i.type for i in insts):
            files[f"{app}-{ptype}.conf"] = t.render("process_master.conf", app=app, type=ptype)
        for i in insts:
            env_lines = "\n".join(f"env {k}={shlex.quote(v)}" for k, v in i.env.items())
            files[f"{app}-{i.type}-{i.number}.conf"] = t.render(
                "process.conf", app=app, process_name=i.name, type=i.type, number=i.number, port=i.port,
                root=root, log=log, env_lines=env_lines, command_sh=shlex.quote(i.command),
                user_line=f"setuid {user}\n" if user else "")
    elif fmt == "launchd":
        for i in insts:
            label = f"{app}-{i.type}-{i.number}"
            env_xml = "\n".join(f"    <key>{xml_escape(k)}</key>\n    <string>{xml_escape(v)}</string>"
                                for k, v in i.env.items())
            user_xml = f"  <key>UserName</key>\n  <string>{xml_escape(user)}</string>\n" if user else ""
            files[f"{label}.plist"] = t.render(
                "process.plist", app=app, label=label, process_name=i.name, type=i.type, number=i.number,
                port=i.port, command_xml=xml_escape(i.command), env_xml=env_xml, root_xml=xml_escape(root),
                log_xml=xml_escape(log), user_xml=user_xml)
    return files


def write_files(folder: str, files: dict[str, str], out: TextIO) -> None:
    """Write every file under folder (created if needed); `run` scripts are executable."""
    try:
        for name, text in files.items():
            path = os.path.join(folder, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            if os.path.basename(name) == "run":
                os.chmod(path, 0o755)
    except OSError as exc:
        raise BadRequest(f"{exc.filename or folder}: {exc.strerror or exc}") from None
    for name in files:
        print(f"wrote {os.path.join(folder, name)}", file=out)


def check_ini_reads_back(text: str, jobs: list[dict]) -> None:
    """Refuse an ini export that zsupd would read as different jobs.

    zsupd's config reader has its own rules (a ` #` in a value starts a comment, `cmd` keeps
    its quotes, values are single lines, env names are upper-cased), so a value with those
    characters may not survive the trip. Reading the export back the way zsupd will, before
    anyone relies on it, turns a silently different job into a clear error.
    """
    from zsup.daemon.config import parse_config

    try:
        config = parse_config(text, "<export>")
    except ZsupError as exc:
        raise BadRequest(f"cannot export as ini ({exc.message}); use --format json") from None
    read_back = {(job["session"], job["name"]): job for job in config.job_dicts()}
    for job in jobs:
        got = read_back.get((job["session"], job["name"]), {})
        for key, value in job.items():
            if got.get(key) != value:
                what = f"{key} {value!r}" if key != "env" else "its environment"
                raise BadRequest(f"cannot export {job['session']}.{job['name']} as ini: zsupd would not read "
                                 f"{what} back unchanged; use --format json")


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    """Write the jobs as zsupd config sections or JSON jobs (to --out FILE or stdout), or
    service files for another supervisor (into the folder --out)."""
    procfile = load_procfile(args, args.name)
    concurrency = parse_concurrency(args.concurrency)
    port = app_port(args, procfile)
    if args.format not in ("ini", "json"):
        if not args.out:
            raise BadRequest(f"export --format {args.format}: give the folder to write into with --out")
        write_files(args.out, export_services(procfile, args.format, instances(procfile, concurrency, port), args),
                    out)
        return 0
    if args.format == "json":
        text = procfile.export_json(concurrency, port=port)
    else:
        text = procfile.export_ini(concurrency, port=port)
        check_ini_reads_back(text, procfile.job_dicts(concurrency, port=port))
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise BadRequest(f"{args.out}: {exc.strerror or exc}") from None
    else:
        out.write(text)
    return 0


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    """honcho's `check`: read the Procfile and env files (warnings on stderr) and print what
    `zsup start` would run: each instance with its PORT, then the environment's names."""
    procfile = load_procfile(args)
    concurrency = parse_concurrency(args.concurrency)
    insts = instances(procfile, concurrency, app_port(args, procfile))
    print(f"Valid Procfile: {procfile.path} (app {procfile.app}, root {procfile.root})", file=out)
    if not procfile.processes:
        print("No process types defined: nothing would run.", file=out)
        return 0
    width = max(len(i.name) for i in insts) if insts else 0
    for i in insts:
        print(f"  {i.name.ljust(width)}  PORT={i.port}  {i.command}", file=out)
    for ptype in procfile.processes:
        if concurrency.get(ptype, 1) == 0:
            print(f"  {ptype} (0 processes: not started)", file=out)
    names = ", ".join(procfile.env) or "(none)"
    print(f"Environment from env files: {names}", file=out)
    return 0
