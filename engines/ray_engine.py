"""``RayEngine``: a pool of engine replicas on a Ray cluster behind the one engine protocol.

Each replica is a Ray async actor (:class:`~engines.ray_replica.Replica`) owning one engine
built from a serialisable spec (:mod:`engines.specs`: ``{"kind": "vllm" | "openai" |
"scripted", ...}``). Strategies, budgets and the allocator run unchanged on the driver;
this engine only decides where each request goes and charges what it cost.

Behaviour
---------
* **Metering stays on the driver.** A call's hold is the replica engine's worst case (asked
  of a replica once per distinct prompt and shape, then cached). Every attempt is covered on
  the caller's hold before it is sent (:class:`~ttc.engine.AttemptBilling`), and the driver
  bills exactly what the replica's engine billed: the replica returns its bill with the
  result, also when the engine failed or the call was aborted. Replica engines run with
  their own retries off (an OpenAI engine sends one attempt), so no attempt escapes a hold.
* **Retries across replicas.** A retryable engine error, or a replica lost mid-call (its
  actor died: killed, OOM), is retried on another live replica, after the hold was extended
  for the new attempt (``BudgetExhausted`` when it does not fit, the samples received kept);
  at most ``max_attempts`` attempts. Generations a failed attempt did deliver (a short
  reply) are kept and the retry asks only for the rest. A continuation retried elsewhere
  restarts from its full prompt there (the prompt carries the prefix).
* **What a lost attempt costs.** Its real bill died with the replica. It is charged
  ``lost_charge``: ``"worst"`` (the attempt's whole worst case) by default for ``openai``
  replicas, since the remote server may have run the request to the end and billed it;
  ``"prompt"`` (the prompt tokens and the call, plus the tokens a stream had handed out)
  for in-process engines (``vllm``, ``scripted``), whose work died with the process. Both
  are within the attempt's hold, so ``spent <= limit`` holds with replicas dying.
* **Routing** (:mod:`engines.ray_routing`): affinity by question with rendezvous hashing
  over the live replicas, so a question's samples and continuations land on the replica
  whose prefix cache holds it, yielding to the least loaded replica beyond ``slack``
  requests of imbalance. A replica failing ``max_failures`` times in a row leaves the pool;
  when none is left calls fail with :class:`~ttc.engine.EngineError`. Ray restarts a dead
  actor (``max_restarts``); a restarted replica builds its engine afresh.
* **Streaming and cancellation** cross the actor boundary: deltas come through a Ray
  streaming generator (at most ``stream_backpressure`` produced ahead of the driver).
  Cancelling the calling task or closing the stream sends the replica an abort; the
  replica cancels the request in its engine (which aborts it) and returns the bill of the
  partial work, charged on the driver. A replica that does not answer the abort within
  ``abort_timeout`` seconds gets ``ray.cancel`` and the attempt is charged as lost.
* **Continuation scopes** are not carried to replicas: :meth:`continuation_scope` is the
  base one (plain calls). Continuations still reach the replica holding their prefix.
* **Counters** (:meth:`stats`): requests, in flight, retries, lost attempts, aborts,
  rerouted requests, live replicas, and per replica ``replica{i}_requests``,
  ``replica{i}_in_flight``, ``replica{i}_failures``; :meth:`replica_stats` asks the
  replicas for their own and their engines'.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any, Literal

from ttc.budget import BudgetExhausted, worst_case
from ttc.engine import AttemptBilling, Billing, Capabilities, Engine, EngineError, StreamBroken
from ttc.types import Generation, GenerationResult, Prompt, SamplingParams, StreamDelta, Usage

from .ray_replica import Outcome, Replica
from .ray_routing import NoReplica, Router, Slot, affinity_key
from .specs import check_spec, replica_spec


class _Lost(Exception):
    """The replica was lost during the attempt (its actor died or became unreachable)."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - the extra is missing
        raise ImportError("RayEngine needs Ray: pip install 'ttc[ray]'") from e
    return ray


def default_actor_options(kind: str) -> dict[str, Any]:
    """Ray resources per replica: an in-process vLLM engine takes a GPU when the cluster has
    any (else a CPU); a scripted or OpenAI engine waits on I/O and takes no CPU slot."""
    if kind == "vllm":
        gpus = _ray().cluster_resources().get("GPU", 0)
        return {"num_gpus": 1} if gpus else {"num_cpus": 1}
    return {"num_cpus": 0}


