"""How :class:`~engines.openai_engine.OpenAIEngine` reaches its servers: endpoints and
their health, the concurrency cap, timeouts, error classification and retries.

* **Clients.** One ``openai.AsyncOpenAI`` per endpoint, created once and reused for the
  engine's life, with the SDK's own retries off (``max_retries=0``: retries are ours, with
  tenacity), on the SDK's aiohttp transport when aiohttp is installed (httpx's connection
  pool walks every connection on each request), and without the SDK's ``X-Stainless-*``
  telemetry headers unless ``sdk_headers=True``.
* **Direct requests** (``http_backend="direct"``, the default with aiohttp): a request that
  is not streamed goes straight to an ``aiohttp.ClientSession`` of the endpoint, with the
  URL and headers the SDK builds for its path (asked of the SDK once per path, then
  reused) and the body serialised as the SDK does. This skips the SDK's per-request option
  merging, header building and its httpx layer, about half of the client's CPU per
  request (benchmarks/openai_concurrency.py). Failures are raised as the SDK raises them
  (the SDK's own aiohttp-to-httpx error map, then ``APITimeoutError`` /
  ``APIConnectionError``; a non-2xx reply becomes the SDK's ``APIStatusError`` from
  ``_make_status_error_from_response``), so classification below is the same. Streams
  always go through the SDK.
* **Credentials in a URL** (``http://user:secret@host/v1``) are taken out of the URL and
  sent as HTTP basic auth (what httpx does with them; aiohttp refuses them in the URL);
  no error text or endpoint listing ever shows them (:meth:`Transport.redact`).
* **Endpoints.** Each attempt goes to the healthy endpoint with the fewest requests in
  flight (round robin on ties); one that fails with a connection error, timeout, 429 or
  5xx is unhealthy for ``cooldown`` seconds (or its ``Retry-After``), and with several
  endpoints the retry goes elsewhere at once.
* **Errors** (:meth:`Transport.classify`): connection errors, timeouts, 429 (honouring
  ``Retry-After``/``retry-after-ms``), 408/409/5xx and malformed replies are retryable
  (:class:`Retryable`); 400, 401, 403, 404 and 422 are final with the server's message,
  context-length errors as :class:`ContextLengthExceeded`. A refused or reset connection
  is reported as such, not as the connect timeout the aiohttp transport turns it into.
* **Retries** (:meth:`Transport.retrying`): exponential back-off with full jitter, at most
  ``max_attempts`` attempts, then an :class:`~ttc.engine.EngineError` listing every attempt.
  The first attempt runs outside tenacity (the hot path: most requests succeed).
* **Back-pressure and timeouts**: one ``asyncio.Semaphore(max_concurrency)`` per engine,
  held for each HTTP attempt (not during back-off sleeps) or for a whole stream; a call's
  first attempt may take its place before it is built (:meth:`Transport.slot`);
  ``timeout`` seconds per attempt. A timed-out attempt's connection is closed (vLLM
  aborts a request whose client disconnects) before its retry waits its back-off.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx2
import openai
import pydantic
import yarl
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from ttc.budget import BudgetExhausted
from ttc.engine import EngineError

__all__ = ["ContextLengthExceeded", "DirectPost", "Endpoint", "Reply", "Retryable", "Slot", "Transport",
           "reply_cut", "retry_after"]

T = TypeVar("T")

#: The openai SDK's per-request telemetry headers (see ``OpenAIEngine(sdk_headers=...)``).
_SDK_HEADERS = (
    "X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS", "X-Stainless-Arch",
    "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Async",
)  # (the SDK adds X-Stainless-Retry-Count / -Read-Timeout per request whatever the defaults say)


class ContextLengthExceeded(EngineError):
    """The prompt plus ``max_tokens`` do not fit the server's context window (HTTP 400)."""


