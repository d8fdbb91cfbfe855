"""``python -m <module> args`` for tests: started cold, as a shell starts it, or warm, forked
from a server that has already imported torch, Lightning and timm.

Why: a cold ``python -m src.train`` spends ~12 s on 2 cores importing torch, Lightning (which
imports torchmetrics, and through it transformers, scipy.signal and torchvision) and timm before
it reads its config, and the suite starts well over a hundred of them. A warm start is a fork.

What a warm process is: a real process — its own pid, signals, exit status and file descriptors,
DataLoader workers and DDP children of its own — that runs the module as ``python -m`` does
(``runpy._run_module_as_main`` in a fresh ``__main__``), with the request's argv, working
directory, environment, ``sys.path`` (cwd, then ``PYTHONPATH``), signal mask and stdio. The server
imports third-party libraries only, never this project, so every warm run imports ``src`` itself.

What a warm process cannot be: one whose environment differed when those libraries were imported
(``HF_HOME`` is read by huggingface_hub at import, for one). So a request whose environment
differs from the server's in a key outside ``RUNTIME_ENV`` starts cold, as do requests with
interpreter flags (``-X importtime``) and ``cold=True`` — tests about a process's first seconds,
its imports, or a command exactly as a user types it. Warm stdio is unbuffered, as a cold
process's is under ``PYTHONUNBUFFERED=1``; its hash seed is the server's.
"""

from __future__ import annotations

import io
import json
import os
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What the server imports: the libraries every `src` command loads before it reads its config.
PRELOAD = ("torch", "lightning", "timm", "hydra", "omegaconf", "safetensors.torch")
# Environment keys read when used, not when a preloaded library is imported: a warm request may
# set, change or drop them. PYTHONPATH and TMPDIR are applied to the fork (sys.path, tempfile).
RUNTIME_ENV = (
    "PATH",  # looked up when a command runs (Lightning asks shutil.which("srun") per Trainer)
    "OMP_NUM_THREADS",
    "PYTHONUNBUFFERED",
    "PYTHONPATH",
    "TMPDIR",
    "PROJECT_ROOT",
    "PYTEST_CURRENT_TEST",
    "HYDRA_FULL_ERROR",
)
RUNTIME_ENV_PREFIXES = ("PACE_", "WANDB_", "SLURM_", "PL_")
# The server's own environment on top of the test session's.
SERVER_ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start(
    module: str,
    *args: str,
    cwd: str | os.PathLike = ROOT,
    env: dict[str, str] | None = None,
    stdin=None,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text: bool = True,
    python_flags: tuple[str, ...] = (),
    cold: bool = False,
    start_new_session: bool = False,
) -> subprocess.Popen | WarmProcess:
    """``python [flags] -m module args`` — warm when it can be, else a cold ``subprocess.Popen``.
    Both answer ``pid``, ``poll``, ``wait``, ``communicate``, ``send_signal``, ``kill``,
    ``stdout``/``stderr`` and ``returncode`` the same way."""
    env = dict(os.environ if env is None else env)
    argv = [sys.executable, *python_flags, "-m", module, *args]
    why_cold = "asked" if cold else "flags" if python_flags else _server().why_not(env)
    STARTS[why_cold or "warm"] += 1
    if why_cold:
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr, text=text,
            start_new_session=start_new_session,
        )  # fmt: skip
    return WarmProcess(
        _server(), argv, module, list(args), Path(cwd), env, stdin, stdout, stderr, text,
        start_new_session,
    )  # fmt: skip