class RayEngine(Engine):
    """Engine over ``replicas`` Ray actors, each running the engine ``spec`` builds (see
    the module doc). ``replica_concurrency``: calls each replica runs at once (the rest
    wait in the replica; default no cap). ``slack`` (:mod:`engines.ray_routing`): by default
    ``replica_concurrency`` when set (beyond it a request would wait for a slot on its
    affine replica while another has one free), else 64. Joins the running Ray instance, else ``ray.init(address)`` (``None``
    starts a local one, ``"auto"`` joins a running cluster). ``await engine.start()`` (or
    ``async with``) waits until every replica is up."""

    name = "ray"

    def __init__(
        self,
        spec: Mapping[str, Any],
        replicas: int = 2,
        *,
        slack: int | None | Literal["auto"] = "auto",
        max_attempts: int = 3,
        max_failures: int = 3,
        max_restarts: int = -1,
        lost_charge: Literal["worst", "prompt"] | None = None,
        abort_timeout: float = 10.0,
        stream_backpressure: int = 16,
        replica_concurrency: int | None = None,
        actor_options: Mapping[str, Any] | None = None,
        address: str | None = None,
        cache_size: int = 100_000,
    ):
        ray = _ray()
        kind = check_spec(spec)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"replicas: must be an integer >= 1, got {replicas!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts: must be >= 1, got {max_attempts}")
        if lost_charge not in (None, "worst", "prompt"):
            raise ValueError(f"lost_charge: 'worst' or 'prompt', got {lost_charge!r}")
        if not abort_timeout > 0:
            raise ValueError(f"abort_timeout: must be > 0 seconds, got {abort_timeout!r}")
        if replica_concurrency is not None and replica_concurrency < 1:
            raise ValueError(f"replica_concurrency: must be >= 1 or None, got {replica_concurrency!r}")
        if slack == "auto":
            slack = replica_concurrency or 64
        Router([Slot(0, None)], slack=slack, max_failures=max_failures)  # checks both before any actor starts
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False)
        self.kind = kind
        self.spec = replica_spec(spec)
        self.max_attempts = max_attempts
        self.lost_charge = lost_charge or ("worst" if kind == "openai" else "prompt")
        self.abort_timeout = float(abort_timeout)
        self.cache_size = cache_size
        opts = {**default_actor_options(kind), **dict(actor_options or {}),
                "max_restarts": max_restarts, "max_task_retries": 0}
        actor_cls = ray.remote(Replica)
        slots = [Slot(i, actor_cls.options(**opts).remote(self.spec, i, replica_concurrency)) for i in range(replicas)]
        for s in slots:
            s.meta["stream"] = s.actor.stream.options(
                num_returns="streaming", _generator_backpressure_num_objects=stream_backpressure)
        self.router = Router(slots, slack=slack, max_failures=max_failures)
        self._caps_ref = slots[0].actor.capabilities.remote()
        self._caps: Capabilities | None = None
        self._worst: dict[tuple[str, int, int, bool], Usage] = {}
        self._counts: dict[str, int] = {}
        self._ids = itertools.count()
        self.retries = 0
        self.lost_attempts = 0
        self.aborted = 0

    # -- pool ---------------------------------------------------------------------------------
    @property
    def actors(self) -> list[Any]:
        """The replicas' actor handles, by index."""
        return [s.actor for s in self.router.slots]

    async def start(self) -> RayEngine:
        """Wait until every replica has built its engine; read the capabilities."""
        caps = await asyncio.gather(*(s.actor.capabilities.remote() for s in self.router.slots))
        self._caps = caps[0]
        return self

    async def __aenter__(self) -> RayEngine:
        return await self.start()

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        if self._caps is None:  # not started: wait for the first replica
            self._caps = _ray().get(self._caps_ref)
        return self._caps

    async def replica_stats(self) -> list[dict[str, Any]]:
        """Each live replica's own counters and its engine's."""
        return list(await asyncio.gather(*(s.actor.stats.remote() for s in self.router.live())))

    async def replica_prompts(self, index: int) -> list[Prompt]:
        """The prompts replica ``index`` sent to its engine (engines that record them)."""
        return await self.router.slots[index].actor.prompts.remote()

    def stats(self) -> dict[str, int | str]:
        slots = self.router.slots
        out: dict[str, int | str] = {
            "replicas": len(slots), "live_replicas": len(self.router.live()),
            "requests": sum(s.requests for s in slots), "in_flight": sum(s.in_flight for s in slots),
            "retries": self.retries, "lost_attempts": self.lost_attempts, "aborted": self.aborted,
            "rerouted": self.router.rerouted,
        }
        for s in slots:
            out[f"replica{s.index}_requests"] = s.requests
            out[f"replica{s.index}_in_flight"] = s.in_flight
            out[f"replica{s.index}_failures"] = s.failures
        return out

    async def aclose(self) -> None:
        """Close the replicas' engines and end their actors (Ray does not restart them)."""
        ray = _ray()
        closing = asyncio.gather(*(s.actor.aclose.remote() for s in self.router.live()), return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing, self.abort_timeout)
        for s in self.router.slots:
            with contextlib.suppress(Exception):
                ray.kill(s.actor, no_restart=True)
            s.removed = True

    # -- counting (asked of a replica, cached) ---------------------------------------------------
    async def _ask(self, key: int, method: str, *args: Any) -> Any:
        ray = _ray()
        for slot in self.router.affine(key):
            try:
                return await getattr(slot.actor, method).remote(*args)
            except ray.exceptions.RayActorError as e:
                self._lose(slot, e)
        raise EngineError(f"{self.name}: no live replica left to ask {method}")

    def _remember(self, cache: dict, key: Any, value: Any) -> None:
        if len(cache) >= self.cache_size:
            cache.pop(next(iter(cache)))
        cache[key] = value

    async def count_prompt_tokens(self, prompt: Prompt) -> int:
        body = prompt.model_dump_json()
        if body not in self._counts:
            self._remember(self._counts, body, await self._ask(affinity_key(prompt), "count_prompt_tokens", prompt))
        return self._counts[body]

    async def worst_case(self, prompt: Prompt, params: SamplingParams) -> Usage:
        key = (prompt.model_dump_json(), params.n, params.max_tokens, params.temperature == 0)
        if key not in self._worst:
            self._remember(self._worst, key, await self._ask(affinity_key(prompt), "worst_case", prompt, params))
        return self._worst[key]

    # -- faults ----------------------------------------------------------------------------------
    def _lose(self, slot: Slot, e: BaseException) -> None:
        self.lost_attempts += 1
        slot.lost += 1
        self.router.failed(slot, dead=isinstance(e, _ray().exceptions.ActorDiedError))

    def _lost_charge(self, worst: Usage, received: int = 0) -> Usage:
        """What an attempt whose bill died with its replica is charged (module doc)."""
        if self.lost_charge == "worst":
            return worst
        return Usage(prompt_tokens=worst.prompt_tokens, completion_tokens=received, calls=worst.calls,
                     generations=1 if received else 0)

    def _pick(self, key: int, failed: set[int], errors: list[str], billed: Usage,
              got: list[Generation]) -> Slot:
        try:
            return self.router.pick(key, frozenset(failed))
        except NoReplica:
            raise EngineError(f"{self.name}: no live replica left ({'; '.join(errors) or 'pool empty'})",
                              retryable=True, usage=billed, generations=got) from None

    # -- generate -----------------------------------------------------------------------------------
    async def _generate(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> GenerationResult:
        worst = await self.worst_case(prompt, params)
        hold = AttemptBilling.of(billing, worst)
        key = affinity_key(prompt)
        got: list[Generation] = []
        failed: set[int] = set()
        errors: list[str] = []
        for attempt in range(self.max_attempts):
            n = params.n - len(got)
            w = worst if n == params.n else _fewer(worst, n, params.max_tokens)
            if attempt:
                self.retries += 1
                try:
                    hold.cover(w)  # the retry is sent only on a hold that covers it
                except BudgetExhausted as e:
                    e.generations = list(got)
                    raise
            slot = self._pick(key, failed, errors, hold.billed, got)
            out = await self._send(slot, prompt, params if n == params.n else params.model_copy(update={"n": n}),
                                   hold, w)
            if out is None:
                errors.append(f"replica {slot.index}: lost")
                failed.add(slot.index)
                continue
            got.extend(out.generations)
            if out.error is None:
                self.router.succeeded(slot)
                return GenerationResult(generations=got, usage=hold.billed)
            errors.append(f"replica {slot.index}: {out.error}")
            if not out.retryable:
                raise EngineError(f"{self.name}: {out.error}", status=out.status, usage=hold.billed, generations=got)
            self.router.failed(slot)
            failed.add(slot.index)
        raise EngineError(f"{self.name}: {self.max_attempts} attempt(s) failed: {'; '.join(errors)}",
                          retryable=True, usage=hold.billed, generations=got)

    async def _send(self, slot: Slot, prompt: Prompt, params: SamplingParams, hold: AttemptBilling,
                    worst: Usage) -> Outcome | None:
        """One attempt on ``slot``; its bill charged. ``None``: the replica was lost."""
        ray = _ray()
        rid = str(next(self._ids))
        slot.requests += 1
        slot.in_flight += 1
        try:
            ref = slot.actor.generate.remote(rid, prompt, params)
            try:
                out: Outcome = await ref
            except asyncio.CancelledError:
                aborted = await self._abort(slot, rid, ref)
                hold.bill(aborted.usage if aborted is not None else self._lost_charge(worst))
                raise
            except ray.exceptions.RayActorError as e:
                self._lose(slot, e)
                hold.bill(self._lost_charge(worst))
                return None
        finally:
            slot.in_flight -= 1
        hold.bill(out.usage)
        return out

    async def _abort(self, slot: Slot, rid: str, ref: Any) -> Outcome | None:
        """Abort call ``rid`` on its replica and wait for its bill (None: no answer)."""
        ray = _ray()
        self.aborted += 1
        slot.actor.abort.remote(rid)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(ref.future()), self.abort_timeout)
        except (TimeoutError, ray.exceptions.RayError):
            ray.cancel(ref)
            return None

    # -- stream -------------------------------------------------------------------------------------
    async def _stream(self, prompt: Prompt, params: SamplingParams, billing: Billing) -> AsyncIterator[StreamDelta]:
        worst = await self.worst_case(prompt, params)
        hold = AttemptBilling.of(billing, worst)
        key = affinity_key(prompt)
        failed: set[int] = set()
        errors: list[str] = []
        for attempt in range(self.max_attempts):
            if attempt:
                self.retries += 1
                hold.cover(worst)
            slot = self._pick(key, failed, errors, hold.billed, [])
            s = _RemoteStream(self, slot, prompt, params, hold, worst)
            try:
                async with aclosing(s.deltas()) as deltas:
                    async for d in deltas:
                        yield d
                return
            except _Lost:
                if s.received_deltas:
                    raise StreamBroken(f"{self.name}: replica {slot.index} lost after {s.received} token(s)",
                                       retryable=True) from None
                errors.append(f"replica {slot.index}: lost")
                failed.add(slot.index)
            finally:
                await s.close()
        raise EngineError(f"{self.name}: {self.max_attempts} stream attempt(s) failed: {'; '.join(errors)}",
                          retryable=True, usage=hold.billed)


