"""Symbolic answer checks in worker processes, under time limits that hold.

:func:`equivalent` decides whether two answer strings are the same mathematical
object. The check runs in a small pool of worker processes, started lazily: a fresh
interpreter (the zygote) imports sympy and math-verify once and forks one worker per
pool slot, so the caller is never forked (it may hold engine threads) and its
``__main__`` is never re-imported. A check past its time limit kills its worker (a
replacement forks from the zygote in milliseconds) and answers "not equal"; a check
that runs out of the worker's memory cap answers the same. The caller's thread only waits
on a pipe, so a runaway check never holds the caller's GIL.

Inside a worker, text becomes sympy only through parsers that cannot run code:

1. :func:`ttc.safe_math.parse_plain`, a whitelist parser of our own, for plain and
   simple-LaTeX expressions;
2. for other LaTeX (sets, intervals, equations, ``\\infty``, ...), Hugging Face
   math-verify's LaTeX grammar (``LatexExtractionConfig`` only: its
   ``ExprExtractionConfig`` path calls sympy's ``parse_expr``, which evaluates).
   Words ("the capital city") are never parsed: prose is compared as text.

Both results pass :func:`ttc.safe_math.check_bounds` before anything is evaluated,
then math-verify's ``verify`` compares them (numeric rounding, ``simplify``, sets,
intervals, relations). math-verify's own signal-based timeouts are off
(``parsing_timeout=None``, ``timeout_seconds=None``): the pool's kill is the limit.

A worker reports after parsing each side, so a side that timed out or was refused
is remembered by the caller (:class:`ttc.answers.Equivalence`) and not retried
against every other answer.

:func:`off_loop` runs a blocking grading call (a vote, a stopping rule) on a
dedicated thread pool and awaits it, so strategies never grade on the event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from .prose import looks_like_prose

__all__ = [
    "CheckResult", "GradingPool", "NeedsWorker", "check", "default_pool", "equivalent", "in_process_only",
    "looks_like_prose", "off_loop", "shutdown",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT = 2.0


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one symbolic check.

    ``equal``: the verdict ("not equal" on any failure). ``timed_out``: the worker was
    killed at the limit. ``unusable``: which sides ("a", "b") could not be parsed,
    were refused by the size bounds, or were being parsed when the limit hit;
    ``reason`` says why in words."""

    equal: bool
    timed_out: bool = False
    unusable: tuple[str, ...] = ()
    reason: str = ""
    seconds: float = 0.0


# -- worker side -------------------------------------------------------------------------
def _limit_memory(extra_mb: int) -> None:
    try:
        import resource

        with open("/proc/self/statm") as f:
            vm_pages = int(f.read().split()[0])
        cap = vm_pages * os.sysconf("SC_PAGE_SIZE") + extra_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (OSError, ValueError, ImportError):  # no /proc or no resource module: time limit only
        pass


def _to_sympy(text: str, limits: Any) -> Any:
    """Text -> bounded sympy tree, via the whitelist parser, else math-verify's LaTeX
    grammar. Raises ``Refused`` (or ``TooBig``) naming the problem."""
    from ttc.safe_math import Refused, TooBig, check_bounds, parse_plain, prescreen

    try:
        return parse_plain(text, limits)
    except TooBig:
        raise
    except Refused:
        pass
    if looks_like_prose(text):
        raise Refused("prose is compared as text only")
    prescreen(text, limits)
    from math_verify import LatexExtractionConfig, parse

    parsed = parse(
        "$" + text.replace("$", "") + "$",
        extraction_config=[LatexExtractionConfig()],
        fallback_mode="no_fallback",
        parsing_timeout=None,  # type: ignore[arg-type]
    )
    if not parsed or isinstance(parsed[0], str):
        raise Refused("not a math expression")
    check_bounds(parsed[0], limits)
    return parsed[0]


