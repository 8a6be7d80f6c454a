"""What `router campaigns status` and `router journeys status` print: progress, one line a
figure, aligned for a terminal."""

from __future__ import annotations

from router.campaigns import CampaignView
from router.journeys.progress import JourneyProgress


def print_campaign(found: CampaignView) -> None:
    print(
        f"{found.status}: {found.targeted:,} members targeted, {found.accepted:,} intents,"
        f" {found.rejected:,} not reachable"
    )
    if found.error is not None:
        print(f"  {found.error}")
    for count in found.deliveries:
        batched = f"  in {count.multicasts:,} multicasts" if count.multicasts else ""
        print(f"  {count.channel:<18} {count.status:<10} {count.deliveries:>10,}{batched}")


def print_journey(found: JourneyProgress) -> None:
    print(
        f"{found.entered:,} entered, {found.active:,} active, {found.completed:,} completed,"
        f" {found.exited_by_goal:,} exited by goal ({found.conversion_rate:.1%}),"
        f" {found.exited:,} exited, {found.ended:,} ended"
    )
    for step in found.steps:
        sent = ", ".join(f"{n:,} by {channel}" for channel, n in sorted(step.sent.items()))
        print(
            f"  {step.step:<24} {step.type:<5} waiting {step.waiting:>8,}"
            + (f"  sent {sent}" if sent else "")
            + (f"  deferred {step.deferred:,}" if step.deferred else "")
        )
        for what, reasons in (("skipped", step.skipped), ("failed", step.failed)):
            for reason, n in sorted(reasons.items()):
                print(f"    {what} {n:,}: {reason}")
