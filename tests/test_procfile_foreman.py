"""`zsup` at parity with foreman and honcho, end to end with real processes: PORT and the
instance names reach the processes (start, run, load into a real zsupd), stop-on-exit and
its exit status, --keep-going with restart counts, --attach, check, and the service exports
validated by the tools that read them (systemd-analyze, supervisord's parser, plistlib, sh).
"""

import os
import plistlib
import re
import shlex
import shutil
import signal
import subprocess

import pytest
from conftest import PYTHON, ROOT, wait_for
from test_procfile_tool import Lines, run_main, stop_tool, tool

# Each process prints its name and PORT once, then waits: PORT reaching the process is what
# is tested, so the line comes from the process's own environment.
PORT_PROCFILE = """\
# the app
web: echo "I am $PS on $PORT ($HONCHO_PROCESS_NAME)"; exec sleep 60
worker: echo "I am $PS on $PORT"; exec sleep 60
"""


@pytest.fixture
def shop(tmp_path):
    root = tmp_path / "shop"
    root.mkdir()
    (root / "Procfile").write_text(PORT_PROCFILE)
    return root


def said(out):
    """{instance name: PORT} from the `I am NAME on PORT` lines, checking the prefix matches."""
    got = {}
    for m in out.matching(r"^\d\d:\d\d:\d\d (\S+) +\| I am (\S+) on (\d+)"):
        assert m.group(1) == m.group(2), "the output prefix is the instance's name"
        got[m.group(2)] = m.group(3)
    return got


def test_start_gives_each_instance_its_port_and_name(shop):
    (shop / ".env").write_text("PORT=7000\n")
    proc = tool("start", "-c", "web=2,worker=1", cwd=str(shop))
    try:
        out = Lines(proc.stdout)
        expected = {"web.1": "7000", "web.2": "7001", "worker.1": "7100"}
        wait_for(lambda: said(out) == expected, timeout=20, message=f"the ports, got {out.lines}")
        assert re.search(r"\(web\.1\)$", out.matching(r"I am web\.1")[0].string)  # HONCHO_PROCESS_NAME
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        wait_for(lambda: out.matching(r"zsup +\| exits while running, per type: web 0, worker 0"),
                 message="the summary")
    finally:
        stop_tool(proc)


