"""The simulator as a foreground process: ``router line-simulator`` and benchmarks run this.

A process on its own port is how the quick start and ``bench/`` use the simulator: the
router under test talks to it as to LINE, and the control API (``/__simulator/``) steers
it.  It prints its base URL once listening, so a parent that asked for port 0 learns the
port, and stops cleanly on SIGINT or SIGTERM.  Besides its first channel it serves any
further channels given as ``NAME:TOKEN[:SECRET]`` (``--channel``), each at the same URL.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Sequence

import msgspec

from linesim.app import LineSimulator
from linesim.limits import DEFAULT_MULTICAST_RATE, DEFAULT_PUSH_RATE


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6) into host and port."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {listen!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port out of range in {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


class ChannelSpec(msgspec.Struct, frozen=True):
    """A further channel to serve: its name, access token and webhook secret."""

    name: str
    access_token: str
    channel_secret: str | None = None


def parse_channel(text: str) -> ChannelSpec:
    """``NAME:TOKEN`` or ``NAME:TOKEN:SECRET`` as a channel to serve."""
    parts = text.split(":")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise ValueError(f"expected NAME:TOKEN or NAME:TOKEN:SECRET, got {len(parts)} part(s)")
    return ChannelSpec(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def _fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop roughly doubles the requests per second a single core can answer."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve_until_signalled(simulator: LineSimulator, host: str, port: int) -> None:
    url = await simulator.start(host, port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stopping.set)
            handled.append(signum)
        except (NotImplementedError, RuntimeError):
            pass  # no loop signal support here: Ctrl-C still raises KeyboardInterrupt
    sys.stdout.write(f"LINE Messaging API simulator listening on {url}\n")
    sys.stdout.flush()
    try:
        await stopping.wait()
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        await simulator.stop()


def run(
    listen: str,
    access_tokens: list[str],
    *,
    push_rate_per_second: int = DEFAULT_PUSH_RATE,
    multicast_rate_per_second: int = DEFAULT_MULTICAST_RATE,
    monthly_quota: int | None = None,
    channel_secret: str | None = None,
    webhook_url: str | None = None,
    fault_rates: dict[str, float] | None = None,
    fault_seed: int = 0,
    late_seconds: float = 5.0,
    channels: Sequence[ChannelSpec] = (),
) -> None:
    """Serve on ``listen`` (``HOST:PORT``) until SIGINT or SIGTERM.

    Prints one line with the base URL once listening, so a parent process
    started with port 0 can learn the port.  Webhooks can also be wired up
    later through ``POST /__simulator/webhook``. ``fault_rates`` makes send requests fail or
    answer late at random (``{"500": 0.2, "429": 0.1, "timeout": 0.05}``, see FaultRates).
    ``channels`` are served besides the first (named ``default``), each at the same URL under
    its own token; ``?channel=NAME`` points a control request at one of them.
    """
    host, port = parse_listen(listen)
    simulator = LineSimulator(
        access_tokens=access_tokens,
        push_rate_per_second=push_rate_per_second,
        multicast_rate_per_second=multicast_rate_per_second,
        monthly_quota=monthly_quota,
        channel_secret=channel_secret,
        webhook_url=webhook_url,
    )
    for spec in channels:
        simulator.add_channel(
            spec.name, access_tokens=[spec.access_token], channel_secret=spec.channel_secret
        )
    if fault_rates:
        simulator.set_fault_rates(fault_rates, seed=fault_seed, late_seconds=late_seconds)
    with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
        runner.run(_serve_until_signalled(simulator, host, port))
