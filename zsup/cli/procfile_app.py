"""The Procfile application the `zsup` tool works on: its root, its Procfile, its name.

Shared by the tool's local commands (zsup.cli.procfile_local) and those that talk to zsupd
(zsup.cli.procfile_bus); the options are those of zsup.cli.procfile_tool's parser.
"""

from __future__ import annotations

import argparse
import os
import sys

from zsup.services.procfile import Procfile, app_name_for, base_port


def app_root(args: argparse.Namespace) -> str:
    """-d, else the folder of -f, else the current folder."""
    if args.directory:
        return os.path.abspath(args.directory)
    if args.procfile:
        return os.path.dirname(os.path.abspath(args.procfile))
    return os.getcwd()


def procfile_path(args: argparse.Namespace) -> str:
    """-f as given (relative to the current folder), else `Procfile` in the application root."""
    return os.path.abspath(args.procfile) if args.procfile else os.path.join(app_root(args), "Procfile")


def app_name(args: argparse.Namespace, name: str | None) -> str:
    """The session name: NAME, '.' meaning the current folder's name, else the root's name.

    Commands that only talk to zsupd (scale, ps, unload) need no Procfile for this, so an app
    can be managed from anywhere by name.
    """
    if name == ".":
        return app_name_for(os.path.basename(os.getcwd().rstrip(os.sep)))
    if name:
        return app_name_for(name)
    return app_name_for(os.path.basename(app_root(args).rstrip(os.sep)))


def warn(message: str) -> None:
    """A line honcho would skip: skipped, and said on stderr so a typo does not go unseen."""
    print(f"zsup: warning: {message}", file=sys.stderr)


def load_procfile(args: argparse.Namespace, name: str | None = None) -> Procfile:
    root = args.directory and os.path.abspath(args.directory)
    return Procfile.load(procfile_path(args), root=root, env_files=args.env,
                         app_name=app_name(args, name) if name else None, warn=warn)


def app_port(args: argparse.Namespace, procfile: Procfile) -> int:
    """The base PORT: -p, else PORT from the env files, else from the environment, else 5000."""
    return base_port(getattr(args, "port", None), procfile.env)


def apply_options(jobs: list[dict], options: list[str] | None) -> list[dict]:
    """`-o TYPE.KEY=VALUE` (or `-o KEY=VALUE` for every type): job options beyond what a
    Procfile says, such as `-o web.ready=tcp:5000` or `-o restart=on-failure`. zsupd checks
    them as any job option (JobSpec.from_dict)."""
    from zsup.errors import BadRequest

    by_name = {job["name"]: job for job in jobs}
    for option in options or []:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise BadRequest(f"-o {option!r}: expected [TYPE.]KEY=VALUE")
        ptype, dot, key = key.rpartition(".")
        if dot and ptype not in by_name:
            raise BadRequest(f"-o {option!r}: no process type {ptype!r} in the Procfile")
        for job in [by_name[ptype]] if dot else jobs:
            job[key] = value
    return jobs