def test_port_option_and_environment(shop):
    env = dict(os.environ, PORT="9000", PYTHONPATH=ROOT)
    for argv, expected in ((["-p", "8000"], "8000"), ([], "9000")):
        proc = subprocess.Popen([PYTHON, "-m", "zsup.cli.procfile_tool", "start", "web", *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(shop), env=env)
        try:
            out = Lines(proc.stdout)
            wait_for(lambda: said(out) == {"web.1": expected}, timeout=20, message=f"PORT {expected}")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            stop_tool(proc)


def test_start_stops_everything_when_a_process_exits_with_its_status(tmp_path):
    root = tmp_path / "app"
    root.mkdir()
    (root / "Procfile").write_text("web: echo up; exec sleep 60\nbroken: sleep 0.5; exit 7\n")
    proc = tool("start", cwd=str(root))
    try:
        out = Lines(proc.stdout)
        assert proc.wait(30) == 7
        out.thread.join(5)
        assert out.matching(r"zsup +\| a process exited: stopping all processes")
        assert out.matching(r"web\.1 +\| exit process with pid \d+ \(killed by signal 15\)")
        assert len(out.matching(r"broken\.1 +\| spawn process")) == 1, "not restarted"
        assert out.matching(r"exits while running, per type: web 0, broken 1")
    finally:
        stop_tool(proc)


def test_keep_going_restarts_and_counts(tmp_path):
    root = tmp_path / "app"
    root.mkdir()
    (root / "Procfile").write_text("web: exec sleep 60\nflaky: echo again; exit 1\n")
    proc = tool("start", "--keep-going", cwd=str(root))
    try:
        out = Lines(proc.stdout)
        wait_for(lambda: len(out.matching(r"flaky\.1 +\| again")) >= 3, timeout=30, message="restarts")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        out.thread.join(5)
        counts = out.matching(r"exits while running, per type: web 0, flaky (\d+)")
        assert counts and int(counts[0].group(1)) >= 3
    finally:
        stop_tool(proc)


def test_run_gets_the_base_port(shop):
    (shop / ".env").write_text("PORT=6500\n")
    proc = tool("run", "echo port=$PORT", cwd=str(shop))
    out, err = proc.communicate(timeout=20)
    assert out == "port=6500\n" and proc.returncode == 0, err
    proc = tool("run", "-p", "4000", "echo port=$PORT", cwd=str(shop))
    assert proc.communicate(timeout=20)[0] == "port=4000\n"


def test_loaded_processes_get_ports_and_names_also_when_scaled(shop, zsupd_factory, capsys):
    d = zsupd_factory()
    code, _, err = run_main(capsys, "--endpoint", d.bus, "-d", str(shop), "load", "-c", "web=2", "-p", "6000")
    assert code == 0, err

    def ports():
        got = {}
        for job in ("shop.web", "shop.worker"):
            for pid in d.call("pids", name=job):
                for line in d.call("read_output", pid=pid)["lines"]:
                    m = re.search(r"I am (\S+) on (\d+)", line["data"])
                    if m:
                        got[m.group(1)] = m.group(2)
        return got

    wait_for(lambda: ports() == {"web.1": "6000", "web.2": "6001", "worker.1": "6100"}, timeout=20,
             message=lambda: f"ports from zsupd, got {ports()}")
    assert run_main(capsys, "--endpoint", d.bus, "scale", "shop", "web+1")[0] == 0
    wait_for(lambda: ports().get("web.3") == "6002", timeout=20, message="the third web's port")
    code, out, _ = run_main(capsys, "--endpoint", d.bus, "ps", "shop")
    assert "=== web: `echo \"I am $PS on $PORT ($HONCHO_PROCESS_NAME)\"; exec sleep 60`" in out


def test_attach_shows_a_loaded_apps_output(shop, zsupd_factory, capsys):
    d = zsupd_factory()
    assert run_main(capsys, "--endpoint", d.bus, "-d", str(shop), "load")[0] == 0
    proc = tool("--endpoint", d.bus, "start", "--attach", "shop", cwd=str(shop))
    try:
        out = Lines(proc.stdout)
        wait_for(lambda: out.matching(r"zsup +\| attached to shop"), timeout=20, message="attached")
        # A process restarted while attached shows up under its instance name.
        d.call("restart_job", name="shop.web")
        wait_for(lambda: said(out).get("web.1") == "5000", timeout=20, message=f"web's line, got {out.lines}")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert d.call("jobs", session="shop") == ["shop.web", "shop.worker"], "the app keeps running"
    finally:
        stop_tool(proc)


def test_attach_names_processes_that_were_already_running(tmp_path, zsupd_factory, capsys):
    root = tmp_path / "ticker"
    root.mkdir()
    (root / "Procfile").write_text('tick: while true; do echo "tick $PS"; sleep 0.2; done\n')
    d = zsupd_factory()
    assert run_main(capsys, "--endpoint", d.bus, "-d", str(root), "load", "-c", "tick=2")[0] == 0
    proc = tool("--endpoint", d.bus, "start", "--attach", cwd=str(root))
    try:
        out = Lines(proc.stdout)
        for name in ("tick.1", "tick.2"):
            wait_for(lambda: out.matching(rf"^\S+ {re.escape(name)} +\| tick {re.escape(name)}$"), timeout=20,
                     message=f"{name}'s lines, got {out.lines[-5:]}")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        stop_tool(proc)


# ============================================================================ check
def test_check_prints_what_would_run_and_warns_about_skipped_lines(shop, capsys):
    (shop / "Procfile").write_text(PORT_PROCFILE + "not a process line\n")
    (shop / ".env").write_text("GREETING=hi\n-bad=1\n")
    code, out, err = run_main(capsys, "-d", str(shop), "check", "-c", "web=2", "-p", "3000")
    assert code == 0
    assert re.search(r"^  web\.1 +PORT=3000  echo ", out, re.M)
    assert re.search(r"^  web\.2 +PORT=3001 ", out, re.M) and re.search(r"^  worker\.1 +PORT=3100 ", out, re.M)
    assert "Environment from env files: GREETING" in out
    assert "Procfile:4: not 'name: command', line skipped" in err and ".env:2: invalid variable name" in err


def test_check_and_start_on_an_empty_procfile(tmp_path, capsys):
    (tmp_path / "Procfile").write_text("# nothing yet\n")
    code, out, _ = run_main(capsys, "-d", str(tmp_path), "check")
    assert code == 0 and "nothing would run" in out
    code, _, err = run_main(capsys, "-d", str(tmp_path), "start")
    assert code == 1 and "no process types to start" in err


# ============================================================================ export
def export(capsys, root, fmt, out_dir, *extra):
    code, out, err = run_main(capsys, "-d", str(root), "export", "--format", fmt, "--out", str(out_dir), *extra)
    assert code == 0, err
    return out


def systemd_verify_works():
    if not shutil.which("systemd-analyze"):
        return "systemd-analyze is not installed"
    probe = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"systemd-analyze does not run here: {probe.stderr.strip()}"


@pytest.mark.skipif(systemd_verify_works() is not None, reason=str(systemd_verify_works()))
def test_export_systemd_is_verified_by_systemd(shop, tmp_path, capsys):
    (shop / ".env").write_text('GREETING="a \\"b\\" $HOME 100%"\n')
    out_dir = tmp_path / "units"
    export(capsys, shop, "systemd", out_dir, "-c", "web=2", "-u", "root")
    names = sorted(os.listdir(out_dir))
    assert names == ["shop-web.1.service", "shop-web.2.service", "shop-worker.1.service", "shop.env",
                     "shop.target"]
    unit = (out_dir / "shop-web.2.service").read_text()
    for line in ("Restart=always", "User=root", f"WorkingDirectory={shop}", f"EnvironmentFile={out_dir}/shop.env",
                 "Environment=PORT=5001 PS=web.2 HONCHO_PROCESS_NAME=web.2", "StandardOutput=journal",
                 "PartOf=shop.target"):
        assert line in unit.splitlines()
    assert "Wants=shop-web.1.service shop-web.2.service shop-worker.1.service" in (out_dir / "shop.target").read_text()
    units = [str(out_dir / n) for n in names if n != "shop.env"]
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True,
                            cwd=str(out_dir), timeout=60)
    assert result.returncode == 0, result.stderr
    # The check can fail: a unit systemd cannot use is reported.
    (out_dir / "shop-web.1.service").write_text(unit.replace("ExecStart=/bin/sh", "ExecStart=sh-relative"))
    bad = subprocess.run(["systemd-analyze", "verify", "--man=no", str(out_dir / "shop-web.1.service")],
                         capture_output=True, text=True, cwd=str(out_dir), timeout=60)
    assert bad.returncode != 0