def _handle_equal(req: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    from ttc.safe_math import MathLimits, Refused

    limits = MathLimits(**req.get("limits", {}))
    exprs = []
    for side in ("a", "b"):
        try:
            exprs.append(_to_sympy(req[side], limits))
        except (Refused, RecursionError) as e:
            return {"equal": False, "unusable": [side], "reason": f"{side}: {e}"[:300]}
        send({"parsed": side})
    from math_verify import verify

    return {"equal": bool(verify(exprs[0], exprs[1], timeout_seconds=None))}  # type: ignore[arg-type]


def _send(sock: socket.socket, obj: dict[str, Any]) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(len(data).to_bytes(4, "big") + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("grading peer closed the connection")
        buf += chunk
    return buf


def _recv(sock: socket.socket) -> dict[str, Any]:
    n = int.from_bytes(_recv_exact(sock, 4), "big")
    if n > 1 << 24:
        raise EOFError("grading message too large")
    return json.loads(_recv_exact(sock, n))


def _worker_loop(sock: socket.socket) -> None:
    """Serve checks on ``sock`` until the parent closes it."""
    while True:
        try:
            req = _recv(sock)
        except (EOFError, OSError, ValueError):
            return
        try:
            out = _handle_equal(req, lambda m: _send(sock, m))
        except MemoryError:
            out = {"equal": False, "reason": "out of memory"}
        except Exception as e:  # a parser or sympy bug on odd input: not equal
            out = {"equal": False, "reason": type(e).__name__}
        out["done"] = True
        try:
            _send(sock, out)
        except OSError:
            return


def _zygote_main(ctrl_fd: int, memory_mb: int) -> None:
    """The pool's zygote: imports sympy and math-verify once, then forks one worker per
    request. It is a fresh interpreter started by :class:`GradingPool` (never a fork of
    the caller, which may hold engine threads, and never a re-import of the caller's
    ``__main__``); it is single-threaded, so forking it is safe. Children are reaped
    automatically; everything exits when the parent's end of its socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(10)  # a runaway check yields the CPU to the caller's event loop and engines
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    ctrl = socket.socket(fileno=ctrl_fd)
    try:
        import math_verify  # noqa: F401  (preloaded: workers fork with it in memory)
        import sympy  # noqa: F401

        import ttc.safe_math  # noqa: F401

        for a, b in (("x+1", "1+x"), ("\\{1,2\\}", "\\{2,1\\}"), ("\\frac{1}{2}", "0.5")):
            # warm the parsers' and verify's lazy state, so each fork starts warm
            math_verify.verify(_to_sympy(a, ttc.safe_math.DEFAULT_LIMITS), _to_sympy(b, ttc.safe_math.DEFAULT_LIMITS),
                               timeout_seconds=None)  # type: ignore[arg-type]
    except Exception as e:
        _send(ctrl, {"ready": False, "reason": f"{type(e).__name__}: {e}"})
        return
    _send(ctrl, {"ready": True})
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(ctrl, 16, 1)
        except OSError:
            return
        if not fds:  # the parent closed the control socket
            return
        pid = os.fork()
        if pid == 0:
            ctrl.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _limit_memory(memory_mb)
            try:
                _worker_loop(socket.socket(fileno=fds[0]))
            finally:
                os._exit(0)
        os.close(fds[0])
        _send(ctrl, {"pid": pid})


# -- parent side -------------------------------------------------------------------------
class _Worker:
    def __init__(self, sock: socket.socket, pid: int):
        self.sock = sock
        self.pid = pid

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)
        self.sock.close()


class _Zygote:
    def __init__(self, memory_mb: int, start_timeout: float):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        code = f"from ttc.grading import _zygote_main; _zygote_main({theirs.fileno()}, {int(memory_mb)})"
        # the caller's import path, so the zygote finds the same ttc (also from a source tree)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,  # Ctrl-C in a terminal reaches the caller only
        )
        theirs.close()
        self.ctrl = ours
        self.lock = threading.Lock()
        try:
            ours.settimeout(start_timeout)
            msg = _recv(ours)
        except (OSError, EOFError) as e:
            self.close()
            raise RuntimeError(f"grading process did not start within {start_timeout:g} s: {e}") from e
        if not msg.get("ready"):
            self.close()
            raise RuntimeError(f"grading process failed to start: {msg.get('reason')}")

    def fork(self) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self.lock:
                socket.send_fds(self.ctrl, [b"w"], [theirs.fileno()])
                pid = int(_recv(self.ctrl)["pid"])
        finally:
            theirs.close()
        return _Worker(ours, pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self.ctrl.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class GradingPool:
    """A small pool of grading worker processes, each check under a hard time limit.

    Workers start on first use, up to ``max_workers`` at once (more concurrent checks
    wait for a free worker; the time limit counts from when a worker takes the check).
    ``memory_mb`` caps each worker's address space above its size at start."""

    def __init__(self, max_workers: int | None = None, *, memory_mb: int = 1024, start_timeout: float = 60.0):
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers: must be >= 1, got {max_workers}")
        self.max_workers = max_workers or max(2, min(4, os.cpu_count() or 2))
        self.memory_mb = memory_mb
        self.start_timeout = start_timeout
        self._zygote: _Zygote | None = None
        self._zlock = threading.Lock()
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False
        self.kills = 0  # workers killed at their limit (or found dead)
        self.checks = 0  # checks sent to a worker

    def _new_worker(self) -> _Worker:
        with self._zlock:
            if self._zygote is None or not self._zygote.alive():
                if self._zygote is not None:
                    self._zygote.close()
                self._zygote = _Zygote(self.memory_mb, self.start_timeout)
            return self._zygote.fork()

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("grading pool is shut down")
                if self._idle:
                    return self._idle.pop()
                if self._count < self.max_workers:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            return self._new_worker()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, w: _Worker, ok: bool) -> None:
        with self._cond:
            keep = ok and not self._closed
            if keep:
                self._idle.append(w)
            else:
                self._count -= 1
            self._cond.notify()
        if not keep:
            w.kill()

    def warm_up(self) -> None:
        """Start the grading process now (it otherwise starts on the first check)."""
        self._release(self._acquire(), True)

    def check(self, a: str, b: str, *, timeout: float = DEFAULT_TIMEOUT, limits: Any = None) -> CheckResult:
        """Are ``a`` and ``b`` the same? Returns within ``timeout`` seconds of a worker
        taking the check (plus the kill); "not equal" on timeout, refusal or error."""
        if not timeout > 0:
            raise ValueError(f"timeout: must be > 0, got {timeout}")
        req: dict[str, Any] = {"a": a, "b": b}
        if limits is not None:
            req["limits"] = asdict(limits)
        w = self._acquire()
        self.checks += 1
        t0 = time.monotonic()
        parsed: list[str] = []
        ok = False
        try:
            _send(w.sock, req)
            while True:
                left = timeout - (time.monotonic() - t0)
                if left <= 0:
                    raise TimeoutError
                w.sock.settimeout(left)
                msg = _recv(w.sock)
                if "parsed" in msg:
                    parsed.append(msg["parsed"])
                    continue
                ok = True
                return CheckResult(bool(msg.get("equal")), unusable=tuple(msg.get("unusable", ())),
                                   reason=str(msg.get("reason", "")), seconds=time.monotonic() - t0)
        except TimeoutError:
            self.kills += 1
            side = "a" if not parsed else ("b" if parsed == ["a"] else "")
            return CheckResult(False, timed_out=True, unusable=(side,) if side else (),
                               reason=f"time limit {timeout:g} s", seconds=time.monotonic() - t0)
        except (EOFError, OSError, ValueError) as e:  # the worker died (e.g. at its memory cap)
            self.kills += 1
            return CheckResult(False, reason=f"worker died: {type(e).__name__}", seconds=time.monotonic() - t0)
        finally:
            self._release(w, ok)

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for w in idle:
            w.kill()
        with self._zlock:
            if self._zygote is not None:
                self._zygote.close()
                self._zygote = None


_POOL: GradingPool | None = None
_POOL_LOCK = threading.Lock()


def default_pool() -> GradingPool:
    """The process-wide pool (created on first use, shut down at exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._closed:
            _POOL = GradingPool()
        return _POOL


def shutdown() -> None:
    """Stop the process-wide pool's workers (a later check starts new ones)."""
    with _POOL_LOCK:
        pool = _POOL
    if pool is not None:
        pool.shutdown()


atexit.register(shutdown)


def check(a: str, b: str, *, timeout: float = DEFAULT_TIMEOUT, limits: Any = None) -> CheckResult:
    """:meth:`GradingPool.check` on the process-wide pool."""
    return default_pool().check(a, b, timeout=timeout, limits=limits)


def equivalent(a: str, b: str, *, timeout: float = DEFAULT_TIMEOUT, limits: Any = None) -> bool:
    """True when ``a`` and ``b`` parse (whitelist parser, else math-verify's LaTeX
    grammar), pass the size bounds and compare equal under math-verify's ``verify``,
    all within ``timeout`` seconds in a worker process."""
    return check(a, b, timeout=timeout, limits=limits).equal


# -- off the event loop ----------------------------------------------------------------
class NeedsWorker(BaseException):
    """Raised by :class:`ttc.answers.Equivalence` inside :func:`in_process_only` when a
    verdict needs a worker check. A ``BaseException``, so an ``except Exception`` in
    the graded code cannot swallow it."""


_LOCAL = threading.local()


class in_process_only:  # noqa: N801 (used as a function: ``with in_process_only():``)
    """Within this block (this thread only), equivalence checks that would need a
    worker process raise :class:`NeedsWorker` instead of blocking. (A class, not a
    generator context manager: it is entered for every stopping-rule check.)"""

    __slots__ = ("prev",)

    def __enter__(self) -> None:
        self.prev = getattr(_LOCAL, "strict", False)
        _LOCAL.strict = True

    def __exit__(self, *exc: object) -> None:
        _LOCAL.strict = self.prev


def workers_forbidden() -> bool:
    return getattr(_LOCAL, "strict", False)


_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=32, thread_name_prefix="ttc-grade")
        return _EXECUTOR


async def off_loop(fn: Callable[..., T], *args: Any, pure: bool = False, **kwargs: Any) -> T:
    """Run a blocking grading call (``group_answers``, a vote, a stopping rule, a
    ``decide``) on the grading thread pool and await it, so the event loop keeps
    serving every other question meanwhile.

    ``pure=True`` (for calls without side effects, safe to run twice) first runs
    ``fn`` inline under :func:`in_process_only`: when every verdict it needs is
    in-process (equal strings, numbers, cached, prose) it returns at once, without a
    thread hop, and only a call that needs a worker check moves to the thread pool.
    Custom equivalence callables that are not :class:`ttc.answers.Equivalence` run
    inline in that first attempt."""
    if pure:
        try:
            with in_process_only():
                return fn(*args, **kwargs)
        except NeedsWorker:
            pass
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), lambda: fn(*args, **kwargs))