def run(
    module: str, *args: str, timeout: float = 900, input: str | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """``start`` to the end, as ``subprocess.run(capture_output=True)``; a process still running
    after ``timeout`` seconds is killed and raises ``subprocess.TimeoutExpired``."""
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    proc = start(module, *args, **kwargs)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# --- the client side ---------------------------------------------------------------------------


class WarmProcess:
    """A process the warm server forked for this test; the subset of ``subprocess.Popen`` tests
    use. Its exit status comes over the request's socket (the server is its parent)."""

    def __init__(
        self, server, argv, module, args, cwd, env, stdin, stdout, stderr, text, new_session
    ):
        self.args, self.returncode = argv, None
        ours, theirs = [], []  # pipe ends: ours stay here, theirs go to the fork

        def child_end(spec, fd_default: int, mode: str):
            if spec is None:
                return fd_default
            if spec == subprocess.DEVNULL:
                theirs.append(os.open(os.devnull, os.O_RDWR))
                return theirs[-1]
            if spec == subprocess.PIPE:
                read, write = os.pipe()
                mine, child = (write, read) if mode == "w" else (read, write)
                ours.append(mine)
                theirs.append(child)
                return child
            return spec if isinstance(spec, int) else spec.fileno()

        fd_in = child_end(stdin, 0, "w")
        pipe_in = ours[-1] if stdin == subprocess.PIPE else None
        fd_out = child_end(stdout, 1, "r")
        pipe_out = ours[-1] if stdout == subprocess.PIPE else None
        fd_err = fd_out if stderr == subprocess.STDOUT else child_end(stderr, 2, "r")
        pipe_err = ours[-1] if stderr == subprocess.PIPE else None

        self._socket = server.request(
            {
                "module": module,
                "args": args,
                "cwd": str(cwd),
                "env": env,
                "sigmask": [int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])],
                "new_session": new_session,
            },
            [fd_in, fd_out, fd_err],
        )
        for fd in theirs:
            os.close(fd)
        self.pid = int(self._line())
        self._status_lock = threading.Lock()

        def wrap(fd, mode):
            if fd is None:
                return None
            return open(fd, mode + ("" if text else "b"), buffering=-1 if text else 0)

        self.stdin = wrap(pipe_in, "w")
        self.stdout = wrap(pipe_out, "r")
        self.stderr = wrap(pipe_err, "r")
        self._readers: dict[str, threading.Thread] = {}
        self._read: dict[str, list] = {"stdout": [], "stderr": []}

    def poll(self) -> int | None:
        try:
            return self.wait(timeout=0)
        except subprocess.TimeoutExpired:
            return None

    def wait(self, timeout: float | None = None) -> int:
        """The exit status, once the server has sent it. Safe from several threads at once (a
        test may poll from one while it waits in another), as ``Popen.wait`` is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._status_lock:
                if self.returncode is None and select.select([self._socket], [], [], 0)[0]:
                    self.returncode = int(self._line())
            if self.returncode is not None:
                return self.returncode
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            select.select([self._socket], [], [], 0.1 if left is None else min(0.1, left))

    def __del__(self) -> None:
        socket_ = getattr(self, "_socket", None)
        if socket_ is not None:
            socket_.close()

    def _line(self) -> bytes:
        """The server's next line, read a byte at a time: nothing past it leaves the socket, so
        ``poll`` and ``wait`` can ask the socket whether the exit status has come."""
        line = b""
        while not line.endswith(b"\n"):
            byte = self._socket.recv(1)
            if not byte:
                raise RuntimeError(f"the warm server closed the request for {self.args} early")
            line += byte
        return line

    def communicate(self, input=None, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.stdin is not None and not self.stdin.closed:
            if input:
                self.stdin.write(input)
            self.stdin.close()
        for name in ("stdout", "stderr"):
            stream = getattr(self, name)
            if stream is not None and name not in self._readers:
                self._readers[name] = threading.Thread(
                    target=self._read_all, args=(stream, self._read[name]), daemon=True
                )
                self._readers[name].start()
        for reader in self._readers.values():
            reader.join(None if deadline is None else max(0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0, deadline - time.monotonic()))
        return self._joined("stdout"), self._joined("stderr")

    def _joined(self, name: str):
        stream = getattr(self, name)
        if stream is None:
            return None
        return ("" if isinstance(stream, io.TextIOBase) else b"").join(self._read[name])

    @staticmethod
    def _read_all(stream, into: list) -> None:
        while chunk := stream.read(65536):
            into.append(chunk)
        stream.close()

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __enter__(self) -> WarmProcess:
        return self

    def __exit__(self, *exc) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None and not stream.closed:
                stream.close()
        self.wait()


class _Server:
    """The warm server this test session started, and its socket."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="pace-warm-", dir="/tmp")  # short: AF_UNIX paths
        self.path = os.path.join(self.folder, "socket")
        self.env = {**os.environ, **SERVER_ENV}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.processes", self.path],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )  # its stdin is its lifeline: at EOF (this session gone) it exits
        ready = self.process.stdout.readline()
        if ready != b"ready\n":
            raise RuntimeError(f"the warm server did not start (said {ready!r})")

    def why_not(self, env: dict[str, str]) -> str | None:
        """None when a fork of the server is the process ``env`` would start, else why not."""
        differing = {k for k in env.keys() | self.env.keys() if env.get(k) != self.env.get(k)}
        read_at_import = sorted(
            k for k in differing if k not in RUNTIME_ENV and not k.startswith(RUNTIME_ENV_PREFIXES)
        )
        return f"environment: {', '.join(read_at_import)}" if read_at_import else None

    def request(self, request: dict, fds: list[int]) -> socket.socket:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(self.path)
        body = json.dumps(request).encode()
        socket.send_fds(client, [struct.pack("!I", len(body)) + body], fds)
        return client


