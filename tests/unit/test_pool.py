"""Unit tests of the core's ``KernelPool`` with stand-in kernels, and of which launches may use a pool.

The stand-ins have a real :class:`KernelLifecycle` (so the pool is woken by the same events as with real kernels) and
record what the pool does to them. The same behaviour with real kernels on every backend is in the integration tests
(tests/support/pools.py).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from gateway_provisioners.core.errors import LaunchError
from gateway_provisioners.core.launch import LaunchSpec
from gateway_provisioners.core.lifecycle import KernelLifecycle, KernelPhase
from gateway_provisioners.core.pool import KernelPool
from gateway_provisioners.provisioners import pooling


class StandIn:
    """What the pool uses of a RemoteKernel."""

    def __init__(self, launch_id: str) -> None:
        self.launch_id = launch_id
        self.lifecycle = KernelLifecycle(launch_id)
        for phase in (KernelPhase.SUBMITTED, KernelPhase.STARTING, KernelPhase.CONNECTING, KernelPhase.READY):
            self.lifecycle.move_to(phase)
        self.agent_alive = True
        self.answers = True
        self.ended = False

    @property
    def phase(self) -> KernelPhase:
        return self.lifecycle.phase

    def poll(self) -> int | None:
        return None if self.phase is KernelPhase.READY else 1

    async def ping(self, timeout: float) -> dict[str, Any]:
        if not self.answers:
            raise asyncio.TimeoutError()
        return {"kernel": "running"}

    async def shutdown(self, grace: float = 0) -> None:
        self.ended = True

    def die(self) -> None:
        self.lifecycle.move_to(KernelPhase.EXITED, "killed")


class Launcher:
    """Makes stand-ins; counts concurrent launches; can be told to fail or to hold launches until released."""

    def __init__(self) -> None:
        self.ids = (f"pooled-{n}" for n in itertools.count())
        self.made: list[StandIn] = []
        self.running = 0
        self.most_at_once = 0
        self.fail = False
        self.attempts = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.cancelled = 0

    async def __call__(self) -> Any:
        self.attempts += 1
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.gate.wait()
            await asyncio.sleep(0)
            if self.fail:
                raise LaunchError("image not found")
            kernel = StandIn(next(self.ids))
            self.made.append(kernel)
            return kernel
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1


async def test_fills_to_size_with_bounded_concurrency_and_hands_each_kernel_out_once() -> None:
    launch = Launcher()
    pool = KernelPool("test", launch, size=4, concurrency=2)
    pool.start()
    await pool.wait_ready(timeout=5)
    assert launch.most_at_once == 2
    first, second = await pool.claim(), await pool.claim()
    assert first is not None and second is not None and first is not second
    await pool.wait_ready(timeout=5)  # refilled behind the claims
    assert pool.claimed == 2 and len(launch.made) == 6
    ready = {p.kernel for p in pool._ready}
    assert first not in ready and second not in ready
    await pool.drain()
    assert all(k.ended for k in launch.made if k not in (first, second)) and not first.ended


async def test_claim_never_waits_for_a_starting_kernel() -> None:
    launch = Launcher()
    launch.gate.clear()
    pool = KernelPool("test", launch, size=2, concurrency=2, drain_grace=0.1)
    pool.start()
    await asyncio.sleep(0)
    assert pool.starting == 2
    assert await asyncio.wait_for(pool.claim(), 0.5) is None
    await pool.drain()
    assert launch.cancelled == 2 and pool.starting == 0


async def test_dead_or_unanswering_kernels_are_replaced_never_handed_out() -> None:
    launch = Launcher()
    pool = KernelPool("test", launch, size=3, concurrency=3)
    pool.start()
    await pool.wait_ready(timeout=5)
    dead, silent, good = (p.kernel for p in pool._ready)
    dead.die()  # noticed by its event: dropped before any claim
    while pool.replaced == 0:
        await asyncio.wait_for(pool._state_changed.wait(), 5)
    await pool.wait_ready(timeout=5)
    await pool._endings.join()
    assert dead.ended and dead not in {p.kernel for p in pool._ready}
    silent.answers = False  # only a claim finds out: it tries the next one
    claimed = await pool.claim()
    await pool._endings.join()
    assert claimed is good and silent.ended
    assert pool.replaced == 2
    await pool.drain()


async def test_aged_kernels_are_replaced() -> None:
    launch = Launcher()
    pool = KernelPool("test", launch, size=1, max_age=0.2, concurrency=1)
    pool.start()
    await pool.wait_ready(timeout=5)
    old = pool._ready[0].kernel
    while pool.replaced == 0:  # the refill task replaces it by itself once it is older than max_age
        await asyncio.wait_for(pool._state_changed.wait(), 5)
    await pool._endings.join()
    assert old.ended
    await pool.wait_ready(timeout=5)
    fresh = await pool.claim()
    assert fresh is not None and fresh is not old
    await pool.drain()


async def test_failing_launches_back_off_and_say_why() -> None:
    launch = Launcher()
    launch.fail = True
    pool = KernelPool("test", launch, size=2, concurrency=2)
    pool.start()
    with pytest.raises(TimeoutError, match="image not found"):
        await pool.wait_ready(timeout=0.5)
    assert launch.attempts <= 4, f"{launch.attempts} launches in 0.5 s: the pool did not back off"
    await pool.drain()


async def test_drain_ends_ready_and_starting_kernels_and_is_idempotent() -> None:
    launch = Launcher()
    pool = KernelPool("test", launch, size=2, concurrency=1, drain_grace=0.1)
    pool.start()
    await pool.wait_ready(count=1, timeout=5)
    launch.gate.clear()  # the second launch hangs
    await asyncio.sleep(0)
    await pool.drain()
    await pool.drain()
    assert pool.closed and pool.ready == 0 and pool.starting == 0
    assert all(k.ended for k in launch.made)
    assert await pool.claim() is None


async def test_drain_lets_a_launch_in_flight_finish_and_ends_it() -> None:
    """A launch cancelled while the platform makes its resource would leave it: drain waits for it, then ends it."""
    launch = Launcher()
    launch.gate.clear()
    pool = KernelPool("test", launch, size=1, concurrency=1, drain_grace=5)
    pool.start()
    await asyncio.sleep(0)
    assert pool.starting == 1
    drain = asyncio.ensure_future(pool.drain())
    await asyncio.sleep(0)
    launch.gate.set()  # the platform answers during the drain
    await asyncio.wait_for(drain, 5)
    assert launch.cancelled == 0 and len(launch.made) == 1 and launch.made[0].ended
    assert pool.ready == 0


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(Exception, match="at least 1"):
        KernelPool("test", Launcher(), size=0)


# --- which launches may use a pool -------------------------------------------------------------------------------


def warm(python: bool = True, **reference: Any) -> pooling.WarmPool:
    spec = LaunchSpec("pool-template", ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                      env={"KERNEL_ID": "pool-template", "KERNEL_USERNAME": "alice", "PATH": "/bin"},
                      username="alice", **reference)  # fmt: skip
    return pooling.WarmPool("key", None, None, spec, python)  # type: ignore[arg-type]


def launch(**changes: Any) -> LaunchSpec:
    env = {"KERNEL_ID": "k1", "KERNEL_USERNAME": "alice", "PATH": "/bin", **changes.pop("env", {})}
    return LaunchSpec("k1", ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"], env=env,
                      username="alice", **changes)  # fmt: skip


def test_the_same_launch_takes_only_its_kernel_id_late() -> None:
    late, why = pooling.compare(warm(), launch(), late_cwd=True)
    assert why is None and late is not None
    assert (late.cwd, late.set_env, late.unset_env) == (None, {"KERNEL_ID": "k1"}, [])


def test_python_kernels_take_working_dir_and_environment_late() -> None:
    late, why = pooling.compare(warm(), launch(cwd="/home/alice/nb", env={"KERNEL_X": "1", "PATH": "/usr/bin"}),
                                late_cwd=True)  # fmt: skip
    assert why is None and late is not None
    assert late.cwd == "/home/alice/nb" and late.set_env == {"KERNEL_X": "1", "PATH": "/usr/bin", "KERNEL_ID": "k1"}
    code = late.code()
    assert "os.chdir('/home/alice/nb')" in code and "\n" not in code


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"username": "bob"}, "KERNEL_USERNAME 'bob' is not the pool's 'alice'"),
        ({"values": {"KERNEL_IMAGE": "other"}}, "per-launch values differ from the pool's: KERNEL_IMAGE"),
        ({"curve_keys": ("p" * 40, "s" * 40)}, "CurveZMQ"),
        ({"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}", "--debug"]}, "argv"),
    ],
)
def test_what_decides_how_a_kernel_runs_must_be_the_pools(changes: dict[str, Any], words: str) -> None:
    spec = launch()
    for name, value in changes.items():
        setattr(spec, name, value)
    late, why = pooling.compare(warm(), spec, late_cwd=True)
    assert late is None and why is not None and words in why


def test_launch_timeout_does_not_matter() -> None:
    assert pooling.compare(warm(), launch(values={"KERNEL_LAUNCH_TIMEOUT": 99.0}), late_cwd=True)[1] is None


def test_other_languages_must_match_except_kernel_id() -> None:
    late, why = pooling.compare(warm(python=False), launch(), late_cwd=True)
    assert (late, why) == (None, None)
    _, why = pooling.compare(warm(python=False), launch(env={"KERNEL_X": "1"}), late_cwd=True)
    assert why is not None and "KERNEL_X" in why and "not a Python kernel" in why
    _, why = pooling.compare(warm(python=False), launch(cwd="/srv"), late_cwd=True)
    assert why is not None and "working directory" in why


def test_working_dir_chosen_at_launch_on_this_backend_is_not_late() -> None:
    _, why = pooling.compare(warm(), launch(cwd="/srv"), late_cwd=False)
    assert why is not None and "set at launch on this backend" in why
