"""Structured relay logs: one JSON object a line, fields from extra= and context, secrets masked."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING

import pytest

from posassist.relay.logs import (
    MASK,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    log_context,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines to a buffer, without touching the root logger."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("posassist.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, buffer
    logger.removeHandler(handler)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_the_standard_fields(captured) -> None:
    logger, buffer = captured
    logger.warning(
        "refused agent %s",
        "till-1",
        extra={"device_id": "till-1", "peer": "127.0.0.1:5000", "request_id": 42, "user": "林"},
    )
    (entry,) = lines(buffer)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "posassist.test.logs"
    assert entry["msg"] == "refused agent till-1"
    assert entry["device_id"] == "till-1"
    assert entry["peer"] == "127.0.0.1:5000"
    assert entry["request_id"] == 42
    assert entry["user"] == "林"
    ts = str(entry["ts"])
    assert ts.endswith("Z")
    offset = datetime.fromisoformat(ts.replace("Z", "+00:00")).utcoffset()
    assert offset is not None
    assert offset.total_seconds() == 0


def test_newlines_and_unicode_line_separators_stay_on_one_line(captured) -> None:
    logger, buffer = captured
    logger.info("first\nsecond\u2028third\x85fourth")
    raw = buffer.getvalue()
    assert len(raw.splitlines()) == 1  # str.splitlines splits on U+2028 and NEL too
    assert lines(buffer)[0]["msg"] == "first\nsecond\u2028third\x85fourth"


@pytest.mark.parametrize(
    "field", ["token", "password", "secret", "admin_password", "Authorization", "api_key"]
)
def test_fields_named_like_secrets_are_masked(captured, field: str) -> None:
    logger, buffer = captured
    logger.info("sign-in", extra={field: "hunter2-do-not-log", "user": "alice"})
    raw = buffer.getvalue()
    assert "hunter2" not in raw
    entry = lines(buffer)[0]
    assert entry[field] == MASK
    assert entry["user"] == "alice"


def test_secrets_nested_in_structured_fields_are_masked(captured) -> None:
    logger, buffer = captured
    body = {"user": "alice", "credentials": {"password": "pw-1", "otp": [{"secret": "s-2"}]}}
    logger.info("login body", extra={"body": body})
    raw = buffer.getvalue()
    assert "pw-1" not in raw
    assert "s-2" not in raw
    assert lines(buffer)[0]["body"] == {
        "user": "alice",
        "credentials": {"password": MASK, "otp": [{"secret": MASK}]},
    }


def test_bearer_tokens_and_enrolment_tokens_in_text_are_masked(captured) -> None:
    logger, buffer = captured
    logger.info("bad header Authorization: Bearer eyJabc.def-ghi from %s", "10.0.0.1")
    logger.info("enrol with PA1-haF1c3RvcmUtMQ_x- failed")
    try:
        raise ValueError("token PA1-qwerty123 rejected")
    except ValueError:
        logger.exception("while enrolling")
    raw = buffer.getvalue()
    for secret in ("eyJabc", "haF1c3RvcmUtMQ", "qwerty123"):
        assert secret not in raw
    first, second, third = lines(buffer)
    assert first["msg"] == f"bad header Authorization: Bearer {MASK} from 10.0.0.1"
    assert second["msg"] == f"enrol with PA1-{MASK} failed"
    assert "ValueError" in str(third["exc"])


async def test_log_context_fields_reach_records_in_tasks_started_inside(captured) -> None:
    logger, buffer = captured

    async def worker() -> None:
        logger.info("in task", extra={"device_id": "till-9"})

    with log_context(request_id="r-1", user="bob"):
        logger.info("in block")
        await asyncio.create_task(worker())
    logger.info("after block")
    inside, in_task, after = lines(buffer)
    assert inside["request_id"] == "r-1"
    assert inside["user"] == "bob"
    assert in_task["request_id"] == "r-1"
    assert in_task["device_id"] == "till-9"
    assert "request_id" not in after


def test_extra_fields_cannot_overwrite_the_standard_ones(captured) -> None:
    logger, buffer = captured
    logger.info("real", extra={"level": "FAKE", "ts": "1970", "logger": "x"})
    entry = lines(buffer)[0]
    assert entry["level"] == "INFO"
    assert entry["ts"] != "1970"
    assert entry["logger"] == "posassist.test.logs"


def test_values_json_cannot_carry_are_written_as_text(captured) -> None:
    logger, buffer = captured
    logger.info("odd", extra={"when": datetime(2024, 1, 2), "raw": b"\x00"})
    entry = lines(buffer)[0]
    assert entry["when"] == "2024-01-02 00:00:00"
    assert entry["raw"] == "b'\\x00'"


def test_text_formatter_shows_masked_fields_after_the_message() -> None:
    record = logging.LogRecord("posassist.relay", logging.INFO, __file__, 1, "hi %s", ("x",), None)
    record.device_id = "till-1"
    record.token = "abc"
    text = TextFormatter().format(record)
    assert "INFO posassist.relay: hi x" in text
    assert 'device_id="till-1"' in text
    assert f'token="{MASK}"' in text
    assert "abc" not in text


def test_configure_logging_installs_one_handler_and_replaces_it_on_repeat() -> None:
    root = logging.getLogger()
    before_handlers, before_level = list(root.handlers), root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        configure_logging("debug", json=True, stream=first)
        handler = configure_logging(logging.INFO, json=True, stream=second)
        assert [h for h in root.handlers if h not in before_handlers] == [handler]
        assert root.level == logging.INFO
        logging.getLogger("posassist.relay").info("hello", extra={"password": "pw"})
        logging.getLogger("posassist.relay").debug("not shown")
        assert first.getvalue() == ""
        (entry,) = [json.loads(line) for line in second.getvalue().splitlines()]
        assert entry["msg"] == "hello"
        assert entry["password"] == MASK
        text = io.StringIO()
        configure_logging("INFO", json=False, stream=text)
        logging.getLogger("posassist.relay").info("plain")
        assert text.getvalue().rstrip().endswith("INFO posassist.relay: plain")
    finally:
        for h in [h for h in root.handlers if h not in before_handlers]:
            root.removeHandler(h)
        root.setLevel(before_level)


async def test_records_logged_while_an_api_request_is_handled_carry_its_method_path_and_peer(
    captured,
) -> None:
    from aiohttp import ClientSession, web
    from aiohttp.test_utils import TestServer

    from posassist.relay.errors import StorageUnavailable
    from posassist.relay.responses import errors_middleware

    logger, buffer = captured

    async def handler(request: web.Request) -> web.Response:
        logger.info("inside the handler")
        raise StorageUnavailable("database locked")

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/v1/thing", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as client, client.get(server.make_url("/v1/thing")) as resp:
            assert resp.status == 503
    finally:
        await server.close()
    (inside,) = lines(buffer)
    assert (inside["method"], inside["path"], inside["peer"]) == ("GET", "/v1/thing", "127.0.0.1")
