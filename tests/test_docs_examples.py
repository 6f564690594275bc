"""Every ```sh example of README.md and docs/*.md runs, in order, against a real zsupd.

One test per Markdown file (docs/testing.md, "The docs runner"): a fresh zsupd and gateway
from etc/zsup.ini, the file's blocks as one story. `pytest tests/test_docs_examples.py -k
zsupctl` runs one file's examples.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import wait_for
from docs_runner import ROOT, DocsError, Story, extract, markdown_files

FILES = markdown_files()
#: the files with at least one example to run (the others hold only ini, JSON, diagrams...)
RUNNABLE = [f for f in FILES if any(b.skip is None for b in extract(os.path.join(ROOT, f)))]
TOOLS = ("bash", "curl", "jq", "openssl", "tar")  # what the examples use besides zsup's own


def _need_tools():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:  # `make test` installs them (its docs-tools target), as .ci/run does
        pytest.fail(f"the docs' examples need {', '.join(missing)} (apt-get install {' '.join(missing)})")


@pytest.mark.timeout(150)
@pytest.mark.parametrize("name", RUNNABLE)
def test_examples_run(name, tmp_path):
    blocks = [b for b in extract(os.path.join(ROOT, name)) if b.skip is None]
    _need_tools()
    story = Story(tmp_path)
    story.prepare()
    failure = None
    try:
        story.start()
        for block in blocks:
            story.run(block)
    except DocsError as e:
        failure = str(e)
    finally:
        story.stop()
        print("\n".join(f"{where}: {seconds:.1f} s" for where, seconds in story.times))
    if failure:  # the file, line, block and output say it all: no traceback
        pytest.fail(failure, pytrace=False)


def test_one_convention_for_shell_examples():
    """Shell examples are ```sh blocks of commands as typed: no ```bash, ```console or
    ```shell, no unlabeled block of `$ command` lines the runner would not see, no prompts."""
    wrong = []
    for name in FILES:
        with open(os.path.join(ROOT, name), encoding="utf-8") as f:
            lines = f.read().split("\n")
        inside = None
        for n, line in enumerate(lines, 1):
            if line.startswith("```"):
                if inside is None:
                    inside = (n, line[3:].strip())
                    if inside[1] in ("bash", "console", "shell", "shell-session", "zsh"):
                        wrong.append(f"{name}:{n}: ```{inside[1]} (use ```sh)")
                else:
                    inside = None
            elif inside is not None and inside[1] in ("", "text") and re.match(r"\$ \w", line):
                wrong.append(f"{name}:{n}: a `$ command` line in a ```{inside[1]} block (use ```sh)")
            elif inside is not None and inside[1] == "sh" and re.match(r"\$ \w", line):
                wrong.append(f"{name}:{n}: a `$ ` prompt in a ```sh block (commands as typed; output in ```text)")
    assert not wrong, "\n".join(wrong)


def test_markers_are_checked(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("<!-- docs: skip -->\n```sh\ntrue\n```\n")
    with pytest.raises(DocsError, match="needs a reason"):
        extract(str(doc))
    doc.write_text("<!-- docs: expct x -->\n```sh\ntrue\n```\n")
    with pytest.raises(DocsError, match="unknown docs marker"):
        extract(str(doc))


def test_a_failing_or_hanging_block_fails_naming_its_line(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("text\n\n```sh\necho one\nfalse\necho never\n```\n\n<!-- docs: timeout 1 -->\n"
                   "```sh\nsleep 30\n```\n\n<!-- docs: runs-for 0.5 -->\n<!-- docs: expect ^tick -->\n"
                   "```sh\nwhile :; do echo tick; sleep 0.1; done\n```\n"
                   "<!-- docs: expect ^nope$ -->\n```sh\necho :5000\n```\n")
    failing, hanging, bounded, expecting = extract(str(doc))
    story = Story(tmp_path / "story")
    os.makedirs(story.dir)
    story.prepare()
    with pytest.raises(DocsError, match=r"x.md:3: exit status 1 .*\n(.|\n)*--- output ---\none\n$"):
        story.run(failing)
    with pytest.raises(DocsError, match=r"x.md:10: still running after 1.0 s"):
        story.run(hanging)
    assert "tick" in story.run(bounded)
    with pytest.raises(DocsError, match=rf"does not match(.|\n)*:{story.ports[5000]}"):
        story.run(expecting)
    story.stop()


def _make(tmp_path, *args):
    return subprocess.run(["make", "-s", "--no-print-directory", "-C", str(tmp_path), "-f",
                           os.path.join(ROOT, "Makefile"), *args], capture_output=True, text=True, timeout=90)


def _start_zsupd(tmp_path, state_dir):
    """zsupd as `make run` starts it (a pidfile in its state dir), with one job."""
    os.makedirs(state_dir, mode=0o700)
    config = tmp_path / "zsup.ini"
    config.write_text("[process:sleeper]\ncmd = sleep 1000\n")
    pidfile = os.path.join(state_dir, "zsupd.pid")
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "zsupd"), "-c", str(config),
                             "--state-dir", state_dir, "--pidfile", pidfile],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(pidfile) and os.path.getsize(pidfile), message="zsupd's pidfile")
    return proc


def test_make_stop_stops_the_zsupd_of_make_run(tmp_path):
    state_dir = str(tmp_path / "run")
    proc = _start_zsupd(tmp_path, state_dir)
    try:
        done = _make(tmp_path, "stop", f"STATE_DIR={state_dir}")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines() == [f"zsupd (pid {proc.pid}) is stopping", "zsupd stopped"]
        assert proc.poll() == 0
        again = _make(tmp_path, "stop", f"STATE_DIR={state_dir}")
        assert again.returncode == 0 and again.stdout.startswith("no zsupd from make run is running")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_make_clean_forgets_run_time_state_and_says_so(tmp_path):
    """`make clean` removes .run (make run's state dir) with the virtualenvs, and says what it
    means; it refuses while that zsupd runs. Run in a scratch folder, never in the checkout."""
    state_dir = str(tmp_path / ".run")
    proc = _start_zsupd(tmp_path, state_dir)
    try:
        refused = _make(tmp_path, "clean")
        assert refused.returncode != 0 and f"zsupd (pid {proc.pid}) from make run is running" in refused.stdout
        assert os.path.isdir(state_dir)
    finally:
        proc.terminate()
        proc.wait(30)
    os.makedirs(tmp_path / ".venv")
    done = _make(tmp_path, "clean")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not os.path.exists(state_dir) and not os.path.exists(tmp_path / ".venv")
    assert "run-time state is forgotten" in done.stdout
