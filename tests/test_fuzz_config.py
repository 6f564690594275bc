"""Fuzzed config files: every file zsupd can be given is either accepted or refused with one
line (`file[:line]: [section] key: reason`), never a traceback.

The files are built from the config's own vocabulary (sections, keys of [zsup], [endpoint:*]
and [process:*]) with hostile values, so most examples reach the value checks instead of
stopping at the first unknown key; raw text and raw bytes cover the parser itself. The run is
derandomized (the same examples on every machine) and bounded in examples.
"""

import json
import os
import subprocess

import pytest
from conftest import PYTHON, ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zsup.core.jobspec import JobSpec
from zsup.daemon.config import JOB_KEYS, load_config
from zsup.daemon.config_spec import ENDPOINT_SPEC, SETTINGS_SPEC
from zsup.errors import ZsupError

FUZZ = settings(derandomize=True, deadline=None, max_examples=300, database=None,
                suppress_health_check=list(HealthCheck))

SECTIONS = ["zsup", "webhooks", "process:web", "process:app:web", "env:web", "env:app.prod",
            "endpoint:main", "process:a.b", "gaffer", "plugin:x", "process:", "process:web:x:y", "unknown",
            " zsup ", "ZSUP", "process:web ", "[process:web]", "env:nope"]
KEYS = sorted(set(JOB_KEYS) | set(SETTINGS_SPEC) | set(ENDPOINT_SPEC)) + [
    "name", "session", "env", "", " ", "x=y", "proc.default.web.exit", "a b", "PATH", "\u00e9"]
VALUES = st.one_of(
    st.sampled_from(["", "0", "-1", "1", "3", "1024", "99999999999999999999", "1e309", "nan", "inf", "-inf",
                     "true", "false", "yes", "maybe", "10M", "-5K", "1.5G", "0x10", "1_000", "\x00",
                     "a\x00b", "'''", '"""', "''' \"\"\"", "'", '"', "#", ";", "a ; b", "a # b",
                     "~", "~nobody/x", "/", "/nonexistent/dir", ".", "..", "./x", "ipc://", "tcp://*:0",
                     "tcp://0.0.0.0:5555", "http://", "http://x", "ftp://x", "127.0.0.1:99999",
                     "unix:", "unix:/tmp/x", "[::1]:80", "TERM", "SIGKILL", "99", "-9", "kill",
                     "a, b", "main", "nobody", "root", "65536", "-2147483649", "stdout", "text",
                     "json", "daily", "sh -c 'echo $$'", "${HOME}", "%(x)s", "\u202e"]),
    st.text(st.characters(exclude_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), max_size=40),
    st.integers().map(str),
    st.floats().map(repr),
)


def rarely(draw, common, rare, one_in: int = 8):
    # hypothesis leans to small draws: the rare branch is the highest number
    return draw(rare) if draw(st.integers(0, one_in - 1)) == one_in - 1 else draw(common)


@st.composite
def config_texts(draw) -> str:
    """Mostly well-formed files of known sections and keys with hostile values; now and then
    a strange section, key or line."""
    lines = []
    sections = draw(st.lists(st.sampled_from(SECTIONS[:7]), max_size=4, unique=True))
    for section in sections:
        lines.append(f"[{rarely(draw, st.just(section), st.sampled_from(SECTIONS) | st.text(max_size=12))}]")
        pool = {"process": JOB_KEYS, "zsup": tuple(SETTINGS_SPEC), "gaffer": tuple(SETTINGS_SPEC),
                "endpoint": tuple(ENDPOINT_SPEC)}.get(section.partition(":")[0], ("A", "PATH", "web"))
        keys = draw(st.lists(st.sampled_from(sorted(pool)), max_size=5, unique=True))
        if section.startswith("process:") and "cmd" not in keys and draw(st.integers(0, 3)) < 3:
            keys.insert(0, "cmd")
        for key in keys:
            key = rarely(draw, st.just(key), st.sampled_from(KEYS[-10:]) | st.text(max_size=8))
            value = "sleep 1" if key == "cmd" and draw(st.booleans()) else draw(VALUES)
            lines.append(f"{key} = {value}")
        if draw(st.integers(0, 7)) == 7:
            lines.append(draw(st.sampled_from(["; comment", "# comment", "garbage", "[[sub]]", "= x",
                                               "key", "[", "]", "\t", "\ufeff"])))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))


def check_one_line(path: str, state_dir: str) -> None:
    """The contract of loading: a DaemonConfig, or a ZsupError whose message is one line
    naming the file. Anything else (another exception) fails the test with its traceback."""
    try:
        config = load_config(path, {"state_dir": state_dir})
    except ZsupError as exc:
        assert exc.message and "\n" not in exc.message and "\r" not in exc.message, repr(exc.message)
        assert exc.message.startswith(path), repr(exc.message)
        return
    # a job accepted from the file is accepted in its JSON form too (what `load`, the store
    # and a restart of zsupd read back): the same checks on both sides
    for job in config.job_dicts():
        assert JobSpec.from_dict(json.loads(json.dumps(job))).to_dict() == job


def write(tmp_path, data: bytes) -> str:
    path = str(tmp_path / "zsup.ini")
    with open(path, "wb") as f:
        f.write(data)
    return path


@FUZZ
@given(text=config_texts())
def test_structured_configs_load_or_give_one_line(tmp_path, text):
    # one file, rewritten for each example (hypothesis runs the fixture once per test)
    check_one_line(write(tmp_path, text.encode("utf-8", "surrogatepass")), str(tmp_path / "state"))


@settings(FUZZ, max_examples=150)
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_raw_bytes_load_or_give_one_line(tmp_path, data):
    check_one_line(write(tmp_path, data), str(tmp_path / "state"))


@pytest.mark.parametrize("text", [
    b"[process:web]\ncmd = sleep 1\nnumprocesses = 1e309\n",
    b"[zsup]\nring_size = nan\n",
    b"[process:web]\ncmd = a\x00b\n",
    b"[env:web]\nA\x00 = c\n[process:web]\ncmd = x\n",
    b"\xff\xfe[",
], ids=["huge-float", "nan", "nul-in-cmd", "bad-env-name", "not-utf8"])
def test_zsupd_refuses_a_bad_file_in_one_line_and_exit_2(tmp_path, text):
    """The same contract through the real program: one line on stderr, exit 2, no traceback."""
    path = write(tmp_path, text)
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([PYTHON, "-m", "zsup.cli.zsupd", "-c", path, "--state-dir", str(tmp_path / "state")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # a refusal comes within a second; a zsupd still running after this started
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.communicate(timeout=20)
        raise AssertionError(f"zsupd accepted {text!r} and started") from None
    assert proc.returncode == 2, (text, proc.returncode, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
