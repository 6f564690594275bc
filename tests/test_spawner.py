"""Spawning without setpriv (zsup/core/spawner.py and its C part): the program runs
directly, as the caller's child, with its death signal armed before it runs."""

import json
import os
import subprocess
import textwrap

import psutil
import pytest
from conftest import PYTHON, ROOT, alive, kill_tree, readline_within, wait_for

from zsup.core import spawner

needs_c = pytest.mark.skipif(not spawner.available(), reason="zsup/core/_spawn.c is not built")

# a threaded process (as zsupd is) spawns, reports, and waits to be SIGKILLed
SPAWNING_PROCESS = textwrap.dedent(f"""
    import json, os, signal, sys, threading, time
    sys.path.insert(0, {ROOT!r})
    from zsup.core import spawner
    threading.Thread(target=time.sleep, args=(300,), daemon=True).start()
    env = {{"PATH": os.defpath}}
    r, w = os.pipe2(os.O_CLOEXEC)
    out = {{}}
    out["child"] = spawner.spawn("/bin/sh", ["sh", "-c", "echo $$ $PPID; exec sleep 300"],
                                 env, None, (spawner.STDIN_NULL, w, spawner.SAME_AS_STDOUT), pdeathsig=signal.SIGKILL)
    os.close(w)
    out["said"] = os.read(r, 100).decode().split()
    for name, args in (("missing", ("/nonexistent/prog", ["prog"], env, None)),
                       ("cwd", ("/bin/sh", ["sh"], env, "/nonexistent/dir")),
                       ("env", ("/bin/sh", ["sh"], {{"A=B": "x"}}, None))):
        try:
            spawner.spawn(*args, (spawner.STDIN_NULL, spawner.INHERIT, spawner.INHERIT))
            out[name] = "started"
        except OSError as exc:
            out[name] = [exc.errno, exc.strerror]
    me = os.getpid()
    out["kids"] = sorted(int(p) for t in os.listdir(f"/proc/{{me}}/task")
                         for p in open(f"/proc/{{me}}/task/{{t}}/children").read().split())
    print(json.dumps(out), flush=True)
    time.sleep(300)
""")


@needs_c
def test_spawned_child_runs_directly_and_dies_with_its_parent():
    proc = subprocess.Popen([PYTHON, "-c", SPAWNING_PROCESS], stdout=subprocess.PIPE, text=True)
    out = {}
    try:
        out = json.loads(readline_within(proc.stdout, message="the spawning process's report"))
        child = out["child"]
        assert out["said"] == [str(child), str(proc.pid)]
        assert psutil.Process(child).ppid() == proc.pid
        assert os.getpgid(child) == child
        wait_for(lambda: psutil.Process(child).cmdline() == ["sleep", "300"], message="the shell to exec sleep")
        # nothing else leaked in (sleep opens its locale for a moment as it starts: waited out)
        wait_for(lambda: sorted(os.listdir(f"/proc/{child}/fd")) == ["0", "1", "2"], message="fds 0, 1, 2 only")
        # a failed step is an OSError with its errno; the failed child is reaped, not a zombie
        assert out["missing"] == [2, "No such file or directory"]
        assert out["cwd"] == [2, "chdir: No such file or directory"]
        assert out["env"][0] == 22
        assert out["kids"] == [child]
        proc.kill()
        proc.wait(10)
        wait_for(lambda: not alive(child), message="the child to die with its parent")
    finally:
        proc.kill()
        proc.wait(10)
        kill_tree([out["child"]] if out.get("child") else [])


@needs_c
def test_zsupd_children_run_their_program_directly(zsupd_factory, tmp_path):
    script = tmp_path / "bad-interpreter"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    d = zsupd_factory("[process:web]\ncmd = sh -c 'echo $PPID; exec sleep 300'\nnumprocesses = 2\n")
    pids = wait_for(lambda: len(d.call("pids", name="web")) == 2 and d.call("pids", name="web"))
    for pid in pids:
        line = wait_for(lambda: d.call("read_output", pid=pid)["lines"], message="the child's line")
        assert int(line[0]["data"]) == d.proc.pid
    # an exec that fails in the child is the same clear error as before
    d.call("load", config={"name": "bad", "cmd": str(script), "numprocesses": 0})
    with pytest.raises(Exception, match="cannot execute .*No such file or directory"):
        d.call("commit", name="bad")
    assert d.stop() == 0


