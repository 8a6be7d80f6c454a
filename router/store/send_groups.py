"""Send groups: deliveries of one content sent to many recipients in one provider request
(LINE multicast). This module forms them at acceptance; claiming, sending and splitting
them is the dispatcher's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from uuid import UUID, uuid4

from router.store.intents import DeliveryRow, SendGroupRow


def deal(
    deliveries: Sequence[DeliveryRow],
    content_of: Mapping[UUID, bytes],
    group_sizes: Mapping[str, int],
) -> tuple[list[DeliveryRow], list[SendGroupRow]]:
    """Put deliveries that share channel, content and send time into send groups.

    Only channels in `group_sizes` (the most recipients one request may name) are grouped.
    Deliveries are dealt round-robin into as few groups as fit, of near-equal size (1,001
    recipients: 334 + 334 + 333, not 500 + 500 + 1); a content only one delivery has is sent
    on its own. Each delivery's `send_group_id` is set in place."""
    alike: dict[tuple[str, bytes, datetime | None], list[DeliveryRow]] = {}
    for d in deliveries:
        if group_sizes.get(d.channel, 1) > 1:
            alike.setdefault((d.channel, content_of[d.intent_id], d.send_at), []).append(d)
    groups: list[SendGroupRow] = []
    for (channel, content_id, send_at), members in alike.items():
        if len(members) < 2:
            continue
        size = group_sizes[channel]
        ids = [uuid4() for _ in range(-(-len(members) // size))]
        for n, d in enumerate(members):
            d.send_group_id = ids[n % len(ids)]
        groups.extend(
            SendGroupRow(id=i, channel=channel, content_id=content_id, send_at=send_at) for i in ids
        )
    return list(deliveries), groups