def _fewer(worst: Usage, n: int, max_tokens: int) -> Usage:
    """The worst case of the same call asking for ``n`` generations."""
    calls = max(worst.calls, 1)
    return worst_case(worst.prompt_tokens // calls, n, max_tokens, native_n=calls == 1)


class _RemoteStream:
    """One streamed attempt on a replica: its deltas, then (:meth:`close`) its bill."""

    def __init__(self, engine: RayEngine, slot: Slot, prompt: Prompt, params: SamplingParams,
                 hold: AttemptBilling, worst: Usage):
        self.engine, self.slot, self.hold, self.worst = engine, slot, hold, worst
        self.prompt, self.params = prompt, params
        self.rid = str(next(engine._ids))
        self.gen: Any = None
        self.end: Outcome | None = None
        self.received = 0  # tokens handed out
        self.received_deltas = 0
        self.lost = False

    async def deltas(self) -> AsyncIterator[StreamDelta]:
        ray = _ray()
        self.slot.requests += 1
        self.slot.in_flight += 1
        self.gen = self.slot.meta["stream"].remote(self.rid, self.prompt, self.params)
        try:
            async for ref in self.gen:
                item = await ref
                if isinstance(item, Outcome):
                    self.end = item
                    break
                self.received += item.num_tokens
                self.received_deltas += 1
                yield item
        except ray.exceptions.RayActorError as e:
            self.lost = True
            self.engine._lose(self.slot, e)
            raise _Lost() from e
        end = self.end
        if end is not None and end.error is not None:
            cls = StreamBroken if end.broken else EngineError
            raise cls(f"{self.engine.name}: {end.error}", retryable=end.retryable, status=end.status,
                      usage=end.usage)
        if end is not None:
            self.engine.router.succeeded(self.slot)

    async def _drain(self) -> Outcome | None:
        async def rest() -> Outcome | None:
            async for ref in self.gen:
                item = await ref
                if isinstance(item, Outcome):
                    return item
            return None

        ray = _ray()
        try:
            return await asyncio.wait_for(rest(), self.engine.abort_timeout)
        except (TimeoutError, ray.exceptions.RayError):
            return None

    async def close(self) -> None:
        """Bill the attempt: the replica's bill, after aborting the stream if it is still
        running; a lost one's charge if the replica cannot say."""
        if self.gen is None:
            return
        gen, self.gen = self.gen, None
        try:
            if self.end is None and not self.lost:
                self.engine.aborted += 1
                self.slot.actor.abort.remote(self.rid)
                self.gen = gen
                self.end = await self._drain()
                if self.end is None:
                    _ray().cancel(gen)
            if self.end is not None:
                self.hold.bill(self.end.usage)
            else:
                self.hold.bill(self.engine._lost_charge(self.worst, self.received))
        finally:
            self.slot.in_flight -= 1
