"""The protocol's text rules, tested on their own: what a terminal may be shown, what a name or a
username may be, and the one line a command prints for an error."""

from __future__ import annotations

import pytest

from posassist.protocol.errors import BadArgument, error_line
from posassist.protocol.messages import MAX_DISPLAY_NAME, name_problem, username_problem
from posassist.protocol.text import printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain 收银机", "plain 收银机"),
        ("red \x1b[31mtext\x1b[0m", "red text"),  # CSI colour
        ("\x1b[2J\x1b[Hwiped", "wiped"),  # clear screen, cursor home
        ("title\x1b]0;owned\x07 after", "title after"),  # OSC window title, BEL-terminated
        ("link \x1b]8;;http://x\x1b\\here", "link here"),  # OSC hyperlink, ST-terminated
        ("c1 \x9b31mcsi", "c1 csi"),  # 8-bit CSI
        ("nul\x00 del\x7f bell\x07", "nul del bell"),
        ("order \u202eevil\u202c", "order evil"),  # bidi override
        ("line1\r\nline2", "line1\nline2"),
        ("over\rwrite", "overwrite"),  # a lone CR would let a line overwrite another
        ("tab\tkept\nnewline kept", "tab\tkept\nnewline kept"),
        ("trailing escape \x1b", "trailing escape "),
    ],
)
def test_printable_drops_escapes_and_controls(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_printable_on_one_line_turns_newlines_and_tabs_into_spaces() -> None:
    assert printable("a\nb\tc\r\nd", multiline=False) == "a b c d"


@pytest.mark.parametrize("name", ["shop", "tech.li@acme-pos_2", "a" * 64])
def test_usernames_that_may_be(name: str) -> None:
    assert username_problem(name) is None


@pytest.mark.parametrize("name", ["", "a" * 65, "with space", "new\nline", "esc\x1b[2J", "张三"])
def test_usernames_that_may_not_be_say_why(name: str) -> None:
    assert "a username is 1-64" in (username_problem(name) or "")


@pytest.mark.parametrize("name", ["Noodles 面馆", "x", "n" * MAX_DISPLAY_NAME])
def test_names_that_may_be(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize("name", ["", "   ", "n" * (MAX_DISPLAY_NAME + 1)])
def test_blank_or_long_names_say_how_long_a_name_is(name: str) -> None:
    assert f"1-{MAX_DISPLAY_NAME} characters" in (name_problem(name) or "")


@pytest.mark.parametrize("name", ["Main\nSt", "Main\x1b[2J", "Main\x00", "Main\x85", "ab\u202ecd"])
def test_names_with_controls_or_bidi_overrides_are_refused(name: str) -> None:
    assert "control characters" in (name_problem(name) or "")


def test_error_line_names_the_reason_in_both_languages() -> None:
    assert error_line(BadArgument("--port must be 1-65535")) == (
        "error: bad argument: --port must be 1-65535 / 参数有误"
    )


def test_error_line_with_no_message_or_the_reason_alone_says_it_once() -> None:
    assert error_line(BadArgument()) == "error: bad argument / 参数有误"
    assert error_line(BadArgument("bad argument")) == "error: bad argument / 参数有误"


def test_error_line_strips_what_a_peer_put_in_the_message_and_adds_its_chinese_detail() -> None:
    exc = BadArgument("relay said \x1b[2Jno\nway")
    exc.detail_zh = "请\x1b]0;x\x07联系技术员"  # type: ignore[attr-defined]
    line = error_line(exc)
    assert line == "error: bad argument: relay said no way / 参数有误: 请联系技术员"
