"""gafferctl's older command names in zsupctl (docs/zsupctl.md), against a real zsupd."""

import json

from conftest import PYTHON, ROOT, wait_for
from test_zsupctl import zsupctl

JOB = {"name": "sleeper", "cmd": PYTHON, "args": [f"{ROOT}/etc/dummy.py"], "numprocesses": 2,
       "graceful_timeout": 2}


def test_old_names(zsupd_factory, tmp_path):
    d = zsupd_factory("")
    path = tmp_path / "job.json"
    path.write_text(json.dumps(JOB))
    assert "loaded default.sleeper" in zsupctl(d, "add_process", str(path)).stdout
    assert json.loads(zsupctl(d, "get_process", "sleeper").stdout)["numprocesses"] == 2
    assert zsupctl(d, "numprocesses", "sleeper").stdout.strip() == "2"
    wait_for(lambda: zsupctl(d, "running", "sleeper").stdout.strip() == "2", message="2 running")
    assert json.loads(zsupctl(d, "--json", "running", "sleeper").stdout) == {
        "job": "default.sleeper", "running": 2}

    path.write_text(json.dumps(dict(JOB, numprocesses=1)))
    assert "updated default.sleeper" in zsupctl(d, "update", str(path)).stdout
    assert zsupctl(d, "numprocesses", "sleeper").stdout.strip() == "1"
    wait_for(lambda: zsupctl(d, "running", "sleeper").stdout.strip() == "1", message="1 running")
    path.write_text(json.dumps(dict(JOB, name="nope")))
    bad = zsupctl(d, "update_process", str(path), check=False)
    assert bad.returncode == 1 and "nope" in bad.stderr
    path.write_text(json.dumps([JOB]))
    bad = zsupctl(d, "update", str(path), check=False)
    assert bad.returncode == 1 and "one job" in bad.stderr

    zsupctl(d, "del_process", "sleeper")
    gone = zsupctl(d, "running", "sleeper", check=False)
    assert gone.returncode == 1 and "sleeper" in gone.stderr
