"""A big spawn hands over in bursts (EventEmitter.held, PipeReader's calls once per turn),
and nothing of the promises moves: every event arrives, in order, each process's `spawn`
before its first line, and no line is lost."""

import threading

from conftest import wait_for

from zsup.core.events import EventEmitter


def test_held_events_wait_for_the_end_and_keep_their_order():
    events = EventEmitter()
    seen = []
    at_once = []  # a listener not deferred: every event at once, held or not
    events.subscribe("", lambda topic, msg, data: seen.append((topic, threading.get_ident())), deferred=True)
    events.subscribe("proc.", lambda topic, msg, data: at_once.append((topic, list(seen))))
    other = threading.Thread(target=lambda: events.publish("proc.b", {}))
    with events.held():
        events.publish("proc.a1", {})
        other.start()
        other.join()  # another thread's event is not held
        assert [t for t, _ in seen] == ["proc.b"]
        events.publish("proc.a2", {})
        with events.held():  # nested: the outer one still holds
            events.publish("proc.a3", {})
        assert [t for t, _ in seen] == ["proc.b"]
    assert [t for t, _ in seen] == ["proc.b", "proc.a1", "proc.a2", "proc.a3"]
    events.publish("proc.c", {})  # after the block: at once
    assert seen[-1][0] == "proc.c"
    # the other listener heard each of its events when it was published, inside the block
    assert [(t, [x for x, _ in s]) for t, s in at_once][:4] == [
        ("proc.a1", []), ("proc.b", ["proc.b"]), ("proc.a2", ["proc.b"]), ("proc.a3", ["proc.b"])]


def test_a_held_block_that_raises_still_lets_its_events_go():
    events = EventEmitter()
    seen = []
    events.subscribe("", lambda topic, msg, data: seen.append(topic), deferred=True)
    try:
        with events.held():
            events.publish("proc.x", {})
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert seen == ["proc.x"]


def test_a_big_spawn_publishes_every_spawn_before_each_first_line(manager):
    order = []  # (event, os pid) as the listeners hear them
    manager.events.subscribe("proc.", lambda t, m, d: t.endswith(".spawn") and order.append(("spawn", m["os_pid"])))
    manager.events.subscribe("io.", lambda t, m, d: order.append(("io", m["os_pid"], d.count(b"\n"))))
    n = 100  # more than one slice (SPAWN_BATCH)
    manager.load({"name": "talk", "cmd": "sh", "args": ["-c", "echo one; echo two; sleep 300"], "numprocesses": n})

    def lines():
        got = {}
        for entry in list(order):
            if entry[0] == "io":
                got[entry[1]] = got.get(entry[1], 0) + entry[2]
        return got

    wait_for(lambda: len(lines()) == n and all(c == 2 for c in lines().values()), timeout=30,
             message="two lines from each of the 100")
    spawned = set()
    for entry in list(order):
        if entry[0] == "spawn":
            spawned.add(entry[1])
        else:
            assert entry[1] in spawned, f"a line of {entry[1]} came before its spawn event"
    assert len(spawned) == n
