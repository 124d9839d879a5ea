"""The local serving supervisor: owns the stable endpoint, runs model servers, swaps them safely.

One supervisor per stable port (``serving_host:serving_port``) runs detached
(``python -m pipeline_tasks.deploy.local``). It holds the stable port's listening socket
for its whole life and hands it to every model server it starts (``--stable-fd``).

A server serves the endpoint's whole set of models (``{name: version}``, the first one deployed
is the default of ``/predict``); each answers by name. Deploying one model starts a server with
the live set where only that model's version differs, so the other models keep their versions
and never stop answering: both servers serve them during the switch. Blue/green:

1. ``start``: a new server starts beside the current one on a private port of its own, serving
   nothing on the stable port yet. The supervisor answers once its ``/ready`` reports the set.
2. The deployer validates it on its private port (canary requests).
3. ``activate``: SIGUSR2 makes the new server accept on the shared socket too; once its
   ``/ready`` says so, SIGUSR1 makes the old one stop accepting there (``DRAIN_S`` to answer
   what it had just accepted), then it is stopped (SIGTERM: it finishes in-flight requests and
   writes its prediction log). Connections waiting in the shared queue are never dropped: both
   accept from it.
4. ``stop``: a candidate that failed validation is stopped; the old one never stopped serving.

The active server is supervised: if it dies, the supervisor starts the same set again and puts
it back on the stable port. Children die with the supervisor (PR_SET_PDEATHSIG).

Control: JSON lines over the unix socket ``<serving_dir>/<port>/control.sock``. State (the active
server) is kept in ``state.json`` beside it. ``SupervisorClient`` is the caller's side;
``local_target.LocalTarget`` drives it for the blue/green orchestrator. (A little over 400 lines:
the supervisor and its client speak one control protocol and are read together.)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline_tasks.core import http, storage
from pipeline_tasks.core.config import PipelineConfig, load_config
from pipeline_tasks.core.names import safe_name

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0
STOP_GRACE_S = 20.0
#: After a switch, the old server stops accepting on the stable socket this long before it is
#: stopped: a connection it accepted in the last instant still gets its answer.
DRAIN_S = 1.0


class SupervisorError(RuntimeError):
    """The supervisor could not do what was asked; the message says why."""


@dataclass
class Child:
    pid: int
    models: dict[str, str]  # name -> version, in the order served (the first is the default)
    private_port: int
    started_at: float
    log_path: str
    active: bool = False
    # the deployer that asked for this candidate (pid, and its start time: pids are reused)
    owner: int | None = None
    owner_started: str | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        return ", ".join(f"{name} v{version}" for name, version in self.models.items())

    def public(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "proc"}
        data["private_url"] = f"http://127.0.0.1:{self.private_port}"
        return data


def control_dir(config: PipelineConfig) -> Path:
    return Path(config.serving_dir) / str(config.serving_port)


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgid(0, 0)


def process_started(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, from /proc), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields_after_name = stat.rpartition(")")[2].split()
    if fields_after_name[0] == "Z":  # a zombie has exited
        return None
    return fields_after_name[19]  # field 22 of stat: starttime


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Supervisor:
    def __init__(self, config: PipelineConfig):
        self.config = config
        self.dir = control_dir(config)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.children: dict[int, Child] = {}
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")
        self.stable = socket.create_server((config.serving_host, config.serving_port),
                                           backlog=2048, reuse_port=False)
        self.stable.set_inheritable(True)

    # -- children ------------------------------------------------------------------------------
    def start(self, models: dict[str, str], owner: int | None = None) -> Child:
        """Start a candidate server of ``models`` (name -> version; the first is the default).
        ``owner`` is the deployer's pid: if it dies before the candidate is activated (a killed
        deploy task), the watcher stops the candidate."""
        if not models:
            raise SupervisorError("a server needs at least one model")
        models = {str(name): str(version) for name, version in models.items()}
        owner_started = process_started(owner) if owner else None
        port = http.free_port()
        first, version = next(iter(models.items()))
        more = f"+{len(models) - 1}" if len(models) > 1 else ""
        log_path = str(self.dir / f"server-{safe_name(first, '_')}-v{version}{more}-{port}.log")
        argv = [sys.executable, "-m", "pipeline_tasks.serving",
                *[arg for name, ref in models.items() for arg in ("--model", f"{name}@{ref}")],
                "--host", "127.0.0.1", "--port", str(port),
                "--stable-fd", str(self.stable.fileno()),
                "--workdir", str(self.dir / "models")]
        with open(log_path, "ab") as out:
            # PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, so children
            # are forked from one thread that lives as long as the supervisor.
            proc = self.spawner.submit(
                subprocess.Popen, argv, stdout=out, stderr=subprocess.STDOUT,
                pass_fds=(self.stable.fileno(),), preexec_fn=_die_with_parent,
                env={**os.environ, "MLOPS_HOME": self.config.home},
            ).result()
        child = Child(proc.pid, models, port, time.time(), log_path, owner=owner,
                      owner_started=owner_started, proc=proc)
        with self.lock:
            self.children[proc.pid] = child
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                with self.lock:
                    self.children.pop(proc.pid, None)
                raise SupervisorError(f"the server for {child.label} exited with code "
                                      f"{proc.returncode} before it was ready:\n"
                                      f"{_tail(log_path)}")
            ready = http.try_json(f"http://127.0.0.1:{port}/ready", timeout=2.0)
            if ready and ready.get("models") == models:
                log.info("started %s: pid %s, port %s", child.label, proc.pid, port)
                return child
            time.sleep(0.2)
        self._terminate(child)
        raise SupervisorError(f"the server for {child.label} was not ready after "
                              f"{READY_TIMEOUT_S:.0f} s:\n{_tail(log_path)}")

    def activate(self, pid: int) -> dict:
        with self.lock:
            child = self.children.get(pid)
            if child is None or child.proc.poll() is not None:
                raise SupervisorError(f"no running candidate with pid {pid}")
            previous = [c for c in self.children.values() if c.active and c.pid != pid]
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while True:
            ready = http.try_json(f"http://127.0.0.1:{child.private_port}/ready",
                                  timeout=2.0)
            if ready and ready.get("stable_endpoint"):
                break
            if child.proc.poll() is not None or time.monotonic() > deadline:
                raise SupervisorError(f"pid {pid} did not take the stable endpoint:\n"
                                      f"{_tail(child.log_path)}")
            time.sleep(0.1)
        with self.lock:
            child.active = True
        for old in previous:  # drain, then stop: no accepted connection is dropped
            with contextlib.suppress(ProcessLookupError):
                os.kill(old.pid, signal.SIGUSR1)
        if previous:
            time.sleep(DRAIN_S)
        for old in previous:
            self._terminate(old)
        self._save()
        log.info("pid %s (%s) is live; stopped %s", pid, child.label, [c.pid for c in previous])
        return {"active": child.public(), "stopped": [c.public() for c in previous]}

    def stop(self, pid: int) -> dict:
        with self.lock:
            child = self.children.get(pid)
        if child is None:
            raise SupervisorError(f"no server with pid {pid}")
        if child.active:
            raise SupervisorError(f"pid {pid} is the live server; deploy another version instead")
        self._terminate(child)
        return {"stopped": child.public()}

    def _terminate(self, child: Child) -> None:
        with self.lock:
            self.children.pop(child.pid, None)
        if child.proc.poll() is None:
            child.proc.terminate()
            try:
                child.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()

    def status(self) -> dict:
        with self.lock:
            children = [c.public() for c in self.children.values()]
        active = next((c for c in children if c["active"]), None)
        return {"pid": os.getpid(), "stable_url": self.stable_url, "active": active,
                "candidates": [c for c in children if not c["active"]]}

    @property
    def stable_url(self) -> str:
        return f"http://{self.config.serving_host}:{self.config.serving_port}"

    def _save(self) -> None:
        storage.atomic_write_json((self.dir / "state.json").as_uri(), self.status())

    def orphans(self) -> list[Child]:
        """Candidates whose deployer is gone: nobody will activate or stop them."""
        with self.lock:
            candidates = [c for c in self.children.values() if not c.active and c.owner]
        return [c for c in candidates if process_started(c.owner) != c.owner_started]

    def watch(self) -> None:
        """Restart the live server if it dies (same version, straight back on the endpoint), and
        stop candidates whose deployer died (a killed deploy task must not leak a server)."""
        while not self.stopping.wait(1.0):
            for child in self.orphans():
                log.warning("stopping candidate pid %s (%s): its deployer, pid %s, is gone",
                            child.pid, child.label, child.owner)
                self._terminate(child)
            with self.lock:
                dead = [c for c in self.children.values() if c.active and c.proc.poll() is not None]
            for child in dead:
                with self.lock:
                    self.children.pop(child.pid, None)
                log.error("live server pid %s (%s) exited with %s; restarting it", child.pid,
                          child.label, child.proc.returncode)
                try:
                    again = self.start(child.models)
                    self.activate(again.pid)
                except SupervisorError as exc:
                    log.error("restart failed: %s", exc)

    def shutdown(self) -> None:
        self.stopping.set()
        with self.lock:
            children = list(self.children.values())
        for child in children:
            self._terminate(child)
        self.spawner.shutdown()
        self.stable.close()

    def handle(self, request: dict) -> dict:
        cmd = request.get("cmd")
        if cmd == "start":
            owner = request.get("owner")
            models = request["models"]
            if not isinstance(models, dict):
                raise SupervisorError("'models' must map model names to versions")
            return {"child": self.start(models, owner=int(owner) if owner else None).public()}
        if cmd == "activate":
            return self.activate(int(request["pid"]))
        if cmd == "stop":
            return self.stop(int(request["pid"]))
        if cmd == "status":
            return self.status()
        if cmd == "shutdown":
            threading.Thread(target=self._exit_soon, daemon=True).start()
            return {"stopping": True}
        raise SupervisorError(f"unknown command {cmd!r}")

    def _exit_soon(self) -> None:
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        try:
            reply = {"ok": True, **self.server.supervisor.handle(json.loads(line))}
        except (SupervisorError, KeyError, ValueError, TypeError) as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # report, keep running
            log.exception("control request failed")
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class _ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(config: PipelineConfig) -> int:
    supervisor = Supervisor(config)
    path = supervisor.dir / "control.sock"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    control = _ControlServer(str(path), _Handler)
    control.supervisor = supervisor
    os.chmod(path, 0o600)

    def stop(signum, frame):
        threading.Thread(target=control.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=supervisor.watch, daemon=True, name="watch").start()
    log.info("supervisor %s: stable endpoint %s, control %s", os.getpid(), supervisor.stable_url,
             path)
    try:
        control.serve_forever(poll_interval=0.5)
    finally:
        supervisor.shutdown()
        control.server_close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log.info("supervisor stopped")
    return 0


class SupervisorClient:
    """The caller's side: talks to the supervisor of ``config``'s serving port, starting it."""

    def __init__(self, config: PipelineConfig):
        self.config = config
        self.dir = control_dir(config)
        self.path = self.dir / "control.sock"

    def call(self, cmd: str, timeout: float = READY_TIMEOUT_S + 30, **kwargs: Any) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.path))
            sock.sendall(json.dumps({"cmd": cmd, **kwargs}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data)
        if not reply.pop("ok"):
            raise SupervisorError(reply["error"])
        return reply

    def running(self) -> bool:
        try:
            self.call("status", timeout=5)
            return True
        except (OSError, ValueError):
            return False

    def ensure_running(self, timeout: float = 60.0) -> dict:
        """Start the supervisor (detached, in its own session) unless it already answers."""
        from filelock import FileLock

        Path(self.config.locks_dir).mkdir(parents=True, exist_ok=True)
        with FileLock(str(Path(self.config.locks_dir) / f"supervisor-{self.config.serving_port}"
                          ".lock"), timeout=timeout):
            if self.running():
                return self.call("status")
            self.dir.mkdir(parents=True, exist_ok=True)
            log_path = self.dir / "supervisor.log"
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "pipeline_tasks.deploy.local"],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, env={**os.environ, "MLOPS_HOME": self.config.home,
                                                 "MLOPS_SERVING_PORT": str(self.config.serving_port),
                                                 "MLOPS_SERVING_HOST": self.config.serving_host})
            deadline = time.monotonic() + timeout
            while not self.running():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SupervisorError(f"the serving supervisor did not start:\n"
                                          f"{_tail(str(log_path))}")
                time.sleep(0.2)
            return self.call("status")

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop the supervisor and every server it runs (no-op when none runs)."""
        if not self.running():
            return
        pid = self.call("status")["pid"]
        self.call("shutdown")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process_started(pid) is None:  # gone, or a zombie
                return
            time.sleep(0.2)
        raise SupervisorError(f"the serving supervisor (pid {pid}) did not stop")


def shutdown_all(config: PipelineConfig) -> list[int]:
    """Stop every supervisor of this home (one per stable port deploys used); returns the ports.
    Each one is asked through its own control socket, so none is killed mid-switch."""
    root = Path(config.serving_dir)
    ports = sorted(int(p.parent.name) for p in root.glob("*/control.sock")
                   if p.parent.name.isdigit()) if root.exists() else []
    errors = []
    for port in ports:
        try:
            SupervisorClient(config.with_overrides(serving_port=port)).shutdown()
        except (SupervisorError, OSError) as exc:
            errors.append(f"port {port}: {exc}")
    if errors:
        raise SupervisorError("could not stop serving supervisor(s): " + "; ".join(errors))
    return ports


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m pipeline_tasks.deploy.local",
                            description=__doc__.splitlines()[0]).parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(load_config())


if __name__ == "__main__":
    sys.exit(main())
