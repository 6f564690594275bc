"""Mutual TLS: with --cacert, zsup-lookupd and zsup-http require a client certificate signed
by that CA, and refuse a connection without one or with one from another CA."""

import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest
from conftest import PYTHON, ROOT, wait_for
from fleet_helpers import free_port


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}", cwd=d)


def make_cert(d, name, ca, san=None):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", str(ext), cwd=d)
    os.chmod(d / f"{name}.key", 0o600)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "rogue-ca")
    make_cert(d, "server", "ca", san="IP:127.0.0.1")
    make_cert(d, "client", "ca")
    make_cert(d, "rogue", "rogue-ca")
    return d


def context(certs, client=None):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if client:
        ctx.load_cert_chain(str(certs / f"{client}.pem"), str(certs / f"{client}.key"))
    return ctx


def get(url, ctx):
    with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:
        return resp.status, json.loads(resp.read())


def refused(url, ctx):
    try:
        get(url, ctx)
    except (ssl.SSLError, urllib.error.URLError, ConnectionError) as exc:
        return exc
    return None


def serve(tmp_path, argv, url, certs):
    log = open(tmp_path / "server.log", "ab")
    proc = subprocess.Popen([PYTHON, "-m", *argv], stdout=log, stderr=log, env=dict(os.environ, PYTHONPATH=ROOT))

    def up():
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "server.log").read_text())
        try:
            return get(url, context(certs, "client"))[0] == 200
        except (OSError, ssl.SSLError):
            return False

    try:
        wait_for(up, timeout=20, interval=0.1, message="the TLS server")
    except BaseException:
        proc.kill()
        raise
    return proc, log


@pytest.mark.parametrize("program", ["lookupd", "http_gateway"])
def test_cacert_requires_a_client_certificate_from_that_ca(program, certs, tmp_path):
    port = free_port()
    tls = ["--certfile", str(certs / "server.pem"), "--keyfile", str(certs / "server.key"),
           "--cacert", str(certs / "ca.pem")]
    if program == "lookupd":
        argv = ["zsup.cli.lookupd", "--bind", f"127.0.0.1:{port}", *tls]
        url = f"https://127.0.0.1:{port}/version"
    else:  # the gateway answers /openapi.json without a zsupd behind it
        argv = ["zsup.cli.http_gateway", "--bind", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "none"),
                *tls]
        url = f"https://127.0.0.1:{port}/openapi.json"
    proc, log = serve(tmp_path, argv, url, certs)
    try:
        assert get(url, context(certs, "client"))[0] == 200
        assert refused(url, context(certs)) is not None, "no client certificate must be refused"
        assert refused(url, context(certs, "rogue")) is not None, "another CA's certificate must be refused"
        assert get(url, context(certs, "client"))[0] == 200  # and the server still serves
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_cacert_without_tls_is_a_usage_error(certs, tmp_path):
    out = subprocess.run([PYTHON, "-m", "zsup.cli.http_gateway", "--bind", "127.0.0.1:0", "--cacert",
                          str(certs / "ca.pem")], capture_output=True, text=True, timeout=20,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 2 and "--cacert needs TLS" in out.stderr


def test_cacert_in_an_endpoint_section_of_the_config(certs, tmp_path):
    """The same from the config file, as gafferd's [endpoint:NAME] writes it (and as zsupd
    hands it to the gateway it runs)."""
    port = free_port()
    config = tmp_path / "zsup.ini"
    config.write_text(f"[zsup]\nhttp_endpoints = web\n\n[endpoint:web]\nbind = 127.0.0.1:{port}\n"
                      f"certfile = {certs / 'server.pem'}\nkeyfile = {certs / 'server.key'}\n"
                      f"cacert = {certs / 'ca.pem'}\n")
    url = f"https://127.0.0.1:{port}/openapi.json"
    proc, log = serve(tmp_path, ["zsup.cli.http_gateway", "-c", str(config), "--state-dir", str(tmp_path / "none")],
                      url, certs)
    try:
        assert refused(url, context(certs)) is not None, "no client certificate must be refused"
        assert refused(url, context(certs, "rogue")) is not None, "another CA's certificate must be refused"
        assert get(url, context(certs, "client"))[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    bad = tmp_path / "bad.ini"
    bad.write_text(f"[endpoint:web]\nbind = 127.0.0.1:{port}\ncacert = {certs / 'ca.pem'}\n")
    from zsup.daemon.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="cacert.*needs a certfile"):
        load_config(str(bad))
