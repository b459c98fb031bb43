"""``ttc serve``: an OpenAI-compatible server that runs any registered ttc strategy.

``create_app(engine, strategies)`` returns the ASGI app (FastAPI) for embedding; the
``ttc serve`` command (:mod:`ttc.serve.cli`) runs it with uvicorn. Agent code reaches any
strategy through the OpenAI protocol (``base_url``), with budgets per request and per API
key, true usage, live streaming where a strategy is one trace, and Prometheus metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app as create_app
    from .background import serving as serving
    from .catalog import Catalog as Catalog
    from .limits import ServeLimits as ServeLimits

__all__ = ["Catalog", "ServeLimits", "create_app", "serving"]


def __getattr__(name: str) -> Any:  # FastAPI is imported when the server is used, not with ttc
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Catalog":
        from .catalog import Catalog

        return Catalog
    if name == "serving":
        from .background import serving

        return serving
    if name == "ServeLimits":
        from .limits import ServeLimits

        return ServeLimits
    raise AttributeError(name)
