"""Shell completion for zsupctl and zsup (issue 19): scripts generated from the parsers,
checked by the shells themselves."""

import os
import shutil
import subprocess

import pytest
from conftest import PYTHON, ROOT


def script(module, shell):
    proc = subprocess.run([PYTHON, "-m", module, "completion", shell], capture_output=True, text=True,
                          timeout=30, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout


def complete(path, tool, *words):
    """What bash's completion function for `tool` offers for the command line `tool WORDS`
    (the last word is the one being completed)."""
    line = " ".join([tool, *words])
    code = (f"source {path}\n"
            f"complete -p {tool}\n"
            f"COMP_WORDS=({line}); COMP_CWORD={len(words)}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n"
            f"_shtab_{tool.replace('-', '_')}\n"
            "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    first, *offered = proc.stdout.splitlines()
    assert first.startswith("complete ") and first.endswith(f" {tool}")
    return offered


@pytest.mark.parametrize("tool,module", [("zsupctl", "zsup.cli.zsupctl"), ("zsup", "zsup.cli.procfile_tool")])
def test_bash_completes_subcommands_and_options(tmp_path, tool, module):
    path = tmp_path / f"{tool}.bash"
    path.write_text(script(module, "bash"))
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True, timeout=30).returncode == 0
    if tool == "zsupctl":
        assert complete(path, tool, "sca") == ["scale"]
        assert "--rolling" in complete(path, tool, "restart", "--")
        assert "completion" in complete(path, tool, "co")
    else:
        assert complete(path, tool, "ex") == ["export"]
        assert "--keep-going" in complete(path, tool, "start", "--")
        assert set(complete(path, tool, "completion", "")) == {"bash", "zsh"}


@pytest.mark.parametrize("module", ["zsup.cli.zsupctl", "zsup.cli.procfile_tool"])
def test_zsh_script(tmp_path, module):
    text = script(module, "zsh")
    assert text.startswith("#compdef ")
    if shutil.which("zsh"):
        path = tmp_path / "_tool"
        path.write_text(text)
        assert subprocess.run(["zsh", "-n", str(path)], capture_output=True, timeout=30).returncode == 0


def test_an_unknown_shell_is_one_line(tmp_path):
    proc = subprocess.run([PYTHON, "-m", "zsup.cli.zsupctl", "completion", "fish"], capture_output=True,
                          text=True, timeout=30, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "invalid choice: 'fish'" in proc.stderr