def test_export_systemd_command_runs_as_written(shop, tmp_path, capsys):
    """ExecStart's own quoting and $$ undone as systemd does, the command prints the same."""
    out_dir = tmp_path / "units"
    export(capsys, shop, "systemd", out_dir)
    line = next(x for x in (out_dir / "shop-worker.1.service").read_text().splitlines() if x.startswith("ExecStart="))
    assert line == 'ExecStart=/bin/sh -c "echo \\"I am $$PS on $$PORT\\"; exec sleep 60"'


def test_export_supervisord_is_read_by_supervisord(shop, tmp_path, capsys):
    options_mod = pytest.importorskip("supervisor.options")
    (shop / ".env").write_text("GREETING='say \"hi\", 100% sure'\n")
    out_dir, logs = tmp_path / "sv", tmp_path / "logs"
    logs.mkdir()
    export(capsys, shop, "supervisord", out_dir, "-c", "web=2", "-l", str(logs))
    main_conf = tmp_path / "supervisord.conf"
    main_conf.write_text(f"[supervisord]\nlogfile={tmp_path}/supervisord.log\n\n"
                         f"[include]\nfiles={out_dir}/shop.conf\n")
    opts = options_mod.ServerOptions()
    opts.configfile = str(main_conf)
    opts.process_config(do_usage=False)
    (group,) = opts.process_group_configs
    assert group.name == "shop"
    procs = {p.name: p for p in group.process_configs}
    assert sorted(procs) == ["shop-web-1", "shop-web-2", "shop-worker-1"]
    web2 = procs["shop-web-2"]
    assert web2.environment == {"GREETING": 'say "hi", 100% sure', "PORT": "5001", "PS": "web.2",
                                "HONCHO_PROCESS_NAME": "web.2"}
    assert web2.directory == str(shop) and web2.autorestart
    # supervisord splits `command` with shlex: the shell gets the Procfile line unchanged.
    assert shlex.split(web2.command)[2] == 'echo "I am $PS on $PORT ($HONCHO_PROCESS_NAME)"; exec sleep 60'


def test_export_launchd_plists_parse(shop, tmp_path, capsys):
    (shop / ".env").write_text("AMP='a & b <c>'\n")
    out_dir = tmp_path / "ld"
    export(capsys, shop, "launchd", out_dir, "-u", "nobody", "-l", "/tmp/logs")
    with open(out_dir / "shop-worker-1.plist", "rb") as f:
        plist = plistlib.load(f)
    assert plist["Label"] == "shop-worker-1"
    assert plist["ProgramArguments"] == ["/bin/sh", "-c", 'echo "I am $PS on $PORT"; exec sleep 60']
    assert plist["EnvironmentVariables"] == {"AMP": "a & b <c>", "PORT": "5100", "PS": "worker.1",
                                             "HONCHO_PROCESS_NAME": "worker.1"}
    assert plist["WorkingDirectory"] == str(shop) and plist["UserName"] == "nobody" and plist["KeepAlive"]