class Retryable(Exception):
    """One failed attempt that may succeed if tried again."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 endpoint: Endpoint | None = None, endpoint_fault: bool = False):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.endpoint = endpoint
        self.endpoint_fault = endpoint_fault


@dataclass(frozen=True)
class Reply:
    """A reply to a request that was not streamed: its status and body."""

    status_code: int
    content: bytes


class DirectPost:
    """Requests to one endpoint straight over aiohttp, built as ``client`` builds them.

    The URL and headers of a path are taken from the SDK's own request building once
    (``_build_request`` after ``_prepare_options``/``_prepare_request``, so its base URL,
    API key or basic auth, default headers and omitted telemetry headers all hold) and
    reused; ``Content-Length`` is aiohttp's. The body is serialised with the SDK's
    ``openapi_dumps``. Redirects are followed, as the SDK's client does. Errors are raised
    as the SDK raises them (see the module doc)."""

    def __init__(self, client: openai.AsyncOpenAI, limit: int, keepalive: float = 5.0):
        from openai._utils._json import openapi_dumps
        from openai._vendor.httpx_aiohttp.transport import map_aiohttp_exceptions

        self.client = client
        self.limit = limit
        self.keepalive = keepalive
        self._dumps = openapi_dumps
        self._map = map_aiohttp_exceptions
        self._session: Any = None
        self._templates: dict[str, tuple[yarl.URL, list[tuple[str, str]]]] = {}

    def session(self) -> Any:
        """The endpoint's session (made on first use, inside the running loop)."""
        if self._session is None:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self.limit, keepalive_timeout=self.keepalive)
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def _template(self, path: str) -> tuple[yarl.URL, list[tuple[str, str]]]:
        t = self._templates.get(path)
        if t is None:
            from openai._models import FinalRequestOptions

            c = self.client
            options = await c._prepare_options(FinalRequestOptions.construct(method="post", url=path, json_data={}))
            req = c._build_request(options)
            await c._prepare_request(req)
            headers = [(k, v) for k, v in req.headers.multi_items() if k.lower() != "content-length"]
            t = self._templates[path] = (yarl.URL(str(req.url), encoded=True), headers)
        return t

    async def post(self, path: str, body: dict[str, Any]) -> Reply:
        """POST ``body`` to ``path``: the reply, or the SDK's exception for the failure."""
        t = self._templates.get(path)  # (the hot path: no coroutine once the path is known)
        url, headers = t if t is not None else await self._template(path)
        data = self._dumps(body)
        try:
            async with self.session().post(url, data=data, headers=headers, max_redirects=20) as resp:
                content = await resp.read()
                status, reply_headers = resp.status, resp.headers
        except Exception as exc:  # mapped as the SDK maps it (only on failure: no context manager per request)
            self._raise_mapped(exc, url)
        if not 200 <= status < 300:
            raise self.client._make_status_error_from_response(httpx2.Response(
                status, headers=list(reply_headers.items()), content=content,
                request=httpx2.Request("POST", str(url))))
        return Reply(status, content)

    def _raise_mapped(self, exc: Exception, url: yarl.URL) -> NoReturn:
        """Raise ``exc`` as the SDK raises it: aiohttp's exceptions through the SDK's
        aiohttp-to-httpx map, then ``APITimeoutError`` / ``APIConnectionError``."""
        try:
            with self._map():
                raise exc
        except httpx2.TimeoutException as e:
            raise openai.APITimeoutError(request=httpx2.Request("POST", str(url))) from e
        except (httpx2.RequestError, ssl.SSLError) as e:
            raise openai.APIConnectionError(request=httpx2.Request("POST", str(url))) from e

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class Slot:
    """A place under the concurrency cap taken before an attempt is built
    (:meth:`Transport.slot`): the first :meth:`Transport.post` given it uses it (and
    releases it when done); :meth:`release` gives it back if no attempt took it."""

    __slots__ = ("held", "_sem")

    def __init__(self, sem: asyncio.Semaphore):
        self._sem = sem
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._sem.release()


@dataclass(eq=False)
class Endpoint:
    url: str
    client: openai.AsyncOpenAI
    direct: DirectPost | None = None
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    unhealthy_until: float = 0.0


def _split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its userinfo, and the (user, password) it carried, if any."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"base_url: not a URL ({e})") from None
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc)), (unquote(parts.username or ""), unquote(parts.password or ""))


def _causes(e: BaseException) -> list[BaseException]:
    """``e`` and the chain of its causes and contexts (each once)."""
    seen: list[BaseException] = []
    c: BaseException | None = e
    while c is not None and all(c is not s for s in seen):
        seen.append(c)
        c = c.__cause__ or c.__context__
    return seen


def reply_cut(e: BaseException) -> bool:
    """``e`` says the server's reply started but its body was cut short (the server ran
    the request: aiohttp's ``ClientPayloadError``, h11's incomplete message body)."""
    return any(type(c).__name__ in ("ClientPayloadError", "ContentLengthError") or "complete message body" in str(c)
               for c in _causes(e))


