"""Where a delivery made inside a send group takes its state from: its group.

A multicast group's outcome is recorded once, on the group row; its deliveries are created
'grouped' and are not written again unless they leave the group (found unreachable at the
claim, named by a 400, failed for good with the whole group: each then needs its own
fallback). Every statement that creates deliveries takes its initial status from
`initial_status`, and every reader of a delivery's state derives it with `status`/`field`.
"""

from __future__ import annotations

GROUPED = "grouped"


def initial_status(group_id: str) -> str:
    """SQL: the status a new delivery starts in, given the SQL of its multicast group's id
    (NULL: sent alone, or in a narrowcast, which records per delivery)."""
    return f"CASE WHEN {group_id} IS NULL THEN 'pending' ELSE '{GROUPED}' END"


def status(delivery: str, group: str) -> str:
    """SQL: a delivery's status; a grouped one's is its group's (the group statuses it can
    have, pending, claimed, sent, cancelled and uncertain, are delivery statuses too)."""
    return (
        f"CASE WHEN {delivery}.status = '{GROUPED}' THEN {group}.status ELSE {delivery}.status END"
    )


def field(delivery: str, group: str, column: str) -> str:
    """SQL: a column a grouped delivery takes from its group (attempts, last_error,
    provider_ref, sent_at, next_attempt_at, updated_at)."""
    return (
        f"CASE WHEN {delivery}.status = '{GROUPED}' THEN {group}.{column}"
        f" ELSE {delivery}.{column} END"
    )
