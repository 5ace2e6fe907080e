"""Unit tests of the kernel lifecycle state machine and of progress events."""

from __future__ import annotations

import asyncio
import itertools
import logging
from types import SimpleNamespace

import pytest

from gateway_provisioners.core import lifecycle as lifecycle_module
from gateway_provisioners.core.errors import KernelExited, LaunchError
from gateway_provisioners.core.events import EventLog, ProgressEvent
from gateway_provisioners.core.lifecycle import LEGAL_TRANSITIONS, IllegalTransition, KernelLifecycle
from gateway_provisioners.core.lifecycle import KernelPhase as P

ALL_PAIRS = list(itertools.product(P, P))
LEGAL_PAIRS = [(a, b) for a, b in ALL_PAIRS if b in LEGAL_TRANSITIONS[a]]
ILLEGAL_PAIRS = [(a, b) for a, b in ALL_PAIRS if b not in LEGAL_TRANSITIONS[a]]
NON_FINAL = [phase for phase in P if not phase.is_final]

# The state machine of the module docstring, written out: a change to LEGAL_TRANSITIONS must be deliberate.
EXPECTED = {
    P.NEW: {P.SUBMITTED, P.STARTING, P.CONNECTING, P.READY, P.TERMINATING, P.FAILED},
    P.SUBMITTED: {P.PENDING, P.STARTING, P.CONNECTING, P.TERMINATING, P.FAILED},
    P.PENDING: {P.STARTING, P.CONNECTING, P.TERMINATING, P.FAILED},
    P.STARTING: {P.CONNECTING, P.TERMINATING, P.FAILED},
    P.CONNECTING: {P.READY, P.TERMINATING, P.FAILED},
    P.READY: {P.RESTARTING, P.EXITED, P.TERMINATING, P.FAILED},
    P.RESTARTING: {P.CONNECTING, P.READY, P.EXITED, P.TERMINATING, P.FAILED},
    P.EXITED: {P.RESTARTING, P.READY, P.TERMINATING, P.FAILED},
    P.TERMINATING: {P.TERMINATED, P.FAILED},
    P.TERMINATED: set(),
    P.FAILED: set(),
}


