"""Redaction: numbers in a card range are masked to their last four digits, Luhn or not; the
catalog log bundle masks exactly the same (docs/findings.md#redaction)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posassist.agent import redact as agent_redact
from posassist.agent.redact import REDACTED, Redactor, luhn_ok, mask_card_numbers, redact

BUNDLE = Path(__file__).resolve().parents[2] / "catalog" / "collect-log-bundle" / "log_bundle.py"

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


def test_numbers_outside_card_ranges_and_other_lengths_are_left_alone():
    text = (
        "order 1000234567890123 phone 13812345678 ts 20240101123059 ms 1796000000000 "
        "ref 9900123456789012 amount 1234 short 6222021234"
    )
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


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("INFO sale ok card 6222 0212 3456 7890", "INFO sale ok card **** **** **** 7890"),
        ("ERROR pay card 6222021234567890 declined", "ERROR pay card ************7890 declined"),
        ("card 4111111111111112 refused", "card ************1112 refused"),
        ("银联 6217-0012-3456-7890-123", "银联 ****-****-****-***0-123"),
    ],
)
def test_card_range_numbers_are_masked_whether_or_not_luhn_holds(text, masked):
    digits = "".join(ch for ch in text if ch.isdigit())
    assert not luhn_ok(digits)
    assert mask_card_numbers(text) == masked


def test_never_more_than_four_digits_of_a_card_stay_readable():
    """attack 14 F4: the longest Luhn-valid window was preferred, so a stray digit before a card
    or a 19-digit UnionPay number showed up to 8 digits. Now the longest in-range window is
    masked whole; an amount joined to a card by one space is masked with it (safety first)."""
    assert mask_card_numbers("6 6222 0212 3456 7894") == "* **** **** **** 7894"
    assert mask_card_numbers("6222 0212 3456 7894 000") == "**** **** **** ***4 000"
    assert mask_card_numbers("4111111111111111 12") == "**************11 12"
    assert mask_card_numbers("4111111111111111 2024-12-06") == "************1111 2024-12-06"


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 9), st.sampled_from([*TEST_CARDS, "6222021234567894000"]))
def test_a_digit_before_a_grouped_card_never_uncovers_it(lead, card):
    grouped = " ".join(card[k : k + 4] for k in range(0, len(card), 4))
    masked = mask_card_numbers(f"{lead} {grouped}")
    assert sum(ch.isdigit() for ch in masked[2:]) <= 4, masked  # the card's own digits


@pytest.mark.parametrize(
    "text",
    [
        "６２２２０２１２３４５６７８９０",  # full-width, from a Chinese input method
        "6222.0212.3456.7890",
        "6222\t0212\t3456\t7890",
        "6222\u00a00212\u00a03456\u00a07890",
    ],
)
def test_full_width_digits_and_other_separators_are_cards_too(text):
    masked = mask_card_numbers(text)
    assert sum(ch.isdigit() for ch in masked) == 4, masked
    assert _bundle_redact(text) == masked


def test_a_chinese_product_barcode_is_not_a_card():
    """attack 14 F13: every GS1 China EAN-13 (690-699) was masked, hiding scanner errors."""
    for code in ("6901234567892", "6921168509256"):
        assert mask_card_numbers(f"ERROR item not found: barcode {code}") == (
            f"ERROR item not found: barcode {code}"
        )
    assert mask_card_numbers("6901234567891") == "*********7891"  # wrong check digit: masked


def test_a_bundle_tail_cut_inside_a_card_on_a_line_without_a_break(tmp_path):
    """attack 14 F5: a one-line log read from mid-file began with the rest of a card number
    (15 of 16 digits), no longer in a card range, so it was left in clear."""
    log = tmp_path / "pos.log"
    log.write_text("pay card=6222 0212 3456 7894 amount=10.00; " * 1000)
    module = _bundle()
    for limit in range(19 * 1024 - 40, 19 * 1024):
        data, cut = module.tail(str(log), limit)
        assert cut
        text = module.redact(module.decode(data))
        assert re.search(r"[0-9](?:[ -]?[0-9]){7}", text) is None, text[:60]


def _bundle() -> Any:
    spec = importlib.util.spec_from_file_location("log_bundle_under_test", BUNDLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_log_bundle_uses_the_agents_card_ranges():
    assert _bundle().CARD_RANGES == agent_redact.CARD_RANGES


_LOGGY = st.text(alphabet="0123456789 -62x4\n", max_size=80)


@settings(max_examples=300, deadline=None)
@given(_LOGGY)
def test_log_bundle_masks_card_numbers_exactly_like_the_agent(text):
    assert _bundle_redact(text) == mask_card_numbers(text)


_BUNDLE_MODULE: Any = None


def _bundle_redact(text: str) -> str:
    global _BUNDLE_MODULE
    if _BUNDLE_MODULE is None:
        _BUNDLE_MODULE = _bundle()
    # the bundle's redact also hides secrets; none of these texts has one
    return str(_BUNDLE_MODULE.redact(text))


SECRET_TEXTS = [
    ('{"password": "hunter2", "user": "li"}', '{"password": "[REDACTED]", "user": "li"}'),
    ("<password>hunter2</password>", "<password>[REDACTED]</password>"),
    ("Authorization: Bearer eyJhbGciOi.x-y_z", "Authorization: Bearer [REDACTED]"),
    ("login pwd=hunter2;next", "login pwd=[REDACTED];next"),
    ("member_phone=13812345678", "member_phone=[REDACTED]"),
    ("api_key: 'abc def'", "api_key: '[REDACTED]'"),
]


@pytest.mark.parametrize(("text", "masked"), SECRET_TEXTS)
def test_secrets_are_masked_alike_by_the_agent_and_the_log_bundle(text, masked):
    """attack 14 F12: JSON and XML passwords and Authorization headers left both in clear, and
    the two had different rules (member_phone only in the bundle)."""
    assert Redactor().redact(text) == masked
    assert _bundle_redact(text) == masked


def test_the_log_bundle_carries_the_agents_secret_patterns():
    assert _bundle().SECRET_PATTERNS == agent_redact.SECRET_PATTERNS


def test_the_log_bundle_applies_the_profiles_own_patterns_and_skips_keys(tmp_path):
    """attack 14 F12: a profile's redact_patterns never reached the bundle, and a key file beside
    the log was streamed out."""
    import json
    import os
    import subprocess
    import sys

    from posassist.agent.profile import parse_profile, profile_env

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "pos.log").write_text("Server=.;Uid=sa;Pwd=my secret pass;Database=pos\n")
    (logs / "agent.key").write_text("-----BEGIN PRIVATE KEY-----\nabc\n")
    (logs / "agent.json").write_text('{"device_id": "dev_x"}')
    profile = parse_profile(
        f'name = "p"\n[logs]\npaths = ["{logs}/pos.log"]\n'
        'redact_patterns = ["(?i)pwd=(?P<secret>[^;]*)"]\n'
    )
    env = {**os.environ, **profile_env(profile)}
    assert json.loads(env["POSASSIST_PROFILE_REDACT"]) == ["(?i)pwd=(?P<secret>[^;]*)"]
    out = subprocess.run(
        [sys.executable, "-I", "-B", str(BUNDLE), "--source", "pos"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "Pwd=[REDACTED];Database=pos" in out.stdout
    assert "secret pass" not in out.stdout
    assert "PRIVATE KEY" not in out.stdout
    assert "dev_x" not in out.stdout
