"""`rediss://`: the services talk TLS to a TLS-only redis-server (Debian's is built with TLS),
verifying its certificate against a CA given in the URL, with the password honoured."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from cryptocast.redis_server import free_port
from tests.market_data import market_file

pytestmark = pytest.mark.slow

PASSWORD = "tls-s3cret"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path) -> None:
    """A CA, and a server certificate for 127.0.0.1 signed by it."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=cryptocast test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=d,
    )
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "server.crt",
        cwd=d,
    )


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificates")
    make_certs(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.crt",
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:  # the TLS port accepts connections once the server is up
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None, "redis-server refused the TLS options"
            assert time.monotonic() < deadline, "TLS redis-server did not start"
            time.sleep(0.05)
    yield port, tmp_path / "ca.crt"
    proc.terminate()
    proc.wait(10)


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "CRYPTOCAST_REDIS_URL": url,
        "CRYPTOCAST_SERIES": "binance:BTC/USDT:1h",
    }
    return subprocess.run(
        [sys.executable, "-m", "cryptocast", *args],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )


def test_services_use_tls_with_a_verified_certificate(
    tls_redis: tuple[int, Path], tmp_path: Path
) -> None:
    port, ca = tls_redis
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    src = market_file("btcusdt_binance_1h.csv")
    small = tmp_path / "btc.csv"
    small.write_text("".join(src.read_text().splitlines(keepends=True)[:201]))
    stored = _cli(
        url,
        "backfill",
        "--source",
        "csv",
        "--file",
        str(small),
        "--series",
        "binance:BTC/USDT:1h",
        "--json",
    )
    assert stored.returncode == 0, stored.stderr[-2000:]
    assert orjson.loads(stored.stdout)["stored"] == 200
    status = _cli(url, "status", "--json")
    assert status.returncode in (0, 1), status.stderr[-2000:]  # 1: old candles are stale
    assert orjson.loads(status.stdout)["series"][0]["candles"] == 200
    # without the CA the server's certificate is not trusted: refused, one line
    untrusted = _cli(f"rediss://:{PASSWORD}@127.0.0.1:{port}/0", "status")
    assert untrusted.returncode == 3 and "certificate" in untrusted.stderr.lower()
    # plain TCP to a TLS port does not work either, and no password leaks anywhere
    plain = _cli(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", "status")
    assert plain.returncode == 3
    for r in (stored, status, untrusted, plain):
        assert PASSWORD not in r.stdout + r.stderr