@needs_c
def test_limits_and_passed_fds_are_set_before_the_program_runs():
    import resource
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    r, w = os.pipe2(os.O_CLOEXEC)
    child = None
    try:
        # the shell reports what it was started with, then becomes sleep
        script = ("ulimit -n; ulimit -Hn; umask; cat /proc/self/oom_score_adj; "
                  "cut -d' ' -f19 /proc/$$/stat; readlink /proc/$$/fd/3; exec sleep 300")
        child = spawner.spawn("/bin/sh", ["sh", "-c", script], {"PATH": os.defpath}, None,
                              (spawner.STDIN_NULL, w, spawner.SAME_AS_STDOUT),
                              umask=0o027, nice=7, oom_score_adj=123,
                              limits=[(resource.RLIMIT_NOFILE, 100, 200)], fds=[(listener.fileno(), 3)])
        os.close(w)
        w = -1
        out = b""
        while out.count(b"\n") < 6:
            chunk = os.read(r, 1000)
            if not chunk:
                break
            out += chunk
        lines = out.decode().split()
        assert lines[:5] == ["100", "200", "0027", "123", "7"]
        assert lines[5].startswith("socket:")
        wait_for(lambda: psutil.Process(child).cmdline() == ["sleep", "300"], message="the shell to exec sleep")
        wait_for(lambda: sorted(os.listdir(f"/proc/{child}/fd")) == ["0", "1", "2", "3"], message="fds 0-3 only")
        with open(f"/proc/{child}/limits") as f:
            assert any(line.startswith("Max open files") and line.split()[3:5] == ["100", "200"] for line in f)
    finally:
        listener.close()
        os.close(r)
        if w >= 0:
            os.close(w)
        if child:
            kill_tree([child])
            os.waitpid(child, 0)


@needs_c
def test_a_limit_that_cannot_be_set_is_a_clear_error():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with pytest.raises(OSError) as info:
        spawner.spawn("/bin/true", ["true"], {}, None, (spawner.STDIN_NULL, spawner.INHERIT, spawner.INHERIT),
                      limits=[(resource.RLIMIT_NOFILE, 10, 5)])  # soft above hard: EINVAL
    assert info.value.errno == 22 and info.value.strerror.startswith("limits:")
    with pytest.raises(ValueError):
        spawner.spawn("/bin/true", ["true"], {}, None, (spawner.STDIN_NULL, spawner.INHERIT, spawner.INHERIT),
                      fds=[(0, 1)])


def test_without_the_c_part_children_go_through_setpriv_and_still_die_with_zsup():
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {ROOT!r})
        from zsup.core import spawner
        spawner._spawn = None  # as if it had not been built
        from zsup.core.manager import Manager
        m = Manager(); m.start()
        m.load({{"name": "s", "cmd": "sleep", "args": ["300"], "numprocesses": 2}})
        print(" ".join(str(m.get_process(p)["os_pid"]) for p in m.pids()), flush=True)
        time.sleep(300)
    """)
    sup = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = []
    try:
        pids = [int(p) for p in readline_within(sup.stdout, message="the child pids").split()]
        assert len(pids) == 2
        # setpriv first, then the program: the death signal is armed once sleep runs
        wait_for(lambda: all(psutil.Process(p).cmdline() == ["sleep", "300"] for p in pids))
        sup.kill()
        sup.wait(10)
        wait_for(lambda: not any(alive(p) for p in pids), message="children to die with their supervisor")
    finally:
        sup.kill()
        sup.wait(10)
        kill_tree(pids)


# spawns in a fresh process, so that the fds its first spawn reserves are known
MANY_SPAWNS = textwrap.dedent(f"""
    import json, os, sys
    sys.path.insert(0, {ROOT!r})
    from zsup.core import spawner

    def fds():
        return {{int(fd): os.readlink(f"/proc/self/fd/{{fd}}") for fd in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{{fd}}")}}

    def run(script, stdio_of):
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = spawner.spawn("/bin/sh", ["sh", "-c", script], {{}}, None, stdio_of(w))
        os.close(w)
        said = b""
        while chunk := os.read(r, 100):  # returns b"" only once no copy of w is left anywhere
            said += chunk
        os.close(r)
        os.waitpid(pid, 0)
        return said.decode()

    keep = [os.pipe2(os.O_CLOEXEC) for _ in range(100)]  # a big table, as zsupd has
    first = fds()
    out = {{"said": [run(f"echo {{i}}", lambda w: (spawner.STDIN_NULL, w, spawner.SAME_AS_STDOUT)) for i in range(3)]}}
    before = fds()
    reserved = sorted(set(before) - set(first))
    out["reserved"] = [before[fd] for fd in reserved]
    for fd in reserved:
        os.close(fd)  # a careless library closing fds it does not own
    out["said"] += [run("echo ok >&2", lambda w: (spawner.STDIN_NULL, spawner.INHERIT, w)) for _ in range(50)]
    after = fds()
    out["stdio_kept"] = all(after[fd] == before[fd] for fd in (0, 1, 2))
    out["count"] = [len(before), len(after)]
    print(json.dumps(out))
""")


@needs_c
def test_spawning_many_leaves_our_own_fds_as_they_were():
    """The child gets a table of its own from a few low fds (the parent puts its stdio there
    for the spawn, then points them back at /dev/null): our stdio is untouched, no fd is
    left behind per spawn, each child's pipe ends when it exits, and reserved fds someone
    else closed are made again rather than written over."""
    out = json.loads(subprocess.run([PYTHON, "-c", MANY_SPAWNS], capture_output=True, text=True, timeout=60,
                                    check=True).stdout)
    assert out["said"] == ["0\n", "1\n", "2\n"] + ["ok\n"] * 50
    assert out["reserved"] == ["/dev/null"] * 4  # three slots and the /dev/null they go back to
    assert out["stdio_kept"]
    assert out["count"][0] == out["count"][1]  # made again, nothing more
