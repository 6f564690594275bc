"""The layout's rules, checked over every module of zsup (docs/architecture.md).

Imports are read with ast, so an import inside a function counts as much as one at the top:
  - zsup.core imports nothing above it: only zsup.core, zsup.errors, zsup.paths and the bus's
    pure vocabulary (topics, parse); and never zmq (the core does not talk to sockets);
  - zsup.http talks to the daemon only over the bus: zsup.bus, zsup.errors, zsup.http, and
    the package's own __version__;
  - zsup.services and zsup.daemon never import the command line or the HTTP gateway;
  - zsup.lookup never imports the daemon;
  - the protocol's pure modules (topics, parse, protocol, schema) import neither zmq nor core.
"""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "zsup")
MAX_LINES = 500

# layer -> (allowed zsup modules or None for "any but the forbidden", forbidden modules)
CORE_ALLOWED = ("zsup.core", "zsup.errors", "zsup.paths", "zsup.bus.topics", "zsup.bus.parse")
HTTP_ALLOWED = ("zsup.bus", "zsup.errors", "zsup.http")
RULES: dict[str, tuple[tuple[str, ...] | None, tuple[str, ...]]] = {
    "zsup.core": (CORE_ALLOWED, ("zmq",)),
    "zsup.http": (HTTP_ALLOWED, ()),
    "zsup.services": (None, ("zsup.cli", "zsup.http")),
    "zsup.daemon": (None, ("zsup.cli", "zsup.http")),
    "zsup.lookup": (None, ("zsup.daemon",)),
    # the protocol's pure modules (what core may import) touch no socket and sit below core
    "zsup.bus.topics": (None, ("zmq", "zsup.core")),
    "zsup.bus.parse": (None, ("zmq", "zsup.core")),
    "zsup.bus.protocol": (None, ("zmq", "zsup.core")),
    "zsup.bus.schema": (None, ("zmq", "zsup.core")),
}


def modules() -> list[tuple[str, str]]:
    """(dotted name, path) of every module in zsup."""
    found = []
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found.append((rel.removesuffix(".__init__"), path))
    return sorted(found)


def _is_module(dotted: str) -> bool:
    base = os.path.join(ROOT, *dotted.split("."))
    return os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__init__.py"))


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """(imported name, line) for each import in `source`, in line order, relative ones made
    absolute. Within zsup, `from pkg import name` gives "pkg.name" (so `from zsup import
    __version__` reads as "zsup.__version__"); elsewhere just "pkg"."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((full if base.startswith("zsup") else base, node.lineno))
    return sorted(out, key=lambda item: item[1])


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(module: str, imported: list[tuple[str, int]]) -> list[str]:
    """What `module` may not import, by the rules above, as readable lines."""
    bad = []
    for layer, (allowed, forbidden) in RULES.items():
        if not _within(module, (layer,)):
            continue
        for name, line in imported:
            if _within(name, forbidden):
                bad.append(f"{module}:{line} imports {name}")
            elif allowed is not None and _within(name, ("zsup",)) and not _within(name, allowed):
                if layer == "zsup.http" and name == "zsup.__version__":
                    continue
                bad.append(f"{module}:{line} imports {name} (allowed: {', '.join(allowed)})")
    return bad


def test_checker_sees_a_bad_import():
    """The rule check itself can fail: relative, nested and plain imports are all read."""
    source = "import os\ndef f():\n    from ..daemon import config\nfrom .job import Job\nimport zmq\n"
    found = imports_of(source, "zsup.core.manager")
    assert ("zsup.daemon.config", 3) in found and ("zsup.core.job.Job", 4) in found
    assert violations("zsup.core.manager", found) == [
        "zsup.core.manager:3 imports zsup.daemon.config (allowed: " + ", ".join(CORE_ALLOWED) + ")",
        "zsup.core.manager:5 imports zmq",
    ]
    assert violations("zsup.http.app", [("zsup.__version__", 1), ("zsup.bus.client", 2)]) == []
    assert violations("zsup.http.app", [("zsup.daemon.store", 7)])
    assert violations("zsup.lookup.client", [("zsup.daemon.daemon", 1)])
    assert violations("zsup.services.tasks", [("zsup.http.app", 1)])
    assert violations("zsup.bus.protocol", [("zmq", 1)])
    assert violations("zsup.bus.client", [("zmq", 1)]) == []


def test_every_module_keeps_the_import_rule():
    mods = modules()
    assert len(mods) > 30 and all(_is_module(name) for name, _ in mods)
    bad = []
    for name, path in mods:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        bad += violations(name, imports_of(source, name, path.endswith("__init__.py")))
    assert bad == [], "imports that break the layering:\n" + "\n".join(bad)


def oversized() -> list[str]:
    """Modules over MAX_LINES lines."""
    out = []
    for name, path in modules():
        with open(path, encoding="utf-8") as f:
            count = sum(1 for _ in f)
        if count > MAX_LINES:
            out.append(f"{os.path.relpath(path, ROOT)} ({count})")
    return out


def test_no_module_is_too_big():
    assert oversized() == []


# Modules only some configs need (issue 14, "import only what the config needs"): a zsupd
# whose config has no schedule, no check, no key and no plugin never loads them.
ON_DEMAND = ("cronsim", "concurrent.futures", "secrets", "hmac", "urllib.request")


def test_a_plain_zsupd_start_imports_no_on_demand_module():
    import subprocess
    import sys

    code = ("import sys; import zsup.cli.zsupd, zsup.daemon.daemon; "
            f"print(' '.join(m for m in {ON_DEMAND!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
