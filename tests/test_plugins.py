"""gafferd-style plugins: Python apps started with zsupd, driving it over the bus."""

import textwrap

from conftest import wait_for

PLUGIN = textwrap.dedent('''
    import threading
    from zsup.daemon.plugins import Plugin

    __all__ = ["HelloPlugin"]


    class HelloApp:
        def start(self, ctx):
            self.ctx = ctx
            # a plugin is a bus client like any other; the daemon answers once start() returns
            threading.Thread(target=self.load, daemon=True).start()

        def load(self):
            with self.ctx.client(timeout=10) as c:
                c.call("load", config={"name": "from-plugin", "cmd": "sleep", "args": ["300"]})

        def stop(self):
            open(STOPPED, "w").write("bye")


    class HelloPlugin(Plugin):
        name = "hello"
        version = "1.0"
        mandatory = MANDATORY

        def app(self, cfg):
            return HelloApp()
''')


def write_plugin(tmp_path, mandatory=()):
    folder = tmp_path / "plugins" / "hello"
    folder.mkdir(parents=True)
    stopped = tmp_path / "stopped"
    (folder / "app.py").write_text(PLUGIN.replace("STOPPED", repr(str(stopped)))
                                   .replace("MANDATORY", repr(list(mandatory))))
    return stopped


def test_plugin_app_starts_uses_the_bus_and_stops(zsupd_factory, tmp_path):
    stopped = write_plugin(tmp_path)
    d = zsupd_factory(f"[zsup]\nplugin_dir = {tmp_path / 'plugins'}\n")
    wait_for(lambda: "default.from-plugin" in d.call("jobs"))
    assert d.stop() == 0
    assert stopped.read_text() == "bye"


def test_missing_mandatory_plugin_refuses_to_start(zsupd_factory, tmp_path):
    write_plugin(tmp_path, mandatory=["somedep"])
    d = zsupd_factory("", start=False, args=["-p", str(tmp_path / "plugins")])
    d.start(wait=False)
    assert d.proc.wait(15) != 0
    assert "mandatory plugin(s) missing: somedep" in d.log()
