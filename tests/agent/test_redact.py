"""Redaction: Luhn-valid card numbers are masked to their last four digits; other numbers stay."""

from __future__ import annotations

import re

import pytest

from posassist.agent.redact import REDACTED, Redactor, luhn_ok, mask_card_numbers, redact

# Published test card numbers (Visa, Mastercard, Amex, Discover, JCB, UnionPay 19-digit, Diners 14)
TEST_CARDS = [
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
    "3530111333300000",
    "6212345678901265",
    "36227206271667",
    "6250941006528599",
]


@pytest.mark.parametrize("card", TEST_CARDS)
def test_test_card_numbers_pass_luhn_and_are_masked(card):
    assert luhn_ok(card)
    out = mask_card_numbers(f"paid with {card} ok")
    assert card not in out
    assert out == f"paid with {'*' * (len(card) - 4)}{card[-4:]} ok"


def test_grouped_card_numbers_keep_their_layout():
    assert mask_card_numbers("卡号 4111 1111 1111 1111。") == "卡号 **** **** **** 1111。"
    assert mask_card_numbers("5555-5555-5555-4444") == "****-****-****-4444"


def test_non_luhn_numbers_and_other_lengths_are_left_alone():
    text = "order 4111111111111112 phone 13812345678 ts 20240101123059 amount 1234"
    assert mask_card_numbers(text) == text
    long_id = "41111111111111111234567"  # 23 contiguous digits: not a PAN
    assert mask_card_numbers(long_id) == long_id


def test_card_followed_by_a_date_is_still_found():
    out = mask_card_numbers("4111111111111111 2024-01-01 12:00")
    assert out == "************1111 2024-01-01 12:00"


def test_card_glued_to_letters_is_found():
    assert mask_card_numbers("PAN=4111111111111111;") == "PAN=************1111;"


def test_extra_patterns_replace_the_whole_match_or_only_the_secret_group():
    redactor = Redactor([r"token [A-Za-z0-9]{8,}", re.compile(r"password=(?P<secret>\S+)")])
    out = redactor.redact("login password=hunter2 token abcDEF123456 card 4111111111111111")
    assert out == f"login password={REDACTED} {REDACTED} card ************1111"


def test_redact_function_uses_card_masking_without_patterns():
    assert redact("4111111111111111") == "************1111"
    assert redact("会员 手机 13800138000", [r"1[3-9][0-9]{9}"]) == f"会员 手机 {REDACTED}"
