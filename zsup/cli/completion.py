"""Shell completion for zsupctl and zsup: `zsupctl completion bash|zsh` prints a script made
from the tool's own argparse parser by shtab, so completion never lags behind the options.

    source <(zsupctl completion bash)          # bash, this shell
    zsupctl completion zsh > ~/.zfunc/_zsupctl # zsh, with ~/.zfunc in $fpath (docs/zsupctl.md)
"""

from __future__ import annotations

import argparse
from typing import Callable

SHELLS = ("bash", "zsh")


def add_command(subparsers, help_epilog: str | None = None, **kwargs) -> argparse.ArgumentParser:
    """The `completion SHELL` subcommand; its `shell` argument is checked by argparse."""
    text = "print a shell completion script (bash or zsh) for this tool"
    p = subparsers.add_parser("completion", help=text, description=text, epilog=help_epilog, **kwargs)
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    return p


def script(build_parser: Callable[[], argparse.ArgumentParser], shell: str) -> str:
    """The completion script for `shell`, from a fresh parser (shtab reads it, changes nothing)."""
    import shtab  # only here: completion is not on any other command's path

    parser = build_parser()
    return shtab.complete(parser, shell=shell)