def test_export_runit_scripts_run_the_process_with_its_port(shop, tmp_path, capsys):
    out_dir = tmp_path / "sv"
    export(capsys, shop, "runit", out_dir, "-c", "web=2")
    run = out_dir / "shop-web-2" / "run"
    assert os.access(run, os.X_OK) and os.access(out_dir / "shop-web-2" / "log" / "run", os.X_OK)
    assert subprocess.run(["sh", "-n", str(run)]).returncode == 0
    assert (out_dir / "shop-web-2" / "env" / "PORT").read_text() == "5001\n"
    # Run it for real, with a stand-in `chpst -e DIR` (runit may not be installed).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "chpst").write_text('#!/bin/sh\n[ "$1" = -e ] || exit 9\n'
                                  'for f in "$2"/*; do export "$(basename "$f")=$(cat "$f")"; done\n'
                                  'shift 2\nexec "$@"\n')
    (bindir / "chpst").chmod(0o755)
    text = run.read_text().replace("exec sleep 60", "exit 0")
    run.write_text(text)
    result = subprocess.run([str(run)], capture_output=True, text=True, timeout=20,
                            env=dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}"))
    assert result.stdout == "I am web.2 on 5001 (web.2)\n", result.stderr


def test_export_upstart_files(shop, tmp_path, capsys):
    out_dir = tmp_path / "up"
    export(capsys, shop, "upstart", out_dir, "-u", "app")
    assert sorted(os.listdir(out_dir)) == ["shop-web-1.conf", "shop-web.conf", "shop-worker-1.conf",
                                           "shop-worker.conf", "shop.conf"]
    conf = (out_dir / "shop-worker-1.conf").read_text().splitlines()
    assert "start on starting shop-worker" in conf and "respawn" in conf and "setuid app" in conf
    assert "env PORT=5100" in conf and f"chdir {shop}" in conf


def test_export_templates_can_be_overridden(shop, tmp_path, capsys):
    templates = tmp_path / "mine"
    templates.mkdir()
    (templates / "app.target").write_text("# my target for $app: $units\n")
    out_dir = tmp_path / "units"
    export(capsys, shop, "systemd", out_dir, "--template", str(templates))
    assert (out_dir / "shop.target").read_text() == "# my target for shop: shop-web.1.service shop-worker.1.service\n"
    assert "Restart=always" in (out_dir / "shop-web.1.service").read_text()  # zsup's own template

    (templates / "app.target").write_text("$nosuchvariable\n")
    code, _, err = run_main(capsys, "-d", str(shop), "export", "--format", "systemd", "--out",
                            str(tmp_path / "other"), "--template", str(templates))
    assert code == 1 and "unknown variable $nosuchvariable" in err
    assert not (tmp_path / "other").exists(), "nothing written"


def test_export_service_formats_need_a_folder(shop, capsys):
    code, _, err = run_main(capsys, "-d", str(shop), "export", "--format", "systemd")
    assert code == 1 and "--out" in err


def test_export_systemd_refuses_a_value_with_a_newline(shop, tmp_path, capsys):
    (shop / ".env").write_text('MOTD="two\\nlines"\n')
    code, _, err = run_main(capsys, "-d", str(shop), "export", "--format", "systemd", "--out", str(tmp_path / "u"))
    assert code == 1 and "MOTD" in err and not (tmp_path / "u").exists()


def test_export_supervisord_refuses_what_its_parser_would_change(shop, tmp_path, capsys):
    (shop / ".env").write_text("""QUOTED='"edge"'\n""")
    code, _, err = run_main(capsys, "-d", str(shop), "export", "--format", "supervisord", "--out", str(tmp_path / "s"))
    assert code == 1 and "supervisord" in err and not (tmp_path / "s").exists()


def test_new_options_have_help(capsys):
    for argv in (["check", "--help"], ["start", "--help"], ["export", "--help"]):
        code, out, _ = run_main(capsys, *argv)
        assert code == 0
    assert "--keep-going" in run_main(capsys, "start", "--help")[1]
    assert "launchd" in run_main(capsys, "export", "--help")[1]
