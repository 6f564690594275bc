"""zsup's etcd client against a real etcd: keys, leases that expire, watches."""

import threading

import pytest
from conftest import wait_for
from fleet_helpers import etcd  # noqa: F401

from zsup.lookup.etcd import EtcdClient, EtcdError, LeaseLost, parse_etcd_urls


def test_urls_parse_the_comma_form_and_refuse_garbage():
    assert parse_etcd_urls("etcd://a:2379,b:2380") == ["http://a:2379", "http://b:2380"]
    assert parse_etcd_urls(["etcd://a", "b:1"], tls=True) == ["https://a:2379", "https://b:1"]
    assert parse_etcd_urls("https://x:1") == ["https://x:1"]
    for bad in ("", "a:2379", "ftp://a:1", "etcd://a:1/path"):
        with pytest.raises(ValueError):
            parse_etcd_urls(bad)


def test_keys_leases_and_watch(etcd):
    client = EtcdClient(parse_etcd_urls(etcd.etcd_url))
    rev, kvs = client.get_prefix("/t/")
    assert kvs == {}
    watch = client.watch_prefix("/t/", rev + 1)
    seen = []
    reader = threading.Thread(target=_collect, args=(watch, seen), daemon=True)
    reader.start()
    lease = client.grant(2)
    client.put("/t/a", "1", lease)
    client.put("/t/b", "2")
    assert client.get_prefix("/t/")[1] == {"/t/a": "1", "/t/b": "2"}
    assert client.keepalive(lease) >= 1
    # no more keepalives: the leased key goes when the lease expires
    wait_for(lambda: "/t/a" not in client.get_prefix("/t/")[1], timeout=10, message="the lease to expire")
    with pytest.raises(LeaseLost):
        client.keepalive(lease)
    client.delete("/t/b")
    wait_for(lambda: len(seen) >= 4, timeout=5, message="watch events")
    assert [(k, key) for k, key, _, _ in seen[:4]] == [("put", "/t/a"), ("put", "/t/b"), ("delete", "/t/a"),
                                                       ("delete", "/t/b")]
    watch.close()
    reader.join(5)
    assert not reader.is_alive()


def _collect(watch, seen):
    try:
        for event in watch:
            seen.append(event)
    except EtcdError:
        pass


def test_no_endpoint_answering_is_one_clear_error():
    from fleet_helpers import free_port

    client = EtcdClient([f"http://127.0.0.1:{free_port()}"], timeout=1)
    with pytest.raises(EtcdError, match="no etcd endpoint answers"):
        client.get_prefix("/x/")
