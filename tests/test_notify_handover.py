"""An HTTP request's point of no return (monitor/notify/handover.py), through ``requests`` as Apprise sends."""

from __future__ import annotations

import asyncio

import pytest
import requests

from monitor.notify import handover
from tests.servers.common import until
from tests.servers.push_receiver import PushReceiver

pytestmark = pytest.mark.servers
handover.install()  # as monitor.notify.apprise does


def post(url: str, armed: handover.Handover | None) -> int:
    """In a thread, as Apprise's plugins do (the context variable says whether this send is armed)."""
    handover.ARMED.set(armed)
    return requests.post(url, json={"message": "hola"}, timeout=10).status_code


async def test_the_last_byte_goes_out_on_the_loop_with_its_record_before_the_answer_is_read() -> None:
    rx = PushReceiver()
    await rx.start()
    seen: list[int] = []
    try:
        armed = handover.Handover(asyncio.get_running_loop(), lambda: seen.append(len(rx.received)), 10.0)
        assert await asyncio.to_thread(post, f"http://127.0.0.1:{rx.port}/one", armed) == 200
        # recorded once, on the loop, before the receiver (on the same loop) could even read the request
        assert seen == [0] and armed.handed == 1
        assert [p.path for p in rx.received] == ["/one"] and rx.received[0].doc == {"message": "hola"}
        assert await asyncio.to_thread(post, f"http://127.0.0.1:{rx.port}/plain", None) == 200  # unarmed
        assert seen == [0] and [p.path for p in rx.received] == ["/one", "/plain"]
    finally:
        await rx.stop()


async def test_an_abandoned_send_never_sends_its_last_byte() -> None:
    """The worker was cancelled (shutdown) while Apprise's thread wrote: the receiver never gets a whole
    request, so the row released as not sent is not a repeat when it goes out again."""
    rx = PushReceiver()
    await rx.start()
    try:
        armed = handover.Handover(asyncio.get_running_loop(), lambda: None, 10.0)
        armed.active = False
        with pytest.raises(requests.ConnectionError):
            await asyncio.to_thread(post, f"http://127.0.0.1:{rx.port}/abandoned", armed)
        assert armed.handed == 0
        assert await asyncio.to_thread(post, f"http://127.0.0.1:{rx.port}/next", None) == 200
        await until(lambda: len(rx.received) >= 1, what="the next request")
        assert [p.path for p in rx.received] == ["/next"]
    finally:
        await rx.stop()


async def test_a_loop_that_does_not_answer_in_time_sends_it_from_the_thread_unrecorded() -> None:
    """At least once, never lost: the byte goes out anyway, and the row stays "sending"."""
    rx = PushReceiver()
    await rx.start()
    idle = asyncio.new_event_loop()  # never runs: nobody takes the hand-over
    recorded: list[bool] = []
    try:
        armed = handover.Handover(idle, lambda: recorded.append(True), 0.2)
        assert await asyncio.to_thread(post, f"http://127.0.0.1:{rx.port}/late", armed) == 200
        assert recorded == [] and armed.handed == 0 and [p.path for p in rx.received] == ["/late"]
    finally:
        idle.close()
        await rx.stop()


async def test_a_refused_connection_is_no_hand_over() -> None:
    """Nothing went out: the row is retried as before (the worker's "unreachable")."""
    rx = PushReceiver()  # its port, never started: nothing listens there
    armed = handover.Handover(asyncio.get_running_loop(), lambda: None, 10.0)
    with pytest.raises(requests.ConnectionError):
        await asyncio.to_thread(post, f"http://127.0.0.1:{rx.port}/nobody", armed)
    assert armed.handed == 0


async def test_a_request_sent_on_the_loop_itself_is_handed_over_without_waiting_for_it() -> None:
    """A plugin that sent from the event loop's own thread would otherwise wait for itself."""
    rx = PushReceiver()
    await rx.start()
    try:
        armed = handover.Handover(asyncio.get_running_loop(), lambda: None, 30.0)
        token = handover.ARMED.set(armed)
        try:
            # a blocking request on the loop, as such a plugin would: the receiver (on this loop) cannot
            # answer, so the read times out; what counts is that the request went out whole, at once
            with pytest.raises(requests.Timeout):
                requests.post(f"http://127.0.0.1:{rx.port}/inline", json={"m": 1}, timeout=(5, 0.2))
        finally:
            handover.ARMED.reset(token)
        assert armed.handed == 1
    finally:
        await rx.stop()