def _connection_failure(e: BaseException) -> BaseException | None:
    """The refused, reset or unresolvable connection behind ``e``, if any (the SDK's
    aiohttp transport reports a refused connection as a connect *timeout*)."""
    return next((c for c in _causes(e) if isinstance(c, (ConnectionError, socket.gaierror))), None)


def _server_message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    try:
        text = e.response.text
    except Exception:  # noqa: BLE001
        text = ""
    return text[:500] or str(e)


def retry_after(headers: Any) -> float | None:
    """The wait a 429/5xx reply asks for (``retry-after-ms``, ``Retry-After`` in seconds or
    as an HTTP date), in seconds; None if it asks for none."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(float(ra), 0.0)
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(ra)
        return max(dt.timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def _is_transport_error(e: BaseException) -> bool:
    mod = type(e).__module__ or ""
    return mod.startswith(("httpx", "httpcore", "h11", "anyio")) or isinstance(e, (ConnectionError, OSError))


class Transport:
    """The endpoints of one engine and how requests reach them (see the module doc).

    Counters: ``attempts`` (HTTP attempts sent), ``in_flight`` and ``max_in_flight``
    (calls holding the concurrency cap now and at most).
    """

    def __init__(
        self,
        urls: Sequence[str],
        api_key: str,
        *,
        name: str,
        max_concurrency: int,
        max_attempts: int,
        timeout: float,
        backoff_base: float,
        backoff_max: float,
        max_retry_after: float,
        cooldown: float,
        http_backend: Literal["direct", "aiohttp", "httpx"],
        sdk_headers: bool,
    ):
        self.name = name
        self.max_concurrency = max_concurrency
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.max_retry_after = max_retry_after
        self.cooldown = cooldown
        self.http_backend = http_backend
        self.sdk_headers = sdk_headers
        self._secrets: list[str] = []
        self.endpoints: list[Endpoint] = []
        for u in urls:
            clean, cred = _split_credentials(u)
            if cred is not None:
                self._secrets += [x for x in cred if len(x) >= 3]
            client = self._client(clean.rstrip("/"), api_key, cred)
            direct = DirectPost(client, max_concurrency) if http_backend == "direct" else None
            self.endpoints.append(Endpoint(clean.rstrip("/"), client, direct))
        self._rr = 0
        self._sem = asyncio.Semaphore(max_concurrency)
        self._backoff = wait_random_exponential(multiplier=backoff_base, max=backoff_max)
        self.in_flight = 0
        self.max_in_flight = 0
        self.attempts = 0

    def _client(self, url: str, api_key: str, cred: tuple[str, str] | None = None) -> openai.AsyncOpenAI:
        """One client (one connection pool) per endpoint, for the engine's life; the
        pool keeps ``max_concurrency`` connections alive: the semaphore never lets more run."""
        limits = httpx2.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        if self.http_backend in ("aiohttp", "direct"):  # direct: the SDK's aiohttp client serves streams
            http = openai.DefaultAioHttpClient(limits=limits, timeout=self.timeout)
        else:
            http = openai.DefaultAsyncHttpxClient(limits=limits, timeout=self.timeout)
        # The SDK's telemetry headers (X-Stainless-*) cost header-handling CPU on every
        # request and mean nothing to a self-hosted server: left out unless sdk_headers=True.
        headers: dict[str, Any] = {} if self.sdk_headers else {h: openai.Omit() for h in _SDK_HEADERS}
        if cred is not None:  # credentials from the URL: basic auth (they never stay in the URL)
            headers["Authorization"] = "Basic " + base64.b64encode(f"{cred[0]}:{cred[1]}".encode()).decode()
        return openai.AsyncOpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=self.timeout, http_client=http,
                                  default_headers=headers)

    def redact(self, text: str) -> str:
        """``text`` with every credential taken from a base URL blanked out."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def endpoint_stats(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [{"url": e.url, "requests": e.requests, "failures": e.failures, "in_flight": e.in_flight,
                 "healthy": e.unhealthy_until <= now} for e in self.endpoints]

    # -- sending -------------------------------------------------------------------------------
    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold a place under the concurrency cap (one attempt, or a whole stream)."""
        async with self._sem:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1

    def start(self, ep: Endpoint) -> None:
        """An attempt goes to ``ep`` (until :meth:`done`)."""
        ep.in_flight += 1
        ep.requests += 1
        self.attempts += 1

    @staticmethod
    def done(ep: Endpoint) -> None:
        ep.in_flight -= 1

    async def slot(self) -> Slot:
        """Take a place under the cap now, for an attempt still to be built (see :class:`Slot`)."""
        await self._sem.acquire()
        return Slot(self._sem)

    async def post(self, ep: Endpoint, path: str, body: dict[str, Any], slot: Slot | None = None
                   ) -> Reply | httpx2.Response:
        """One attempt: POST ``body`` to ``ep``, the raw response (``status_code``,
        ``content``; under the cap, within ``timeout``), directly or through the SDK. The
        raw response is parsed by the caller: the SDK's generic cast to dict costs more
        CPU than ``json.loads`` (benchmarks/openai_concurrency.py). With a ``slot`` still
        held, the attempt takes its place under the cap over instead of waiting for one."""
        sem = self._sem  # held() and start()/done() inline: no context-manager coroutines (the hot path)
        if slot is not None and slot.held:
            slot.held = False  # this attempt's now: released below
        else:
            await sem.acquire()
        try:
            self.in_flight += 1
            if self.in_flight > self.max_in_flight:
                self.max_in_flight = self.in_flight
            ep.in_flight += 1
            ep.requests += 1
            self.attempts += 1
            try:
                async with asyncio.timeout(self.timeout):
                    if ep.direct is not None:
                        return await ep.direct.post(path, body)
                    return await ep.client.post(path, body=body, cast_to=httpx2.Response)
            finally:
                ep.in_flight -= 1
                self.in_flight -= 1
        finally:
            sem.release()

    @staticmethod
    async def open_stream(ep: Endpoint, path: str, body: dict[str, Any]) -> Any:
        """POST a streaming ``body`` to ``ep``: the SDK's stream of JSON chunks (the caller
        holds the cap, counts the attempt with :meth:`start` and bounds the time)."""
        return await ep.client.post(path, body=body, cast_to=dict, stream=True, stream_cls=openai.AsyncStream[dict])

    # -- endpoint choice and errors --------------------------------------------------------------
    def pick(self) -> Endpoint:
        if len(self.endpoints) == 1:
            self._rr += 1
            return self.endpoints[0]
        now = time.monotonic()
        pool = [e for e in self.endpoints if e.unhealthy_until <= now]
        if not pool:  # all cooling down: the one back soonest
            pool = [min(self.endpoints, key=lambda e: e.unhealthy_until)]
        least = min(e.in_flight for e in pool)
        cands = [e for e in pool if e.in_flight == least]
        self._rr += 1
        return cands[self._rr % len(cands)]

    def _fail(self, ep: Endpoint, err: Retryable) -> None:
        ep.failures += 1
        if err.endpoint_fault and len(self.endpoints) > 1:
            hold = self.cooldown if err.retry_after is None else max(err.retry_after, 0.0)
            ep.unhealthy_until = time.monotonic() + hold

    def classify(self, e: BaseException, ep: Endpoint) -> Retryable | EngineError:
        """What a failed attempt at ``ep`` means: retryable, or a final error."""
        where = f" ({ep.url})" if len(self.endpoints) > 1 else ""
        if isinstance(e, Retryable):
            e.endpoint = ep
            return e
        refused = _connection_failure(e) if isinstance(e, (openai.APIConnectionError, OSError)) else None
        if refused is not None:  # (APITimeoutError is an APIConnectionError)
            return Retryable(self.redact(f"connection error: {type(refused).__name__}: {refused}{where}"),
                             endpoint=ep, endpoint_fault=True)
        if isinstance(e, (asyncio.TimeoutError, openai.APITimeoutError)):
            return Retryable(f"timeout after {self.timeout:g}s (the request was aborted){where}", endpoint=ep,
                             endpoint_fault=True)
        if isinstance(e, openai.APIConnectionError):
            cause = e.__cause__ or e
            return Retryable(self.redact(f"connection error: {type(cause).__name__}: {cause}{where}"), endpoint=ep,
                             endpoint_fault=True)
        if isinstance(e, openai.APIStatusError):
            return self._status_error(e, ep, where)
        if isinstance(e, (openai.APIResponseValidationError, json.JSONDecodeError, pydantic.ValidationError,
                          ValueError, KeyError, TypeError, AttributeError)):
            return Retryable(self.redact(f"malformed response: {type(e).__name__}: {str(e)[:200]}{where}"),
                             endpoint=ep)
        if _is_transport_error(e):
            return Retryable(self.redact(f"transport error: {type(e).__name__}: {e}{where}"), endpoint=ep,
                             endpoint_fault=True)
        return EngineError(self.redact(f"{self.name}: unexpected {type(e).__name__}: {e}"))

    def _status_error(self, e: openai.APIStatusError, ep: Endpoint, where: str) -> Retryable | EngineError:
        status, msg = e.status_code, self.redact(_server_message(e))
        if status == 429 or status >= 500 or status in (408, 409):
            return Retryable(f"{status} {msg}{where}", status=status, retry_after=retry_after(e.response.headers),
                             endpoint=ep, endpoint_fault=True)
        low = msg.lower()
        if status == 400 and ("context length" in low or "context window" in low or "maximum context" in low):
            return ContextLengthExceeded(f"{self.name}: context length exceeded: {msg}", status=status)
        return EngineError(f"{self.name}: HTTP {status} from the server{where}: {msg}", status=status)

    def _wait(self, rs: RetryCallState) -> float:
        exc = rs.outcome.exception() if rs.outcome is not None else None
        if isinstance(exc, Retryable):
            if exc.retry_after is not None and not (exc.endpoint_fault and self._healthy_other(exc.endpoint)):
                return min(exc.retry_after, self.max_retry_after)
            if exc.endpoint_fault and self._healthy_other(exc.endpoint):
                return 0.0  # another replica can take it now
        return float(self._backoff(rs))

    def _healthy_other(self, ep: Endpoint | None) -> bool:
        now = time.monotonic()
        return any(e is not ep and e.unhealthy_until <= now for e in self.endpoints)

    def _failed(self, e: Exception, ep: Endpoint, errors: list[str]) -> NoReturn:
        """Raise what attempt failure ``e`` at ``ep`` means (from ``e``): a :class:`Retryable`
        (noted in ``errors``, counted against ``ep``) or the final error."""
        err = self.classify(e, ep)
        if isinstance(err, Retryable):
            errors.append(str(err))
            self._fail(ep, err)
        raise err from e

    async def retrying(self, attempt_fn: Callable[[Endpoint], Awaitable[T]], what: str) -> T:
        """Run ``attempt_fn(endpoint)`` with retries; EngineError when attempts run out.

        The first attempt runs outside tenacity (the hot path: most requests succeed);
        a retryable failure is replayed as tenacity's first attempt, so waits,
        ``Retry-After`` and the attempt count are exactly tenacity's."""
        ep = self.pick()
        try:  # the first attempt, inline (no closure, no tenacity)
            return await attempt_fn(ep)
        except (asyncio.CancelledError, EngineError, BudgetExhausted):
            raise
        except Exception as e:
            errors: list[str] = []
            try:
                self._failed(e, ep, errors)
            except Retryable as r:
                first = r
        return await self._retries(attempt_fn, what, first, errors)

    async def _retries(self, attempt_fn: Callable[[Endpoint], Awaitable[T]], what: str, first: Retryable,
                       errors: list[str]) -> T:
        """The attempts after a ``first`` retryable failure, in tenacity's loop (see :meth:`retrying`)."""

        async def once() -> T:
            ep = self.pick()
            try:
                return await attempt_fn(ep)
            except (asyncio.CancelledError, EngineError, BudgetExhausted):
                raise
            except Exception as e:
                self._failed(e, ep, errors)

        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.max_attempts), wait=self._wait,
                retry=retry_if_exception_type(Retryable), reraise=True,
            ):
                with attempt:
                    if attempt.retry_state.attempt_number == 1:
                        raise first
                    return await once()
        except Retryable as last:
            lines = "; ".join(f"{i + 1}) {m}" for i, m in enumerate(errors))
            raise EngineError(
                f"{self.name}: {what} failed after {len(errors)} attempt(s); last error: {last}. Attempts: {lines}",
                retryable=True, status=last.status,
            ) from last
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        for e in self.endpoints:
            if e.direct is not None:
                await e.direct.close()
            await e.client.close()
