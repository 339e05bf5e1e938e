"""readme-walk F12: `serve --metrics-port` serves /metrics only on that (operator) address; the
agents' port then answers 404 for it. Without the option /metrics has its own listener all the
same (127.0.0.1, a free port named in DATA/metrics.url): never on the agents' port (issue 15)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import pytest

from tests.e2e.cli import provision, py, start_relay, stop

if TYPE_CHECKING:
    from pathlib import Path


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # 127.0.0.1 only
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@pytest.mark.parametrize(
    "options",
    [(), ("--metrics-port", "0", "--metrics-host", "127.0.0.1")],
    ids=["default", "given"],
)
def test_metrics_only_on_the_metrics_address(tmp_path: Path, options: tuple[str, ...]) -> None:
    data = tmp_path / "relay"
    provision(data)
    relay, url = start_relay(data, *options)
    try:
        main = url.replace("ws://", "http://", 1)
        metrics_url = (data / "metrics.url").read_text()
        assert metrics_url.startswith("http://127.0.0.1:")
        assert metrics_url.endswith("/metrics")
        assert metrics_url != main + "/metrics"
        status, body = _get(metrics_url)
        assert status == 200
        assert "posassist_relay_agents_connected" in body
        assert _get(main + "/metrics") == (404, "")  # not on the agents' port
        assert _get(main + "/healthz")[0] == 200  # which still serves everything else
    finally:
        stop(relay)


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_a_metrics_port_that_cannot_be_one_is_refused_before_anything_starts(
    tmp_path: Path, port: str
) -> None:
    data = tmp_path / "relay"
    provision(data)
    result = py("relay", "serve", "--data", str(data), "--port", "0", "--metrics-port", port)
    assert result.returncode == 2, result.stderr
    assert "--metrics-port" in result.stderr
    assert not (data / "relay.url").exists()
    assert not (data / "metrics.url").exists()


def test_a_metrics_port_in_use_is_a_clear_error_and_the_relay_does_not_serve(
    tmp_path: Path,
) -> None:
    data = tmp_path / "relay"
    provision(data)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = py("relay", "serve", "--data", str(data), "--port", "0", "--metrics-port", port)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert port in result.stderr, result.stderr
    assert not (data / "relay.url").exists()  # never "ready" without its metrics
    assert not (data / "metrics.url").exists()