# How each start went: "warm", or why it was cold. The session's summary prints it.
STARTS: Counter[str] = Counter()
_SERVER: _Server | None = None
_SERVER_LOCK = threading.Lock()


def _server() -> _Server:
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None or _SERVER.process.poll() is not None:
            _SERVER = _Server()
        return _SERVER


def summary() -> str:
    """One line: how many starts were warm, and why the others were cold."""
    cold = sorted((n, why) for why, n in STARTS.items() if why != "warm")
    why = "; ".join(f"{n} {reason}" for n, reason in cold)
    said = f"processes: {STARTS['warm']} started warm, {sum(n for n, _ in cold)} cold"
    return f"{said} ({why})" if why else said


# --- the server side ---------------------------------------------------------------------------


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    (size,) = struct.unpack("!I", data[:4])
    data = data[4:]
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("request cut short")
        data += chunk
    return json.loads(data), fds


def _base_path() -> list[str]:
    """``sys.path`` without what ``python -m`` put first (cwd, then PYTHONPATH's entries)."""
    given = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return sys.path[1 + len(given) :]


def _become(request: dict, fds: list[int], base_path: list[str]) -> None:
    """In the fork: turn into ``python -m module args`` as the request describes, and run it.
    Never returns: the module's end (or its SystemExit) ends the process."""
    import random
    import runpy
    import types

    for fd, target in zip(fds, (0, 1, 2), strict=True):
        if fd != target:
            os.dup2(fd, target)
    for fd in set(fds) - {0, 1, 2}:
        os.close(fd)
    if request["new_session"]:
        os.setsid()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    signal.pthread_sigmask(signal.SIG_SETMASK, request["sigmask"])
    tempfile.tempdir = None  # re-read TMPDIR
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    given = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["cwd"], *given, *base_path]
    for name in [n for n in sys.modules if n == "tests" or n.startswith("tests.")]:
        del sys.modules[name]
    sys.modules["__main__"] = types.ModuleType("__main__")
    sys.argv = [request["module"], *request["args"]]
    sys.orig_argv = [sys.executable, "-m", request["module"], *request["args"]]
    runpy._run_module_as_main(request["module"], alter_argv=True)
    sys.exit(0)


def _tell(conn: socket.socket, number: int) -> None:
    try:
        conn.sendall(b"%d\n" % number)
    except OSError:  # the test that asked has gone: nothing to tell
        pass


def serve(path: str) -> None:
    """Import the libraries, then fork one process per request until stdin closes."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # a fork copies only the forking thread: another one's locks would hang it
        raise RuntimeError(f"the warm server runs {threads} threads after its imports")
    base_path = _base_path()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(0, selectors.EVENT_READ)
    running: dict[int, socket.socket] = {}
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in selector.select(timeout=0.02):
            if key.fileobj == 0:
                if not os.read(0, 4096):
                    return
                continue
            conn, _ = listener.accept()
            try:
                request, fds = _receive(conn)
            except (OSError, ValueError) as error:
                print(f"warm server: bad request: {error}", file=sys.stderr)
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                selector.close()
                listener.close()
                conn.close()
                for other in running.values():
                    other.close()
                _become(request, fds, base_path)
            for fd in fds:
                os.close(fd)
            _tell(conn, pid)
            running[pid] = conn
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = running.pop(pid, None)
            if conn is not None:
                _tell(conn, os.waitstatus_to_exitcode(status))
                conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
