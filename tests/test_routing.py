"""Routing decisions and identifier validation: pure functions, no database."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from channels.registry import descriptors
from router.content import Content, EmailContent, LineContent
from router.identifiers import (
    InvalidIdentifier,
    check_line_user_id,
    email_sha256,
    normalize_email,
    normalize_phone,
    phone_sha256,
)
from router.intake import routing
from router.intake.routing import Plan, Unroutable
from router.intents import Kind, Route
from router.line.messages import text_message
from router.reach import Reach


def plan(
    route: Route,
    reach: Reach,
    *,
    has_line_content: bool,
    has_email_content: bool,
    configured: frozenset[str],
    kind: Kind = "promotional",
) -> Plan | Unroutable:
    """Plan over the registered channels for an intent with LINE messages and/or email content
    (without LINE messages, LINE carries text derived from the email)."""
    content = Content(
        line=LineContent(messages=[text_message("hello")]) if has_line_content else None,
        email=EmailContent(subject="Hello", text="hello") if has_email_content else None,
    )
    return routing.plan(route, reach, content, routing.Routes(descriptors()), configured, kind)


LINE_ID = "U0123456789abcdef0123456789abcdef"
ALL = frozenset({"line", "email"})
ONLY_LINE = frozenset({"line"})
ONLY_EMAIL = frozenset({"email"})
NONE: frozenset[str] = frozenset()

# How one recipient can be reached on LINE: (line_user_id, line_friend, line_opt_out).
LINE_STATES: dict[str, tuple[str | None, bool, bool]] = {
    "friend": (LINE_ID, True, False),
    "not_friend": (LINE_ID, False, False),
    "opted_out": (LINE_ID, True, True),
    "no_id": (None, False, False),
}
# ... and by email: (email, email_opt_out).
EMAIL_STATES: dict[str, tuple[str | None, bool]] = {
    "present": ("taro@example.jp", False),
    "opted_out": ("taro@example.jp", True),
    "absent": (None, False),
}

WHY_LINE_UNCONFIGURED = "LINE is not configured on this router"
WHY_NO_LINE_ID = "no LINE user ID is linked to this recipient"
WHY_NOT_FRIEND = "the LINE user is not a friend of the official account"
WHY_LINE_OPT_OUT = "the member opted out of LINE"
WHY_NO_LINE_CONTENT = "the intent has neither LINE messages nor email content to derive them from"
WHY_EMAIL_UNCONFIGURED = "email is not configured on this router"
WHY_NO_EMAIL = "no email address for this recipient"
WHY_EMAIL_OPT_OUT = "the member opted out of email"
WHY_NO_EMAIL_CONTENT = "the intent has no email content"


def reach(line: str = "friend", email: str = "present") -> Reach:
    line_user_id, line_friend, line_opt_out = LINE_STATES[line]
    address, email_opt_out = EMAIL_STATES[email]
    return Reach(
        member_id="m-1",
        line_user_id=line_user_id,
        line_friend=line_friend,
        line_opt_out=line_opt_out,
        email=address,
        email_opt_out=email_opt_out,
    )


def nowhere(line_why: str, email_why: str) -> Unroutable:
    return Unroutable(f"no channel reaches this recipient: {line_why}; {email_why}")


def decide(
    route: Route,
    line: str = "friend",
    email: str = "present",
    *,
    line_content: bool = True,
    email_content: bool = True,
    configured: frozenset[str] = ALL,
) -> Plan | Unroutable:
    return plan(
        route,
        reach(line, email),
        has_line_content=line_content,
        has_email_content=email_content,
        configured=configured,
    )


# prefer_line


@pytest.mark.parametrize(
    ("line", "email", "expected"),
    [
        ("friend", "present", Plan(("line",), "email")),
        ("friend", "opted_out", Plan(("line",), None)),
        ("friend", "absent", Plan(("line",), None)),
        ("not_friend", "present", Plan(("email",))),
        ("opted_out", "present", Plan(("email",))),
        ("no_id", "present", Plan(("email",))),
        ("not_friend", "opted_out", nowhere(WHY_NOT_FRIEND, WHY_EMAIL_OPT_OUT)),
        ("not_friend", "absent", nowhere(WHY_NOT_FRIEND, WHY_NO_EMAIL)),
        ("opted_out", "opted_out", nowhere(WHY_LINE_OPT_OUT, WHY_EMAIL_OPT_OUT)),
        ("opted_out", "absent", nowhere(WHY_LINE_OPT_OUT, WHY_NO_EMAIL)),
        ("no_id", "opted_out", nowhere(WHY_NO_LINE_ID, WHY_EMAIL_OPT_OUT)),
        ("no_id", "absent", nowhere(WHY_NO_LINE_ID, WHY_NO_EMAIL)),
    ],
)
def test_prefer_line_by_reachability(line: str, email: str, expected: Plan | Unroutable) -> None:
    assert decide("prefer_line", line, email) == expected


def test_prefer_line_without_line_configured_goes_to_email() -> None:
    assert decide("prefer_line", configured=ONLY_EMAIL) == Plan(("email",))


def test_prefer_line_without_email_configured_has_no_fallback() -> None:
    assert decide("prefer_line", configured=ONLY_LINE) == Plan(("line",), None)


def test_prefer_line_with_nothing_configured_is_unroutable() -> None:
    assert decide("prefer_line", configured=NONE) == nowhere(
        WHY_LINE_UNCONFIGURED, WHY_EMAIL_UNCONFIGURED
    )


def test_prefer_line_to_a_non_friend_without_email_configured_is_unroutable() -> None:
    assert decide("prefer_line", "not_friend", configured=ONLY_LINE) == nowhere(
        WHY_NOT_FRIEND, WHY_EMAIL_UNCONFIGURED
    )


def test_prefer_line_with_only_line_content_has_no_email_fallback() -> None:
    assert decide("prefer_line", email_content=False) == Plan(("line",), None)


def test_prefer_line_with_only_email_content_to_a_non_friend() -> None:
    assert decide("prefer_line", "no_id", line_content=False) == Plan(("email",))


def test_prefer_line_without_any_content_is_unroutable() -> None:
    assert decide("prefer_line", line_content=False, email_content=False) == nowhere(
        WHY_NO_LINE_CONTENT, WHY_NO_EMAIL_CONTENT
    )


# both


@pytest.mark.parametrize(
    ("line", "email", "expected"),
    [
        ("friend", "present", Plan(("line", "email"))),
        ("friend", "opted_out", Plan(("line",))),
        ("friend", "absent", Plan(("line",))),
        ("not_friend", "present", Plan(("email",))),
        ("opted_out", "present", Plan(("email",))),
        ("no_id", "present", Plan(("email",))),
        ("not_friend", "opted_out", nowhere(WHY_NOT_FRIEND, WHY_EMAIL_OPT_OUT)),
        ("opted_out", "absent", nowhere(WHY_LINE_OPT_OUT, WHY_NO_EMAIL)),
        ("no_id", "absent", nowhere(WHY_NO_LINE_ID, WHY_NO_EMAIL)),
    ],
)
def test_both_by_reachability(line: str, email: str, expected: Plan | Unroutable) -> None:
    result = decide("both", line, email)
    assert result == expected
    if isinstance(result, Plan):
        assert result.fallback is None


@pytest.mark.parametrize(
    ("configured", "line_content", "email_content", "expected"),
    [
        (ONLY_LINE, True, True, Plan(("line",))),
        (ONLY_EMAIL, True, True, Plan(("email",))),
        (NONE, True, True, nowhere(WHY_LINE_UNCONFIGURED, WHY_EMAIL_UNCONFIGURED)),
        (ALL, True, False, Plan(("line",))),
        # Without LINE messages, LINE carries text derived from the email.
        (ALL, False, True, Plan(("line", "email"))),
        (ALL, False, False, nowhere(WHY_NO_LINE_CONTENT, WHY_NO_EMAIL_CONTENT)),
    ],
)
def test_both_by_configuration_and_content(
    configured: frozenset[str],
    line_content: bool,
    email_content: bool,
    expected: Plan | Unroutable,
) -> None:
    result = decide(
        "both", line_content=line_content, email_content=email_content, configured=configured
    )
    assert result == expected


# line_only


@pytest.mark.parametrize(
    ("line", "email", "configured", "line_content", "expected"),
    [
        ("friend", "present", ALL, True, Plan(("line",))),
        ("friend", "absent", ONLY_LINE, True, Plan(("line",))),
        ("not_friend", "present", ALL, True, Unroutable(WHY_NOT_FRIEND)),
        ("opted_out", "present", ALL, True, Unroutable(WHY_LINE_OPT_OUT)),
        ("no_id", "present", ALL, True, Unroutable(WHY_NO_LINE_ID)),
        ("friend", "present", ONLY_EMAIL, True, Unroutable(WHY_LINE_UNCONFIGURED)),
        ("friend", "present", ALL, False, Unroutable(WHY_NO_LINE_CONTENT)),
    ],
)
def test_line_only(
    line: str,
    email: str,
    configured: frozenset[str],
    line_content: bool,
    expected: Plan | Unroutable,
) -> None:
    # No LINE content means neither LINE messages nor an email to derive them from.
    result = decide(
        "line_only",
        line,
        email,
        line_content=line_content,
        email_content=line_content,
        configured=configured,
    )
    assert result == expected


def test_line_only_never_falls_back_to_email() -> None:
    result = decide("line_only", "friend", "present")
    assert isinstance(result, Plan)
    assert result.fallback is None


# email_only


@pytest.mark.parametrize(
    ("line", "email", "configured", "email_content", "expected"),
    [
        ("friend", "present", ALL, True, Plan(("email",))),
        ("no_id", "present", ONLY_EMAIL, True, Plan(("email",))),
        ("friend", "opted_out", ALL, True, Unroutable(WHY_EMAIL_OPT_OUT)),
        ("friend", "absent", ALL, True, Unroutable(WHY_NO_EMAIL)),
        ("friend", "present", ONLY_LINE, True, Unroutable(WHY_EMAIL_UNCONFIGURED)),
        ("friend", "present", ALL, False, Unroutable(WHY_NO_EMAIL_CONTENT)),
    ],
)
def test_email_only(
    line: str,
    email: str,
    configured: frozenset[str],
    email_content: bool,
    expected: Plan | Unroutable,
) -> None:
    result = decide("email_only", line, email, email_content=email_content, configured=configured)
    assert result == expected


# precedence of reasons: the router's configuration first, then the recipient, then content


def test_unconfigured_channel_is_reported_before_the_recipient_facts() -> None:
    assert decide("line_only", "no_id", configured=ONLY_EMAIL) == Unroutable(WHY_LINE_UNCONFIGURED)
    assert decide("email_only", email="absent", configured=ONLY_LINE) == Unroutable(
        WHY_EMAIL_UNCONFIGURED
    )


def test_recipient_facts_are_reported_before_missing_content() -> None:
    assert decide("line_only", "not_friend", line_content=False) == Unroutable(WHY_NOT_FRIEND)
    assert decide("email_only", email="opted_out", email_content=False) == Unroutable(
        WHY_EMAIL_OPT_OUT
    )


# every combination: what a plan may contain


ROUTES: tuple[Route, ...] = ("prefer_line", "both", "line_only", "email_only")
CONFIGURATIONS = (ALL, ONLY_LINE, ONLY_EMAIL, NONE)


@pytest.mark.parametrize("route", ROUTES)
def test_every_combination_plans_only_usable_channels(route: Route) -> None:
    combos = itertools.product(
        LINE_STATES, EMAIL_STATES, (True, False), (True, False), CONFIGURATIONS
    )
    for line, email, line_content, email_content, configured in combos:
        r = reach(line, email)
        usable = {
            "line": "line" in configured and r.line_reachable and (line_content or email_content),
            "email": "email" in configured and r.email_reachable and email_content,
        }
        allowed = {
            "prefer_line": ("line", "email"),
            "both": ("line", "email"),
            "line_only": ("line",),
            "email_only": ("email",),
        }[route]
        result = plan(
            route,
            r,
            has_line_content=line_content,
            has_email_content=email_content,
            configured=configured,
        )
        case = (route, line, email, line_content, email_content, sorted(configured))
        if not any(usable[c] for c in allowed):
            assert isinstance(result, Unroutable), case
            assert result.reason, case
            continue
        assert isinstance(result, Plan), case
        assert result.primary, case
        assert len(set(result.primary)) == len(result.primary), case
        assert all(usable[c] and c in allowed for c in result.primary), case
        if route == "both":
            assert result.primary == tuple(c for c in allowed if usable[c]), case
        else:
            assert len(result.primary) == 1, case
        if route == "prefer_line":
            assert result.primary == (("line",) if usable["line"] else ("email",)), case
            expected_fallback = "email" if usable["line"] and usable["email"] else None
            assert result.fallback == expected_fallback, case
        else:
            assert result.fallback is None, case


def test_reach_properties() -> None:
    assert reach("friend").line_reachable
    assert not reach("not_friend").line_reachable
    assert not reach("opted_out").line_reachable
    assert not reach("no_id").line_reachable
    assert reach(email="present").email_reachable
    assert not reach(email="opted_out").email_reachable
    assert not reach(email="absent").email_reachable


# email addresses


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("taro@example.jp", "taro@example.jp"),
        ("Taro.Yamada@Example.JP", "Taro.Yamada@example.jp"),  # only the domain is lower-cased
        ("  taro@example.jp\n", "taro@example.jp"),
        ("user+tag@example.co.jp", "user+tag@example.co.jp"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("!#$%&'*+/=?^_`{|}~-@example.com", "!#$%&'*+/=?^_`{|}~-@example.com"),
        ('"john doe"@example.com', '"john doe"@example.com'),
        ('"a\\"b"@Example.COM', '"a\\"b"@example.com'),
        ('"a@b"@example.com', '"a@b"@example.com'),
        ('""@example.com', '""@example.com'),
        ("user@[192.168.0.1]", "user@[192.168.0.1]"),
        ("user@[IPv6:2001:db8::1]", "user@[ipv6:2001:db8::1]"),
        ("x@y.z", "x@y.z"),
        ("user@xn--r8jz45g.jp", "user@xn--r8jz45g.jp"),
    ],
)
def test_valid_email_addresses(given: str, normalised: str) -> None:
    assert normalize_email(given) == normalised


@pytest.mark.parametrize(
    "given",
    [
        "",
        "taro",
        "@example.jp",
        "taro@",
        "taro@@example.jp",
        "john doe@example.com",
        "taro@exa mple.jp",
        "taro\n@example.jp",
        ".taro@example.jp",
        "taro.@example.jp",
        "ta..ro@example.jp",
        "taro@example.jp.",
        "taro@example..jp",
        '"unterminated@example.com',
        '"a"b@example.com',
        'a"b"@example.com',
        "user@[1.2.3.4",
        "user@[a[b]",
        "タロウ@example.jp",
        "taro@例え.jp",
        "taro@example.jp (Taro)",
        "Taro <taro@example.jp>",
    ],
)
def test_invalid_email_addresses(given: str) -> None:
    with pytest.raises(InvalidIdentifier, match="not an email address"):
        normalize_email(given)


@pytest.mark.parametrize("given", ["taro@localhost", "taro@jp", '"a b"@intranet'])
def test_email_domain_needs_a_dot(given: str) -> None:
    with pytest.raises(InvalidIdentifier, match="at least one dot"):
        normalize_email(given)


def test_email_local_part_is_at_most_64_characters() -> None:
    assert normalize_email("a" * 64 + "@example.com") == "a" * 64 + "@example.com"
    with pytest.raises(InvalidIdentifier, match="64"):
        normalize_email("a" * 65 + "@example.com")
    quoted_64 = '"' + "a" * 62 + '"'
    assert normalize_email(quoted_64 + "@example.com") == quoted_64 + "@example.com"
    with pytest.raises(InvalidIdentifier, match="64"):
        normalize_email('"' + "a" * 63 + '"@example.com')


def test_email_is_at_most_254_characters() -> None:
    longest = "a@" + "b" * 249 + ".jp"
    assert len(longest) == 254
    assert normalize_email(longest) == longest
    with pytest.raises(InvalidIdentifier, match="254"):
        normalize_email("a@" + "b" * 250 + ".jp")
    # surrounding white space is trimmed before the length is counted
    assert normalize_email(f"  {longest}  ") == longest


def test_email_domain_literal_may_contain_an_at_sign() -> None:
    assert normalize_email("user@[a@b]") == "user@[a@b]"


def test_email_hash_ignores_case_and_surrounding_space() -> None:
    expected = hashlib.sha256(b"taro.yamada@example.jp").digest()
    assert email_sha256("Taro.Yamada@Example.JP") == expected
    assert email_sha256(" taro.yamada@example.jp ") == expected


# phone numbers


@pytest.mark.parametrize(
    ("given", "e164"),
    [
        ("090-1234-5678", "+819012345678"),
        ("09012345678", "+819012345678"),
        ("080 1234 5678", "+818012345678"),
        ("070-1234-5678", "+817012345678"),
        ("03-1234-5678", "+81312345678"),
        ("(03) 1234 5678", "+81312345678"),
        ("06-6123-4567", "+81661234567"),
        ("0120-123-456", "+81120123456"),
        ("+81 90 1234 5678", "+819012345678"),
        ("+81-3-1234-5678", "+81312345678"),
        ("０９０－１２３４－５６７８", "+819012345678"),  # noqa: RUF001 - full-width input
        ("+1 650 253 0000", "+16502530000"),
    ],
)
def test_phone_numbers_are_normalised_to_e164(given: str, e164: str) -> None:
    assert normalize_phone(given, "JP") == e164


def test_national_phone_numbers_are_read_in_the_default_region() -> None:
    assert normalize_phone("650-253-0000", "US") == "+16502530000"
    with pytest.raises(InvalidIdentifier, match="region JP"):
        normalize_phone("650-253-0000", "JP")
    with pytest.raises(InvalidIdentifier, match="region US"):
        normalize_phone("090-1234-5678", "US")


@pytest.mark.parametrize(
    "given",
    [
        "12345",
        "090-1234-567",
        "090-1234-56789",
        "1234-5678",
        "00-0000-0000",
        "+81 3 1234 5678 999",
    ],
)
def test_invalid_phone_numbers(given: str) -> None:
    with pytest.raises(InvalidIdentifier, match="not a valid phone number"):
        normalize_phone(given, "JP")


@pytest.mark.parametrize("given", ["", "abc", "+999 1234", "電話"])
def test_text_that_is_no_phone_number(given: str) -> None:
    with pytest.raises(InvalidIdentifier, match="not a phone number"):
        normalize_phone(given, "JP")


@pytest.mark.parametrize(
    "given", ["03-1234-5678 ext. 12", "090-1234-5678#12", "+81 3 1234 5678 x9"]
)
def test_phone_numbers_with_extensions_are_refused_not_truncated(given: str) -> None:
    with pytest.raises(InvalidIdentifier, match="extension"):
        normalize_phone(given, "JP")


def test_phone_hash_is_of_the_e164_form() -> None:
    assert phone_sha256("+819012345678") == hashlib.sha256(b"+819012345678").digest()


# LINE user IDs


def test_valid_line_user_id_is_returned_unchanged() -> None:
    assert check_line_user_id(LINE_ID) == LINE_ID
    assert check_line_user_id("U" + "f" * 32) == "U" + "f" * 32


@pytest.mark.parametrize(
    "given",
    [
        "",
        "U",
        LINE_ID[:-1],  # 31 hex digits
        LINE_ID + "0",  # 33 hex digits
        LINE_ID.upper(),
        "u" + LINE_ID[1:],
        "C" + LINE_ID[1:],  # a group ID
        "R" + LINE_ID[1:],  # a room ID
        "U" + "g" * 32,
        LINE_ID + "\n",
        " " + LINE_ID,
        LINE_ID[:10] + " " + LINE_ID[11:],
    ],
)
def test_invalid_line_user_ids(given: str) -> None:
    with pytest.raises(InvalidIdentifier, match="32 lower-case hex digits"):
        check_line_user_id(given)


def _reach(**overrides: object) -> Reach:
    values: dict[str, object] = {
        "member_id": "m",
        "line_user_id": None,
        "line_friend": False,
        "line_opt_out": False,
        "email": "m@example.jp",
        "email_opt_out": False,
        "phone": "+818012345678",
    }
    values.update(overrides)
    return Reach(**values)  # type: ignore[arg-type]


ALL = frozenset({"line", "email", "line_notification"})


def test_notification_first_needs_a_transactional_intent() -> None:
    decision = plan(
        "notification_first", _reach(), has_line_content=True, has_email_content=True,
        configured=ALL, kind="promotional",
    )  # fmt: skip
    assert isinstance(decision, Unroutable) and "transactional" in decision.reason


def test_notification_first_uses_the_phone_then_email() -> None:
    decision = plan(
        "notification_first", _reach(), has_line_content=True, has_email_content=True,
        configured=ALL, kind="transactional",
    )  # fmt: skip
    assert decision == Plan(("line_notification",), "email")
    no_phone = plan(
        "notification_first", _reach(phone=None), has_line_content=True,
        has_email_content=True, configured=ALL, kind="transactional",
    )  # fmt: skip
    assert no_phone == Plan(("email",))


def test_notification_first_refused_when_not_enabled() -> None:
    decision = plan(
        "notification_first", _reach(email=None), has_line_content=True,
        has_email_content=True, configured=frozenset({"line", "email"}), kind="transactional",
    )  # fmt: skip
    assert isinstance(decision, Unroutable)
    assert "notification messages are not enabled" in decision.reason


def test_both_reaches_a_non_friend_by_phone_only_when_transactional() -> None:
    args = {"has_line_content": True, "has_email_content": True, "configured": ALL}
    assert plan("both", _reach(), kind="transactional", **args) == Plan(  # type: ignore[arg-type]
        ("line_notification", "email")
    )
    assert plan("both", _reach(), kind="promotional", **args) == Plan(("email",))  # type: ignore[arg-type]
    friend = _reach(line_user_id="U" + "a" * 32, line_friend=True)
    assert plan("both", friend, kind="transactional", **args) == Plan(("line", "email"))  # type: ignore[arg-type]
