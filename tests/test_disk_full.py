"""A real zsupd whose log folder is on a tiny tmpfs that fills up, frees, fills again."""

import os
import subprocess

import pytest
from conftest import wait_for

from zsup.bus.client import Subscriber

PAGE = 4096


@pytest.fixture
def tiny_disk(tmp_path):
    """A 128 KiB tmpfs (needs the right to mount: root, or skipped)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk):
    """Take every free page of the disk, one file per page (so one can be given back)."""
    n = max([int(name.split(".")[1]) for name in os.listdir(disk) if name.startswith("filler.")], default=0)
    while True:
        n += 1
        try:
            with open(disk / f"filler.{n}", "wb") as f:
                f.write(b"x" * PAGE)
        except OSError:
            os.unlink(disk / f"filler.{n}")
            return


def free(disk, pages=None):
    for name in sorted(os.listdir(disk))[:pages]:
        if name.startswith("filler."):
            os.unlink(disk / name)


def test_disk_full_is_one_error_line_per_episode_and_an_event_when_it_ends(zsupd_factory, tiny_disk):
    d = zsupd_factory(f"[zsup]\nlog_dir = {tiny_disk}/logs\nlog_max_bytes = 0\n"
                      "[process:talk]\ncmd = sh -c 'i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.01; done'\n")
    path = d.call("log_paths", name="talk", label="stdout")["paths"]["stdout"][0]
    wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 0, message="a first line on disk")
    sub = Subscriber(d.pub, ["sys."])
    events = []

    def seen(topic, wait=0.05):
        event = sub.recv(timeout=wait)
        if event is not None:
            events.append(event)
        return topic in [e.topic for e in events]

    try:
        wait_for(lambda: sub.recv(timeout=0.05) is None, message="the subscription in place")
        fill(tiny_disk)
        wait_for(lambda: "log files:" in d.log(), message="the disk trouble in zsupd's log")
        # Space comes and goes (a neighbour rotating its own logs): still the same episode.
        for _ in range(3):
            size = os.path.getsize(path)
            free(tiny_disk, 1)
            wait_for(lambda: seen("") or os.path.getsize(path) > size, message="a write that worked")
            fill(tiny_disk)
            sizes = []
            wait_for(lambda: seen("", wait=0.4) or sizes.append(os.path.getsize(path)) or sizes[-4:] == [sizes[-1]] * 4,
                     message="writes failing again")
        free(tiny_disk)  # for good: the episode ends after a quiet spell
        wait_for(lambda: seen("sys.log_resumed"), timeout=20, message="sys.log_resumed")
    finally:
        sub.close()
    topics = [e.topic for e in events]
    assert topics == ["sys.log_error", "sys.log_resumed"], topics
    text = open(d.log_path, errors="replace").read()
    errors = [line for line in text.splitlines() if "log files:" in line and "ERROR" in line]
    assert len(errors) == 1, errors
    assert len([line for line in text.splitlines() if "are written again" in line]) == 1
    resumed = [e for e in events if e.topic == "sys.log_resumed"][0]
    assert "lines dropped meanwhile" in resumed.msg["message"]
    size = os.path.getsize(path)
    wait_for(lambda: os.path.getsize(path) > size, message="lines written after the episode")
