"""Tools for testing code built on ttc, kept apart from the engines users import.

* :mod:`ttc.testing.fault_server`: a fault-injecting OpenAI-compatible HTTP server
  (loopback only) that fails, stalls, cuts replies short and lies about usage on demand,
  for tests and benchmarks of :class:`~ttc.engines.OpenAIEngine` and of what strategies do
  against an untrusted server (``python -m ttc.testing.fault_server``).
* :func:`~ttc.testing.tokens.whitespace_tokens`: the fake token model that server and
  :class:`~ttc.engines.ScriptedEngine` share.

The scripted engine itself stays with the engines (``ttc.engines.ScriptedEngine``): it
is an engine like the others, which users import to unit-test their own strategies.
Nothing here is imported by ``import ttc``; the server needs ``aiohttp``.
"""
