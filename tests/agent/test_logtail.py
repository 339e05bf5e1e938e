"""Log tails: bounded reads of huge files, whole lines, GBK lines, and no card number ever out."""

from __future__ import annotations

import os

import pytest

from posassist.agent.errors import CollectorError, LogReadError
from posassist.agent.logtail import decode_line, parse_tail, read_tail
from posassist.agent.redact import Redactor


def test_a_2gb_sparse_log_is_read_within_the_byte_limit(tmp_path):
    path = tmp_path / "pos.log"
    with open(path, "wb") as f:
        f.truncate(2 * 1024**3)
        f.seek(0, os.SEEK_END)
        f.write(b"INFO started\n" * 100 + b"ERROR printer offline\n")
    tail = read_tail(str(path), max_bytes=4096)
    assert tail.bytes_read <= 4096
    assert tail.file_size > 2 * 1024**3
    assert tail.truncated
    assert tail.lines[-1] == "ERROR printer offline"
    assert all(line in ("INFO started", "ERROR printer offline") for line in tail.lines)


def test_the_first_partial_line_is_dropped_when_starting_mid_file(tmp_path):
    path = tmp_path / "pos.log"
    path.write_bytes(b"aaaaaaaaaa\nbbbb\ncccc\n")
    tail = read_tail(str(path), max_bytes=12)  # starts inside "aaaa..."
    assert tail.lines == ("bbbb", "cccc")
    whole = read_tail(str(path), max_bytes=1000)
    assert whole.lines == ("aaaaaaaaaa", "bbbb", "cccc")
    assert not whole.truncated


def test_one_line_longer_than_the_limit_gives_no_lines_not_a_fragment(tmp_path):
    path = tmp_path / "pos.log"
    path.write_bytes(b"x" * 10_000 + b"\n")
    assert read_tail(str(path), max_bytes=100).lines == ()


def test_gbk_and_utf8_lines_are_decoded_each_on_their_own(tmp_path):
    path = tmp_path / "pos.log"
    path.write_bytes(
        "打印机缺纸\r\n".encode("gbk") + "收银机 ok\n".encode() + "钱箱未关闭\n".encode("gb18030")
    )
    tail = read_tail(str(path))
    assert tail.lines == ("打印机缺纸", "收银机 ok", "钱箱未关闭")
    assert tail.gb18030_lines == 2


def test_utf8_bom_is_dropped():
    assert parse_tail("\ufeff开始\n".encode(), starts_mid_file=False) == (["开始"], 0)


def test_undecodable_bytes_never_raise():
    text, fallback = decode_line(b"\xff\xfe\x80")
    assert fallback
    assert isinstance(text, str)


def test_card_numbers_never_leave_in_a_log_tail(tmp_path):
    path = tmp_path / "pos.log"
    path.write_bytes(
        b"2024-05-01 sale card=4111111111111111 ok\n"
        + "2024-05-01 刷卡 6212 3456 7890 1265 成功 password=s3cret\n".encode("gbk")
        + b"2024-05-01 order 1024111111111112 unionpay 6222021234567890\n"
    )
    tail = read_tail(str(path), redactor=Redactor([r"password=(?P<secret>\S+)"]))
    text = "\n".join(tail.lines)
    assert "4111111111111111" not in text
    assert "6212 3456 7890 1265" not in text
    assert "s3cret" not in text
    assert "************1111" in text
    assert "**** **** **** 1265" in text
    assert "order 1024111111111112" in text  # no card range starts with 10: left alone
    assert "unionpay ************7890" in text  # fails Luhn, but 62 is UnionPay's range


def test_card_masking_is_on_even_without_a_redactor():
    lines, _ = parse_tail(b"pan 5555555555554444\n", starts_mid_file=False)
    assert lines == ["pan ************4444"]


def test_missing_log_is_a_typed_error(tmp_path):
    with pytest.raises(LogReadError) as info:
        read_tail(str(tmp_path / "nope.log"))
    assert isinstance(info.value, CollectorError)


def test_limit_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        read_tail(str(tmp_path / "x.log"), max_bytes=0)


def test_a_fifo_or_a_folder_named_as_a_log_is_refused_at_once(tmp_path):
    """attack 14 F9: open() of a FIFO with no writer blocked the whole POS collector forever
    (and leaked a thread per report in the running agent)."""
    fifo = tmp_path / "pos.log"
    os.mkfifo(fifo)
    with pytest.raises(LogReadError, match="not a regular file"):
        read_tail(str(fifo))  # would hang before: the test's timeout is the proof
    with pytest.raises(LogReadError):
        read_tail(str(tmp_path))  # a folder