def pair_id(pair: tuple[P, P]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


class FakeClock:
    """Stands in for the ``time`` module inside ``lifecycle``: a monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(lifecycle_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def lifecycle_in(phase: P, kernel_id: str = "k1") -> KernelLifecycle:
    lc = KernelLifecycle(kernel_id)
    lc.phase = phase
    return lc


def test_transition_table_is_the_documented_state_machine() -> None:
    assert {phase: set(targets) for phase, targets in LEGAL_TRANSITIONS.items()} == EXPECTED


def test_final_phases() -> None:
    assert {phase for phase in P if phase.is_final} == {P.TERMINATED, P.FAILED}
    assert str(P.READY) == "ready"


@pytest.mark.parametrize("pair", LEGAL_PAIRS, ids=[pair_id(p) for p in LEGAL_PAIRS])
def test_legal_transition(pair: tuple[P, P]) -> None:
    before, after = pair
    lc = lifecycle_in(before)
    assert lc.can_move_to(after)
    event = lc.move_to(after, "because")
    assert lc.phase is after
    assert lc.events.history == [event]
    assert (event.kernel_id, event.previous, event.phase, event.message) == ("k1", before.value, after.value, "because")


@pytest.mark.parametrize("pair", ILLEGAL_PAIRS, ids=[pair_id(p) for p in ILLEGAL_PAIRS])
def test_illegal_transition(pair: tuple[P, P]) -> None:
    before, after = pair
    lc = lifecycle_in(before)
    assert not lc.can_move_to(after)
    with pytest.raises(IllegalTransition) as caught:
        lc.move_to(after)
    assert lc.phase is before
    assert lc.events.history == []
    assert before.value in str(caught.value) and after.value in str(caught.value) and "k1" in str(caught.value)


def test_a_whole_launch_emits_one_event_per_transition(clock: FakeClock) -> None:
    lc = KernelLifecycle("k1")
    received: list[ProgressEvent] = []
    lc.events.subscribe(received.append)
    path = [P.SUBMITTED, P.PENDING, P.STARTING, P.CONNECTING, P.READY, P.TERMINATING, P.TERMINATED]
    for step, phase in enumerate(path, start=1):
        clock.now += step  # 1 s in NEW, 2 s in SUBMITTED, ...
        lc.move_to(phase, f"to {phase}")
    assert received == lc.events.history
    previous = [P.NEW, *path[:-1]]
    assert [(e.previous, e.phase) for e in received] == [
        (a.value, b.value) for a, b in zip(previous, path, strict=True)
    ]
    assert [e.elapsed for e in received] == [float(step) for step in range(1, len(path) + 1)]
    assert [e.since_start for e in received] == list(itertools.accumulate(float(s) for s in range(1, len(path) + 1)))
    assert all(e.error is None for e in received)


def test_timings_sum_the_time_spent_in_each_phase(clock: FakeClock) -> None:
    events = EventLog()
    lc = KernelLifecycle("k1", events)
    other = KernelLifecycle("k2", events)  # shares the log; its events must not count for k1
    # (seconds spent in the current phase, the phase entered next)
    steps = [(0.5, P.CONNECTING), (1.5, P.READY), (10.0, P.RESTARTING), (2.0, P.READY), (20.0, P.RESTARTING)]
    for seconds, phase in [*steps, (3.0, P.EXITED)]:
        clock.now += seconds
        lc.move_to(phase)
    clock.now += 100.0
    other.move_to(P.SUBMITTED)
    assert lc.timings() == {"new": 0.5, "connecting": 1.5, "ready": 30.0, "restarting": 5.0}
    assert other.timings() == {"new": pytest.approx(137.0)}


def test_fail_records_the_error_and_the_phase() -> None:
    lc = lifecycle_in(P.STARTING)
    error = KernelExited("kernel died", exit_code=3)
    lc.fail(error)
    assert lc.phase is P.FAILED
    assert lc.error is error
    assert error.phase == "starting"
    assert "(during starting)" in str(error)
    (event,) = lc.events.history
    assert (event.previous, event.phase, event.error) == ("starting", "failed", error)
    assert event.message == str(error)


def test_fail_keeps_a_phase_already_set() -> None:
    lc = lifecycle_in(P.CONNECTING)
    error = LaunchError("no", phase="pending")
    lc.fail(error)
    assert error.phase == "pending"
    assert lc.error is error


def test_fail_accepts_any_exception() -> None:
    lc = lifecycle_in(P.READY)
    error = RuntimeError("boom")
    lc.fail(error)
    assert lc.phase is P.FAILED and lc.error is error


def test_fail_from_terminating() -> None:
    lc = lifecycle_in(P.TERMINATING)
    lc.fail(LaunchError("terminate failed"))
    assert lc.phase is P.FAILED


@pytest.mark.parametrize("final", [P.FAILED, P.TERMINATED])
def test_fail_is_a_no_op_once_final(final: P) -> None:
    lc = lifecycle_in(P.TERMINATING)
    lc.move_to(final)
    first_error = lc.error
    history = list(lc.events.history)
    late = LaunchError("too late")
    lc.fail(late)
    assert lc.phase is final
    assert lc.error is first_error
    assert lc.events.history == history
    assert late.phase is None


def test_move_to_failed_with_error_records_it() -> None:
    lc = lifecycle_in(P.PENDING)
    error = LaunchError("x")
    lc.move_to(P.FAILED, error=error)
    assert lc.error is error
    assert error.phase is None  # only fail() fills in the phase


@pytest.mark.parametrize("final", [P.FAILED, P.TERMINATED])
def test_restart_from_new_after_a_final_phase(final: P, clock: FakeClock) -> None:
    lc = KernelLifecycle("k1")
    clock.now += 5
    lc.move_to(P.CONNECTING)
    if final is P.FAILED:
        lc.fail(LaunchError("x"))
    else:
        lc.move_to(P.TERMINATING)
        lc.move_to(P.TERMINATED)
    assert lc.phase is final
    clock.now += 50
    lc.restart_from_new()
    assert lc.phase is P.NEW and lc.error is None
    clock.now += 2
    event = lc.move_to(P.SUBMITTED)
    assert (event.previous, event.elapsed, event.since_start) == ("new", 2.0, 2.0)


@pytest.mark.parametrize("phase", NON_FINAL, ids=[p.value for p in NON_FINAL])
def test_restart_from_new_refused_unless_final(phase: P) -> None:
    lc = lifecycle_in(phase)
    with pytest.raises(IllegalTransition):
        lc.restart_from_new()
    assert lc.phase is phase


async def move_soon_and_wait(lc: KernelLifecycle, phase: P) -> None:
    """Schedule a transition for the next loop iteration, then wait for it: no sleeps, no polling."""
    asyncio.get_running_loop().call_soon(lc.move_to, phase)
    await lc.wait_changed()


async def test_wait_changed_wakes_on_a_transition() -> None:
    lc = KernelLifecycle("k1")
    await asyncio.wait_for(move_soon_and_wait(lc, P.SUBMITTED), 5)
    assert lc.phase is P.SUBMITTED


async def test_wait_changed_waits_for_the_next_transition_not_a_past_one() -> None:
    lc = KernelLifecycle("k1")
    lc.move_to(P.SUBMITTED)  # sets the event before anyone waits
    await asyncio.wait_for(move_soon_and_wait(lc, P.PENDING), 5)
    # Had wait_changed returned on the stale wake-up, it would have come back before PENDING.
    assert lc.phase is P.PENDING


async def test_wait_changed_wakes_every_waiter() -> None:
    lc = KernelLifecycle("k1")
    order: list[str] = []

    async def waiter(name: str) -> None:
        await lc.wait_changed()
        order.append(f"{name}:{lc.phase}")

    tasks = [asyncio.ensure_future(waiter(name)) for name in ("a", "b")]
    # The tasks' first steps were scheduled when they were created, so both wait before this callback runs.
    asyncio.get_running_loop().call_soon(lc.move_to, P.STARTING)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert sorted(order) == ["a:starting", "b:starting"]


async def test_wait_changed_wakes_on_fail() -> None:
    lc = KernelLifecycle("k1")

    async def fail_soon_and_wait() -> None:
        asyncio.get_running_loop().call_soon(lc.fail, LaunchError("x"))
        await lc.wait_changed()

    await asyncio.wait_for(fail_soon_and_wait(), 5)
    assert lc.phase is P.FAILED


def test_lifecycle_made_outside_an_event_loop_can_be_awaited_later() -> None:
    lc = KernelLifecycle("k1")  # no running loop here: the event is made on first wait

    async def main() -> P:
        await move_soon_and_wait(lc, P.CONNECTING)
        return lc.phase

    assert asyncio.run(asyncio.wait_for(main(), 5)) is P.CONNECTING


# --- EventLog -------------------------------------------------------------------------------------------------------


def make_event(phase: str = "ready") -> ProgressEvent:
    return ProgressEvent(kernel_id="k1", phase=phase, previous="connecting", elapsed=1.0, since_start=2.0)


def test_subscribe_and_unsubscribe() -> None:
    log = EventLog()
    seen: list[str] = []
    unsubscribe = log.subscribe(lambda e: seen.append(e.phase))
    log.emit(make_event("a"))
    unsubscribe()
    log.emit(make_event("b"))
    unsubscribe()  # twice is harmless
    assert seen == ["a"]
    assert [e.phase for e in log.history] == ["a", "b"]


def test_listeners_are_called_in_subscription_order() -> None:
    log = EventLog()
    seen: list[str] = []
    log.subscribe(lambda e: seen.append("first"))
    log.subscribe(lambda e: seen.append("second"))
    log.emit(make_event())
    assert seen == ["first", "second"]


def test_a_failing_listener_does_not_break_emit(caplog: pytest.LogCaptureFixture) -> None:
    log = EventLog()
    seen: list[str] = []

    def broken(event: ProgressEvent) -> None:
        raise RuntimeError("listener bug")

    log.subscribe(broken)
    log.subscribe(lambda e: seen.append(e.phase))
    with caplog.at_level(logging.ERROR, logger="gateway_provisioners"):
        log.emit(make_event("ready"))
    assert seen == ["ready"]
    assert len(log.history) == 1
    assert any("k1" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_failing_listener_does_not_break_a_transition() -> None:
    lc = KernelLifecycle("k1")
    lc.events.subscribe(lambda e: 1 / 0)
    lc.move_to(P.SUBMITTED)
    assert lc.phase is P.SUBMITTED


def test_a_listener_may_unsubscribe_itself_during_emit() -> None:
    log = EventLog()
    seen: list[str] = []
    unsubscribers: list = []

    def once(event: ProgressEvent) -> None:
        seen.append("once")
        unsubscribers[0]()

    unsubscribers.append(log.subscribe(once))
    log.subscribe(lambda e: seen.append("always"))
    log.emit(make_event())
    log.emit(make_event())
    assert seen == ["once", "always", "always"]
