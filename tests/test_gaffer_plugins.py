"""A plugin written for gafferd (``from gaffer import Plugin``, ``start(loop, manager)``) run
by zsupd through its shim (zsup.daemon.gaffer_plugins): it loads and scales a job with
gaffer's manager calls and hears gaffer's manager events."""

import json
import textwrap

from conftest import wait_for

PLUGIN = textwrap.dedent('''
    import json
    from gaffer import Plugin

    __all__ = ["WatcherPlugin"]


    class WatcherApp(object):
        def start(self, loop, manager):
            self.manager = manager
            self.seen = []
            manager.events.subscribe(".", self.on_any)
            manager.events.subscribe("job.default.web", self.on_web)
            manager.events.subscribe_once("spawn", self.on_first_spawn)
            manager.load({"name": "web", "cmd": "sleep", "args": ["300"]}, sessionid="default")
            self.write("jobs", manager.jobs())
            self.write("loop", repr(loop))
            try:
                manager.walk(None)
            except AttributeError as exc:
                self.write("walk", str(exc))

        def on_any(self, evtype, msg):
            if evtype == "spawn":
                self.write("spawn-" + str(msg["pid"]), msg["name"])
                if len(self.manager.pids("default")) == 1:
                    self.manager.scale("default.web", 1)

        def on_web(self, evtype, msg):
            self.write("web:" + evtype.rsplit(".", 1)[-1], msg["event"])

        def on_first_spawn(self, evtype, msg):
            self.write("first", msg["pid"])

        def write(self, key, value):
            with open(OUT, "a") as f:
                f.write(json.dumps([key, value]) + "\\n")

        def stop(self):
            self.write("stopped", True)


    class WatcherPlugin(Plugin):
        name = "watcher"
        version = "1.0"

        def app(self, cfg):
            return WatcherApp()
''')


def test_gafferd_plugin_runs_through_the_shim(zsupd_factory, tmp_path):
    folder = tmp_path / "plugins" / "watcher"
    folder.mkdir(parents=True)
    out = tmp_path / "out.jsonl"
    (folder / "__init__.py").write_text(PLUGIN.replace("OUT", repr(str(out))))
    d = zsupd_factory(f"[zsup]\nplugin_dir = {tmp_path / 'plugins'}\n")

    def seen():
        if not out.exists():
            return {}
        return dict(json.loads(line) for line in out.read_text().splitlines())

    wait_for(lambda: len([k for k in seen() if k.startswith("spawn-")]) == 2, timeout=20,
             message="two spawns (the load, then the plugin's scale)")
    got = seen()
    assert got["jobs"] == ["default.web"]
    assert got["loop"] == "None"
    assert "manager.walk is not available" in got["walk"]
    assert set(v for k, v in got.items() if k.startswith("spawn-")) == {"default.web"}
    assert got["web:spawn"] == "job.default.web.spawn"
    assert isinstance(got["first"], int)
    assert d.call("info", name="web")["numprocesses"] == 2
    lines = out.read_text().splitlines()
    assert len([line for line in lines if line.startswith('["first"')]) == 1  # once
    d.stop()
    assert seen().get("stopped") is True
