"""Journey definitions on their own: durations, every validation rule (with the field path it
names), template errors naming the variable, journey files with file and line, and the
example files shipped in config/journeys."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from router.config import ConfigError, default_journeys_directory, load_config
from router.journeys.definition import Journey
from router.journeys.durations import DurationError, parse_duration
from router.journeys.files import JourneyFileError, locate, read_directory, read_file
from router.journeys.templates import TemplateError, render
from router.journeys.validation import validate

ROOT = Path(__file__).resolve().parent.parent
EMAIL = {"subject": "Hello", "text": "Hi"}


def journey(**fields: Any) -> Journey:
    body: dict[str, Any] = {
        "name": "Test",
        "trigger": {"event": "cart_updated"},
        "steps": [{"wait": "PT1H"}, {"send": {"email": EMAIL}}],
    }
    body.update(fields)
    return msgspec.convert(body, Journey)


def errors(pools: list[str] | None = None, **fields: Any) -> dict[str, str]:
    return {e.field: e.message for e in validate(journey(**fields), known_pools=pools)}


def with_steps(*steps: dict[str, Any], **fields: Any) -> dict[str, str]:
    return errors(steps=list(steps), **fields)


# durations


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("PT1S", timedelta(seconds=1)),
        ("PT90M", timedelta(minutes=90)),
        ("PT1H", timedelta(hours=1)),
        ("P1D", timedelta(days=1)),
        ("P2W", timedelta(weeks=2)),
        ("P1DT12H30M5S", timedelta(days=1, hours=12, minutes=30, seconds=5)),
        ("PT0S", timedelta(0)),
    ],
)
def test_durations_down_to_seconds(text: str, length: timedelta) -> None:
    assert parse_duration(text) == length


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("P1M", "years and months have no fixed length"),
        ("P1Y", "years and months have no fixed length"),
        ("PT0.5H", "whole numbers only"),
        ("PT1,5H", "whole numbers only"),
        ("pt1h", "capitals (PT1H)"),
        ("1h", "starts with P"),
        ("P", "names no length"),
        ("PT", "names no length"),
        ("P1DT", "names no length"),
        ("-PT1H", "starts with P"),
        ("P-1D", "no sign"),
        ("PT1S1M", "units in the order"),
        ("", "give an ISO 8601 duration"),
        ("P99999999999D", "longer than any wait"),
    ],
)
def test_bad_durations_say_why(text: str, reason: str) -> None:
    with pytest.raises(DurationError, match=None) as raised:
        parse_duration(text)
    assert reason in str(raised.value)


# validation


def test_the_issues_example_is_valid() -> None:
    body = {
        "name": "Cart abandonment",
        "trigger": {"event": "cart_updated"},
        "exit_on": ["order_placed"],
        "reentry": "after_exit",
        "quiet_hours": {"start": "21:00", "end": "08:00", "time_zone": "Asia/Tokyo"},
        "steps": [
            {"wait": "PT1H"},
            {
                "send": {
                    "route": "prefer_line",
                    "kind": "promotional",
                    "email": {
                        "subject": "Items are waiting in your cart",
                        "text": "{{ event.cart_url }}",
                    },
                }
            },
            {"wait": "P1D"},
            {"send": {"email": {"subject": "Still thinking?", "text": "{{ event.cart_url }}"}}},
        ],
    }
    assert validate(msgspec.convert(body, Journey), known_pools=[]) == []


def test_a_step_is_exactly_one_kind() -> None:
    found = with_steps({}, {"wait": "PT1H", "exit": True}, {"exit": False}, {"exit": " "})
    assert "give one" in found["steps[0]"]
    assert "has wait and exit" in found["steps[1]"]
    assert "give true" in found["steps[2].exit"]
    assert "give true" in found["steps[3].exit"]


def test_then_and_else_only_with_if_and_if_needs_one() -> None:
    found = with_steps(
        {"wait": "PT1H", "then": [{"exit": True}], "else": [{"wait": "PT0S"}]},
        {"if": {"reachable_on_line": True}},
        {"if": {"event_since_entry": "x", "attribute": "plan"}, "then": [{"exit": True}]},
        {"if": {"reachable_on_line": False, "equals": 1}, "else": [{"exit": True}]},
    )
    assert "only with if" in found["steps[0].then"]
    assert "only with if" in found["steps[0].else"]
    assert "at least one second" in found["steps[0].else[0].wait"]  # still checked
    assert "then or else" in found["steps[1].if"]
    assert "exactly one of event_since_entry" in found["steps[2].if"]
    assert "only with attribute" in found["steps[3].if.equals"]


def test_nested_steps_are_named_by_their_path() -> None:
    found = with_steps(
        {"if": {"attribute": "plan", "equals": "gold"}, "then": [{"wait": "PT1H"}]},
        {"wait": "PT1H"},
        {
            "if": {"event_since_entry": "order_placed"},
            "then": [{"wait": "PT0S"}],
            "else": [{"if": {"reachable_on_line": True}, "then": [{"wait": "P1M"}]}],
        },
    )
    assert set(found) == {"steps[2].then[0].wait", "steps[2].else[0].then[0].wait"}
    assert "at least one second" in found["steps[2].then[0].wait"]
    assert "months" in found["steps[2].else[0].then[0].wait"]


def test_waits_of_every_form() -> None:
    found = with_steps(
        {"wait": {"duration": "PT0S"}},
        {"wait": {"until": "25:00", "time_zone": "Mars/Olympus"}},
        {"wait": {"until": "09:00", "time_zone": "Asia/Tokyo"}},  # valid
        {"wait": {"before": "P3D", "of": "member.trial_ends_at"}},  # valid
        {"wait": {"after": "P1D", "of": "event.shipped_at"}},  # valid: the trigger is an event
        {"wait": {"before": "P3D", "after": "P1D", "of": "member.x"}},
        {"wait": {"of": "member.trial_ends_at"}},
        {"wait": {"before": "P3D"}},
        {"wait": {"before": "P3D", "of": "trial_ends_at"}},
        {"wait": {"duration": "PT1H", "until": "09:00"}},
        {"wait": {"duration": "PT1H", "time_zone": "UTC"}},
        {"wait": {}},
        {"wait": "P1Y"},
    )
    assert "at least one second" in found["steps[0].wait.duration"]
    assert "not a time of day" in found["steps[1].wait.until"]
    assert "not an IANA time zone" in found["steps[1].wait.time_zone"]
    assert not any(f.startswith(("steps[2]", "steps[3]", "steps[4]")) for f in found)
    assert "not both" in found["steps[5].wait"]
    assert "goes with before or after" in found["steps[6].wait"]
    assert "give the date" in found["steps[7].wait.of"]
    assert "member.<attribute>" in found["steps[8].wait.of"]
    assert "exactly one of duration, until" in found["steps[9].wait"]
    assert "only with until" in found["steps[10].wait.time_zone"]
    assert "exactly one of duration, until" in found["steps[11].wait"]
    assert "months" in found["steps[12].wait"]


def test_event_dates_need_an_event_trigger() -> None:
    found = with_steps(
        {"wait": {"before": "P1D", "of": "event.starts_at"}},
        {"send": {"email": EMAIL}},
        trigger={"attribute": "registered_at"},
    )
    assert "not started by an event" in found["steps[0].wait.of"]


def test_quiet_hours_and_max_lateness() -> None:
    found = errors(
        quiet_hours={"start": "24:00", "end": "08:60", "time_zone": "Tokyo"},
        max_lateness="1 hour",
    )
    assert "not a time of day" in found["quiet_hours.start"]
    assert "not a time of day" in found["quiet_hours.end"]
    assert "not an IANA time zone" in found["quiet_hours.time_zone"]
    assert "starts with P" in found["max_lateness"]
    same = errors(quiet_hours={"start": "21:00", "end": "21:00"})
    assert "same time" in same["quiet_hours"]
    assert errors(quiet_hours=None) == {}


def test_trigger_is_one_kind_and_where_only_with_event() -> None:
    assert "exactly one of event" in errors(trigger={})["trigger"]
    both = errors(trigger={"event": "a", "line_follow": True})["trigger"]
    assert "has event and line_follow" in both
    found = errors(trigger={"audience": "0190c6c4", "where": {"plan": "gold"}})
    assert "only with event" in found["trigger.where"]
    assert errors(trigger={"attribute": " "})["trigger.attribute"] == "must not be empty"


def test_a_trigger_that_can_never_match_is_refused() -> None:
    found = errors(exit_on=["order_placed", "cart_updated", "order_placed"])
    assert "every run would end" in found["trigger.event"]
    assert "listed twice" in found["exit_on[2]"]
    reserved = errors(trigger={"event": "router:line_follow"})
    assert "the router's own" in reserved["trigger.event"]


def test_a_send_needs_content_valid_as_an_intents() -> None:
    found = with_steps(
        {"send": {"route": "line_only"}},
        {"send": {"email": {"subject": "S"}}},
        {"send": {"email": {"subject": "S", "text": "T", "from": "not an address"}}},
        {
            "send": {
                "line": {
                    "messages": [
                        {
                            "type": "image",
                            "originalContentUrl": "http://shop.example.jp/a.png",
                            "previewImageUrl": "{{ event.preview_url }}",
                        }
                    ]
                }
            }
        },
    )
    assert "give email content, LINE messages, or both" in found["steps[0].send"]
    assert "give text, html or both" in found["steps[1].send.email"]
    assert "steps[2].send.email.from" in found
    assert "https://" in found["steps[3].send.line.messages[0].originalContentUrl"]
    # a templated string is checked once rendered, when the send is made
    assert "steps[3].send.line.messages[0].previewImageUrl" not in found


def test_templates_compile_with_errors_naming_step_field_and_line() -> None:
    line = {"messages": [{"type": "text", "text": "ok"}, {"type": "text", "text": "{{ 1 +"}]}
    found = with_steps(
        {"wait": "PT1H"},
        {"send": {"email": {"subject": "{% if %}", "text": "fine\n\n{{ event.x }"}}},
        {"send": {"email": {"subject": "S", "html": "<p>{{ member.email }}</p>"}, "line": line}},
    )
    assert found["steps[1].send.email.subject"].startswith("template line 1:")
    assert found["steps[1].send.email.text"].startswith("template line 3:")
    assert found["steps[2].send.line.messages[1].text"].startswith("template line 1:")
    assert "steps[2].send.email.html" not in found


def test_template_names_are_checked() -> None:
    text = (
        "{{ member.member_id }} {{ member.email }} {{ member.phone }} {{ member.line_user_id }}"
        " {{ member.attributes.plan }} {{ member['attributes']['x'] }}\n"
        "{% for item in event.items_list %}{{ item.name }}{{ loop.index }}{% endfor %}\n"
        "{{ member.plan }}\n{{ customer.name }}"
    )
    steps = [{"send": {"email": {"subject": "S", "text": text}}}]
    found = validate(journey(steps=steps), known_pools=None)
    assert [e.field for e in found] == ["steps[0].send.email.text"] * 2
    assert found[0].message.startswith("template line 3: member.plan is not a member field")
    assert "member.attributes.plan" in found[0].message
    assert found[1].message.startswith("template line 4: 'customer' has no value")


def test_event_in_templates_needs_an_event_trigger() -> None:
    send = {"send": {"email": {"subject": "S", "text": "{{ event.cart_url }}"}}}
    found = with_steps(send, trigger={"line_follow": True})
    assert (
        "event.cart_url: this journey is not started by an event"
        in found["steps[0].send.email.text"]
    )


def test_coupon_pools_are_checked_when_known() -> None:
    send = {"send": {"email": {"subject": "S", "text": 'Your code: {{ coupon("welcome") }}'}}}
    assert with_steps(send) == {}  # pools not known: not checked
    assert with_steps(send, pools=["welcome"]) == {}
    found = with_steps(send, pools=["spring"])
    assert 'coupon("welcome"): no coupon pool' in found["steps[0].send.email.text"]
    computed = {"send": {"email": {"subject": "S", "text": "{{ coupon(event.pool) }}"}}}
    assert "one pool name in quotes" in with_steps(computed)["steps[0].send.email.text"]


def test_rendering_names_the_missing_variable_by_its_path() -> None:
    with pytest.raises(TemplateError, match=r"no value for event\.cart_url$"):
        render("{{ event.cart_url }}", member={}, event={"other": 1}, coupons={})
    with pytest.raises(TemplateError, match=r"no value for member\.attributes\.plan$"):
        render("{{ member.attributes.plan }}", member={"attributes": {}}, event={}, coupons={})
    member = {"attributes": {"plan": "gold"}, "email": "a@example.jp"}
    assert render("{{ member.attributes.plan }}", member=member, event={}, coupons={}) == "gold"


# files


def test_the_shipped_journeys_are_valid_and_disabled() -> None:
    files = read_directory(ROOT / "config" / "journeys", known_pools=["welcome"])
    assert {f.journey_id for f in files} == {
        "coupon-after-registration",
        "trial-follow-up",
        "cart-abandonment",
    }
    assert not any(f.journey.enabled for f in files)


def test_a_file_without_enabled_is_disabled(tmp_path: Path) -> None:
    path = tmp_path / "nudge.toml"
    path.write_text('name = "N"\n[trigger]\nline_follow = true\n[[steps]]\nwait = "PT1H"\n')
    assert read_file(path, known_pools=None).journey.enabled is False


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ('name = "N"\n[trigger\nevent = "a"\n', ":2: not valid TOML", "Expected ']'"),
        (
            'name = "N"\n[trigger]\nevent = "a"\n\n[[steps]]\nwait = "PT1H"\n\n[[steps]]\n'
            '[steps.send.email]\nsubject = "S"\ntext = "{{ x"\n',
            ":11: steps[1].send.email.text: template line 1",
            "",
        ),
        (
            'name = "N"\n[trigger]\nevent = "a"\n[[steps]]\nwait = "PT1H"\n[[steps]]\n'
            'wiat = "PT1H"\n',
            ":6: steps[1]: Object contains unknown field `wiat`",
            "",
        ),
        (
            'name = "N"\nexit_on = ["a"]\n[trigger]\nevent = "a"\n[[steps]]\nwait = "PT0S"\n',
            ":4: trigger.event: 'a' is also in exit_on",
            "(and 1 more)",
        ),
        (
            'name = "N"\n[trigger]\nevent = "a"\n[[steps]]\n[steps.if]\n'
            'event_since_entry = "b"\n[[steps.then]]\nexit = true\n[[steps.then]]\n'
            'wait = { duration = "P1M" }\n',
            ":10: steps[0].then[1].wait.duration: 'P1M'",
            "",
        ),
    ],
)
def test_a_bad_file_is_named_with_its_line(
    tmp_path: Path, text: str, where: str, reason: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(JourneyFileError) as raised:
        read_file(path, known_pools=None)
    message = str(raised.value)
    assert message.startswith(f"{path}{where}"), message
    assert reason in message


def test_a_file_with_nul_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nul.toml"
    path.write_text('name = "N\\u0000"\n[trigger]\nline_follow = true\n[[steps]]\nexit = true\n')
    with pytest.raises(JourneyFileError, match=r"U\+0000"):
        read_file(path, known_pools=None)


def test_a_file_name_must_be_a_journey_id(tmp_path: Path) -> None:
    path = tmp_path / "Cart Abandonment.toml"
    path.write_text('name = "N"\n')
    with pytest.raises(JourneyFileError, match="the file's name is the journey's id"):
        read_file(path, known_pools=None)


def test_locate_finds_keys_in_tables_and_arrays_of_tables() -> None:
    text = (ROOT / "config" / "journeys" / "coupon-after-registration.toml").read_text()
    lines = text.splitlines()

    def at(field: str) -> str:
        line = locate(text, field)
        assert line is not None, field
        return lines[line - 1]

    assert at("trigger.attribute").startswith("attribute =")
    assert at("steps[0].wait").startswith("wait =")
    assert at("steps[1].then[0].exit").startswith("exit =")
    assert at("steps[2].send.email.subject").startswith("subject =")
    assert at("steps[2].send.line.messages[0].text").startswith('text = "Thank you')


def test_the_journeys_directory_is_found_from_the_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "router.toml"
    config_file.write_text("")
    assert default_journeys_directory(config_file) == ""  # no journeys/ next to it
    (tmp_path / "journeys").mkdir()
    assert default_journeys_directory(config_file) == str(tmp_path / "journeys")
    (tmp_path / "flows").mkdir()
    config_file.write_text('[journeys]\ndirectory = "flows"\n')
    assert load_config(config_file, {}).journeys.directory == str(tmp_path / "flows")
    config_file.write_text('[journeys]\ndirectory = "missing"\n')
    with pytest.raises(ConfigError, match=r"\[journeys\] directory 'missing' is not a directory"):
        load_config(config_file, {})
