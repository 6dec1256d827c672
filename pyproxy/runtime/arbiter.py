"""The master process ("pyproxy: master"), an Arbiter in gunicorn's sense.

It builds everything before forking (settings, compiled script, module init, sockets, shared
memory, IPC channels), forks the workers and the TCP supervisor, then only supervises: signals
are queued by their handlers and dispatched by the loop (``handle_<name>``), dead children are
reaped and respawned with back-off, and a worker that cannot boot stops the server with a clear
message instead of being restarted forever.
"""

from __future__ import annotations

import ctypes
import faulthandler
import gc
import os
import pwd
import resource
import select
import signal
import socket
import sys
import tempfile
import time

import psutil
from setproctitle import setproctitle

from ..assembly import reload as config_reload
from ..kernel.notify import Notifier

from ..mi.server import Endpoints, MIServer, MIStartError
from ..myself import Myself
from ..config.values import NOTICE
from ..script.exports import ModuleInitError
from ..tls.domains import DomainTable, TLSConfigError
from ..kernel import ipc
from .listeners import BindError, bind_all
from ..kernel.logs import follow_debug_level, log, set_role, to_stderr
from ..kernel.logs import setup as setup_logging
from ..kernel.process import beat_interval, run_as, unknown_user_or_group
from ..kernel.shm import OutOfSharedMemory, SharedMemory
from .supervisor import LocalSupervisor, Supervisor
from .worker import BOOT_FAILED, Worker

STOP_TIMEOUT = 5.0          # seconds children get to exit on TERM before they are killed
DUMP_WAIT = 1.0             # seconds a hung worker gets to write its Python stack before it is killed
STATUS_EVERY = 10.0         # seconds between STATUS= updates to systemd
RESPAWN_LIMIT = 5           # quick deaths in a row before the master gives up


class Halt(Exception):
    """Stop the server with this exit status and reason."""

    def __init__(self, reason: str, status: int = 1):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Arbiter:
    SIGNALS = {signal.SIGTERM: "term", signal.SIGINT: "int", signal.SIGHUP: "hup",
               signal.SIGUSR1: "usr1", signal.SIGUSR2: "usr2", signal.SIGCHLD: "chld"}

    def __init__(self, config, args, load=None):
        self.config = config
        self.load = load                     # reads and checks the config file again (reload)
        self.inherited = _open_descriptors()    # what the starting process left open
        self.settings = config.settings
        self.args = args
        self.initialized: list = []          # modules whose mod_init ran (mod_destroy at stop)
        self.children: dict[int, tuple[str, int]] = {}      # pid -> (kind, index)
        self.started: dict[tuple[str, int], float] = {}
        self.quick_deaths: dict[tuple[str, int], int] = {}
        self.signal_queue: list[int] = []
        self.stopping = False
        self.start_report: int | None = None     # daemon mode: the pipe the starting command reads
        self.incarnations: dict[int, int] = {}    # worker index -> how many times it was respawned
        self.notifier = Notifier()
        self.ready = False                   # READY=1 sent: every worker and the supervisor beat
        self.fed_at = self.status_at = 0.0   # the last WATCHDOG=1 and STATUS= sent
        self.hung: set[int] = set()          # pids killed for a silent heartbeat
        self.retiring: set[int] = set()      # pids stopped on purpose, respawned without a complaint

    # -- building, before fork ------------------------------------------------------------------
    def build(self) -> None:
        s = self.settings
        self.log_destination = setup_logging(s.debug, s.log_stderror, s.log_facility)
        if problem := unknown_user_or_group(s):     # before anything is made for that user
            raise Halt(problem)
        self.workers = s.children if s.fork else 1
        if s.open_files_limit:
            raise_open_files_limit(s.open_files_limit)
        self.tls = self.build_tls()         # (the config's own errors before the machine's: a port in use)
        try:
            self.listeners = bind_all(s)
        except BindError as e:
            raise Halt(str(e)) from None
        if not self.listeners:
            raise Halt("nothing to listen on: every listen= entry is disabled")
        specs = [_spec(l) for l in self.listeners]
        self.myself = Myself(specs, s.alias, s.port)
        try:
            self.shm = SharedMemory(self.args.shm_mb, self.workers + 2, s.tcp_max_connections)
        except OutOfSharedMemory as e:
            raise Halt(str(e)) from None
        self.shm.set_debug_level(s.debug)
        for module in self.config.modules.values():
            if module.mod_init:
                try:
                    module.mod_init(self.config)
                except ModuleInitError as e:
                    raise Halt(f"module {module.name}: {e}") from None
            self.initialized.append(module)
        self.handoffs = [ipc.datagram_pair() for _ in range(self.workers)]
        self.channels = [ipc.channel_pair() for _ in range(self.workers)]
        self.master_channel, self.supervisor_master_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.master_channel.setblocking(False)
        self.supervisor_master_end.setblocking(False)
        self.with_mi = bool(s.fifo or s.mi_socket or s.metrics_listen)
        self.mi_recv, self.mi_reply = ipc.datagram_pair() if self.with_mi else (None, None)
        self.mi_endpoints = None
        if self.with_mi and s.fork:
            try:
                self.mi_endpoints = Endpoints(s)
            except MIStartError as e:
                raise Halt(str(e)) from None
        self.started_at = time.time()
        # where a hung worker writes its Python stack (faulthandler, on SIGUSR2) for the master to log
        self.stack_dump = tempfile.TemporaryFile() if s.fork else None

    def build_tls(self):
        """One OpenSSL context per TLS domain, made here so that every worker inherits them."""
        s = self.settings
        if s.disable_tls:
            return None
        if s.tls_autogenerate:
            self.autogenerate_certificates()
        try:
            table = DomainTable.build(s, self.config.tls_domains, self.config.cfg_dir, serving=True)
        except TLSConfigError as e:
            raise Halt("\n".join(e.located(self.config.path))) from None
        for warning in table.warnings:
            log.warning(f"TLS: {warning}")
        return table

    def autogenerate_certificates(self) -> None:
        """tls_autogenerate=yes: a throw-away CA and server certificate when none exist yet."""
        from ..certs import CertError, autogenerate, autogenerate_pending
        pending = autogenerate_pending(self.settings, self.config.cfg_dir)
        if pending is None:
            return
        cert, key = pending
        try:
            created = autogenerate(cert, key)
            ids = run_as(self.settings.user, self.settings.group)
            for path in {cert, key} if ids else ():     # tls_reload reads them after the drop to -u
                os.chown(path, *ids)
        except (CertError, KeyError, OSError) as e:
            raise Halt(f"tls_autogenerate: {getattr(e, 'strerror', None) or e}") from None
        log.warning("tls_autogenerate: created a throw-away CA and server certificate (replace them "
                    "for production): " + ", ".join(map(str, created)))

    def new_worker(self, index: int, local=None) -> Worker:
        return Worker(index, self.workers, self.config, self.listeners, self.shm, self.myself,
                      self.handoffs[index][0], [h[1] for h in self.handoffs],
                      None if local else self.channels[index][1], local, self.tls, self.mi_reply,
                      self.incarnations.get(index, 0))

    # -- running --------------------------------------------------------------------------------
    def run(self) -> int:
        try:
            self.build()
            if not self.settings.fork:
                return self.run_single()
            if not self.args.foreground:
                if to_stderr():
                    print(f"pyproxy: warning: logging to {self.log_destination}, which a daemon does not "
                          "have: its log lines are lost; use -D (systemd, containers) or a syslog",
                          file=sys.stderr)
                else:
                    print(f"pyproxy: logging to {self.log_destination}", file=sys.stderr)
                self.start_report = daemonize(self.inherited)
            self.enter_wdir()
            self.write_pid_file()       # before the drop: its folder (/run) is often root's alone
            self.drop_privileges()
            self.install_signals()
            setproctitle("pyproxy: master")
            set_role("master")
            log.log(NOTICE, f"pyproxy started: {', '.join(map(str, self.listeners))}; {self.workers} workers")
            self.report_start("ok")
            # Everything built so far lives as long as the server: out of the collector's sight,
            # no process walks (and so dirties, copy-on-write) those pages again (Python docs, gc.freeze)
            gc.freeze()
            self.spawn("supervisor", 0)
            for index in range(self.workers):
                self.spawn("worker", index)
            if self.with_mi:
                self.spawn("mi", 0)
            self.loop()
            return 0
        except Halt as e:
            for line in e.reason.splitlines():      # (each a log line of its own, stamped)
                log.critical(line)
            if not to_stderr():
                print(f"pyproxy: {e.reason}", file=sys.stderr)    # syslog alone would hide it
            self.report_start(e.reason)
            self.stop()
            return e.status
        finally:
            self.destroy_modules()
            self.remove_pid_file()
            if getattr(self, "mi_endpoints", None) is not None:
                self.mi_endpoints.remove()

    def destroy_modules(self) -> None:
        """After the children stopped: what the modules started in the master ends (a write-back
        cache is written out, shared files removed)."""
        for module in reversed(self.initialized):
            if module.mod_destroy:
                try:
                    module.mod_destroy(self.config)
                except Exception as e:
                    log.error(f"module {module.name}: stopping: {e}")
        self.initialized = []

    def report_start(self, outcome: str) -> None:
        """Tell the command that started the daemon how the start went (it waits for this)."""
        fd, self.start_report = self.start_report, None
        if fd is not None:
            try:
                os.write(fd, outcome.encode("utf-8", "replace")[:4000] + b"\n")
            except OSError:
                pass
            os.close(fd)

    def run_single(self) -> int:
        """fork=no: one process, one loop, UDP and TCP (debugging)."""
        self.enter_wdir()
        self.write_pid_file()
        self.drop_privileges()
        if self.with_mi:
            log.warning("fifo/mi_socket/metrics_listen: the management process needs fork=yes; it is off")
        local = LocalSupervisor(self.shm, self.settings)
        worker = self.new_worker(0, local)
        local.streams = worker.streams
        log.log(NOTICE, f"pyproxy started in one process (fork=no): {', '.join(map(str, self.listeners))}")
        worker.boot()
        # one process: Ctrl-C and TERM both stop it (boot() left INT to a master there is not)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: worker.loop.stop())
        signal.signal(signal.SIGUSR1, lambda *_: self.handle_usr1())
        signal.signal(signal.SIGHUP, lambda *_: log.warning("SIGHUP: a reload needs fork=yes; restart "
                                                            "pyproxy to apply a changed configuration"))
        self.notifier.ready(f"one process (fork=no); {', '.join(map(str, self.listeners))}")
        worker.serve()
        self.notifier.stopping()
        return 0

    def spawn(self, kind: str, index: int) -> None:
        pid = os.fork()
        if pid:
            self.children[pid] = (kind, index)
            self.started[(kind, index)] = time.monotonic()
            return
        status = 0
        set_role(_role(kind, index))        # a failure before become() names this process too
        try:
            die_with_parent()
            for sig in self.SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            if kind == "worker":
                worker = self.new_worker(index)
                worker.load_config = self.load
                try:
                    worker.boot()
                except Exception:
                    log.exception(f"worker {index + 1} cannot start")
                    status = BOOT_FAILED
                    return
                faulthandler.register(signal.SIGUSR2, file=self.stack_dump.fileno(), chain=False)
                worker.serve()
            elif kind == "mi":
                mi = MIServer(self.config, os.getppid(), self.started_at, self.shm, self.workers,
                              [h[1] for h in self.handoffs], self.mi_recv, signal.SIGUSR2)
                mi.load_config = self.load          # (reload checks the file before asking the master)
                mi.run(self.mi_endpoints)
            else:
                Supervisor(self.listeners, [c[0] for c in self.channels], self.supervisor_master_end,
                           self.shm, self.settings, self.workers).run()
        except BaseException:
            log.exception(f"{_role(kind, index)} crashed")
            status = 1
        finally:
            logging_flush()
            os._exit(status)

    def install_signals(self) -> None:
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_r, False)
        os.set_blocking(self.wakeup_w, False)
        signal.set_wakeup_fd(self.wakeup_w)
        for sig in self.SIGNALS:
            signal.signal(sig, lambda signum, frame: self.signal_queue.append(signum))

    def loop(self) -> None:
        while True:
            try:
                select.select([self.wakeup_r], [], [], self.wake_every)
                os.read(self.wakeup_r, 512)
            except (BlockingIOError, InterruptedError):
                pass
            while self.signal_queue:
                getattr(self, "handle_" + self.SIGNALS[self.signal_queue.pop(0)])()
            self.reap()
            follow_debug_level(self.shm)        # the ``debug`` MI command's level
            if self.stopping:
                return
            self.watch()

    # -- signals --------------------------------------------------------------------------------
    def handle_term(self) -> None:
        log.log(NOTICE, "stopping (SIGTERM)")
        self.stop()

    def handle_int(self) -> None:
        log.log(NOTICE, "stopping (SIGINT)")
        self.stop()

    def handle_hup(self) -> None:
        """Reload: check the file; if it is clean, swap it in place here and in every worker."""
        self.notifier.reloading()
        log.log(NOTICE, f"SIGHUP: reloading {self.config.path}")
        try:
            self.reload()
        except Exception:           # a bug in a reload must not stop a server that runs
            log.exception("reload failed; the running configuration stays where it was not applied")
        finally:
            if self.ready:
                self.notifier.ready(self.status_text())

    def reload(self) -> None:
        try:
            new = config_reload.load_new(self.load, self.config)
        except config_reload.Refusal as e:
            for error in e.errors:
                log.error(f"reload: {error}")
            log.error(f"reload refused: {e.reason}")
            return
        tls = None
        if not self.settings.disable_tls:
            try:
                tls = DomainTable.build(new.settings, new.tls_domains, new.cfg_dir, serving=True)
            except TLSConfigError as e:
                log.error("reload refused: TLS: " + "; ".join(e.messages))
                return
        for change in new.held_back:
            log.warning(f"reload: {change} takes effect at the next restart")
        config_reload.apply(self.config, new)
        self.tls = tls
        self.shm.set_debug_level(self.settings.debug)
        for index, (_, send) in enumerate(self.handoffs):
            try:
                send.send(ipc.encode(ipc.Control(0, f"reload {new.digest}")))
            except OSError as e:    # its queue is full: stuck, or far behind (its replacement has it)
                log.error(f"reload: worker {index + 1} cannot be told ({e.strerror}); it keeps the old "
                          "configuration until it is restarted")
        for pid, (kind, _) in self.children.items():
            if kind == "mi":        # it holds the config too; the master starts it again with the new one
                self.retiring.add(pid)
                os.kill(pid, signal.SIGTERM)
        log.log(NOTICE, f"configuration reloaded: {len(new.script.routes)} route block(s), "
                        f"{len(new.tls_domains)} TLS domain(s)")

    def handle_usr1(self) -> None:
        """The counters of every process in the log (fork=no: the one process's)."""
        for slot in range(self.workers + 2 if self.settings.fork else 1):
            role = f"worker {slot + 1}" if slot < self.workers else ("tcp main" if slot == self.workers else "master")
            counters = self.shm.stats_of(slot).read()
            log.warning(f"statistics of {role}: " + ", ".join(f"{k}={v}" for k, v in counters.items()))

    def handle_usr2(self) -> None:
        """Sent by the mi process after tls_reload: workers started from now on use the new files."""
        if self.tls is not None:
            try:
                self.tls = self.build_tls()
                log.info("TLS domains reloaded in the master")
            except (Halt, TLSConfigError) as e:
                log.error(f"TLS reload in the master failed, respawned workers keep the old files: {e}")

    def handle_chld(self) -> None:
        pass        # reap() runs after every wake-up

    # -- children -------------------------------------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            kind, index = self.children.pop(pid, (None, None))
            if kind is None or self.stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            name = _role(kind, index)
            if pid in self.retiring:
                self.retiring.discard(pid)
                self.spawn(kind, index)
                continue
            if code == BOOT_FAILED:
                raise Halt(f"{name} could not start (see the log above); stopping")
            how = f"signal {-code}" if code < 0 else f"status {code}"
            if pid in self.hung:
                self.hung.discard(pid)
                how = "a silent heartbeat (killed)"
            if kind == "supervisor":    # a new one would deal its connection ids again, to other peers
                raise Halt(f"{name} (pid {pid}) died with {how}, and the table of TCP/TLS connections with "
                           "it; stopping, as OpenSER did (a service manager starts pyproxy again)")
            self.note_death((kind, index), name)
            log.error(f"{name} (pid {pid}) died with {how}; respawning it")
            if kind == "worker":
                self.incarnations[index] = self.incarnations.get(index, 0) + 1
                self.tell_supervisor(ipc.WorkerDied(index, self.incarnations[index]))
            self.spawn(kind, index)

    def note_death(self, key, name: str) -> None:
        if time.monotonic() - self.started.get(key, 0.0) < 1.0:
            self.quick_deaths[key] = self.quick_deaths.get(key, 0) + 1
            if self.quick_deaths[key] >= RESPAWN_LIMIT:
                raise Halt(f"{name} died {RESPAWN_LIMIT} times within a second of starting; stopping")
            time.sleep(0.1 * self.quick_deaths[key])     # back off
        else:
            self.quick_deaths[key] = 0

    def tell_supervisor(self, item: tuple) -> None:
        try:
            self.master_channel.send(ipc.encode(item))
        except OSError:
            pass

    def stop(self) -> None:
        """TERM every child, wait a bounded time, then KILL what is left."""
        self.stopping = True
        self.notifier.stopping()
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                self.children.pop(pid, None)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self.children.pop(pid, None)
            else:
                time.sleep(0.02)
        for pid in list(self.children):
            log.warning(f"child {pid} did not stop in {STOP_TIMEOUT:.0f} s; killing it")
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.children.clear()

    # -- heartbeats, readiness and the systemd watchdog ------------------------------------------
    @property
    def wake_every(self) -> float:
        interval = self.notifier.watchdog_interval
        return min(1.0, interval / 2) if interval else 1.0

    def silence(self, pid: int, now: float) -> float:
        """Seconds since a child's loop last turned (its start counts as a turn)."""
        return now - max(self.shm.last_beat(self.slot_of(pid)), self.started[self.children[pid]])

    def beaters(self) -> list[int]:
        return [pid for pid, (kind, _) in self.children.items() if kind in ("worker", "supervisor")]

    def watch(self) -> None:
        now = time.monotonic()
        silences = {pid: self.silence(pid, now) for pid in self.beaters()}
        self.judge(silences)
        if not self.ready and all(self.shm.last_beat(self.slot_of(pid)) >= self.started[self.children[pid]]
                                  for pid in silences):
            self.ready = True
            self.notifier.ready(self.status_text())
        if not self.ready:
            return
        # fed while every loop turned within a few beats: a stuck worker pauses it long before
        # heartbeat_timeout replaces it, and systemd's WatchdogSec then judges the whole service
        answering = 3 * beat_interval(self.settings.heartbeat_timeout)
        interval = self.notifier.watchdog_interval
        if interval and now - self.fed_at >= interval and all(s <= answering for s in silences.values()):
            self.fed_at = now
            self.notifier.watchdog()
        if self.notifier.enabled and now - self.status_at >= STATUS_EVERY:
            self.status_at = now
            self.notifier.status(self.status_text())

    def judge(self, silences: dict[int, float]) -> None:
        """Replace what stays silent past heartbeat_timeout; say when a silent supervisor is back."""
        timeout = self.settings.heartbeat_timeout
        for pid, silent in silences.items():
            if timeout and pid not in self.hung and silent > timeout:
                self.replace_hung(pid, silent)
            elif pid in self.hung and self.children[pid][0] == "supervisor" and silent <= timeout:
                self.hung.discard(pid)
                log.warning(f"tcp main (pid {pid}) turns its loop again")

    def slot_of(self, pid: int) -> int:
        kind, index = self.children[pid]
        return index if kind == "worker" else self.workers

    def status_text(self) -> str:
        return f"{self.workers} workers; {self.shm.connections()} TCP/TLS connections"

    def replace_hung(self, pid: int, silent: float) -> None:
        """A child whose loop stopped turning: say what it was doing; kill a worker, which reap()
        respawns. The supervisor is not killed (its death takes every connection, and the server,
        with it): the watchdog stops being fed, and systemd restarts the whole service."""
        kind, index = self.children[pid]
        self.hung.add(pid)
        try:
            state = psutil.Process(pid).status()
        except psutil.Error:
            state = "gone"
        where = self.stack_of(pid) if state != psutil.STATUS_STOPPED and kind == "worker" else ""
        action = "killing it" if kind == "worker" else (
            "the systemd watchdog is no longer fed" if self.notifier.watchdog_interval else
            "TCP and TLS are not served meanwhile (a service manager's watchdog would restart pyproxy)")
        log.error(f"{_role(kind, index)} (pid {pid}) has not turned its loop for {silent:.0f} s "
                  f"(heartbeat_timeout={self.settings.heartbeat_timeout}; process state: {state}); "
                  f"{action}" + (f"; it was in:\n{where}" if where else ""))
        if kind == "worker":
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stack_of(self, pid: int) -> str:
        """The Python stack of a running but stuck worker, written by faulthandler on SIGUSR2."""
        fd = self.stack_dump.fileno()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            os.kill(pid, signal.SIGUSR2)
        except ProcessLookupError:
            return ""
        deadline, text = time.monotonic() + DUMP_WAIT, b""
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = os.pread(fd, 65536, 0)
            if now and now == text:         # written, and no longer growing
                break
            text = now
        return text.decode("utf-8", "replace").rstrip()

    # -- process set-up -------------------------------------------------------------------------
    def enter_wdir(self) -> None:
        """wdir: the processes' working directory (where a core dump or a relative path lands)."""
        wdir = self.settings.wdir
        if wdir:
            try:
                os.chdir(wdir)
            except OSError as e:
                raise Halt(f"wdir={wdir}: {e.strerror}") from None

    def drop_privileges(self) -> None:
        s = self.settings
        ids = run_as(s.user, s.group)       # known to exist: build() checked
        if ids is None:
            return
        uid, gid = ids
        try:
            os.setgid(gid)
            if uid != -1:
                try:
                    os.initgroups(pwd.getpwuid(uid).pw_name, gid)
                except KeyError:        # a uid without a passwd entry: its group alone
                    os.setgroups([gid])
                os.setuid(uid)
        except PermissionError:
            raise Halt(f"cannot switch to user {s.user or '-'} / group {s.group or '-'}: not root") from None

    def write_pid_file(self) -> None:
        if self.args.pid_file:
            try:
                with open(self.args.pid_file, "w") as f:
                    f.write(f"{os.getpid()}\n")
            except OSError as e:
                raise Halt(f"cannot write the pid file {self.args.pid_file}: {e.strerror}") from None

    def remove_pid_file(self) -> None:
        if self.args.pid_file and getattr(self, "children", None) is not None:
            try:
                with open(self.args.pid_file) as f:
                    if f.read().strip() == str(os.getpid()):
                        os.unlink(self.args.pid_file)
            except FileNotFoundError:
                pass
            except OSError as e:    # e.g. in root's /run after -u: the next start overwrites it
                log.warning(f"cannot remove the pid file {self.args.pid_file}: {e.strerror}")


def logging_flush() -> None:
    for handler in log.handlers:
        try:
            handler.flush()
        except Exception:
            pass


def _role(kind: str, index: int) -> str:
    """A child's name in titles and logs."""
    return {"worker": f"worker {index + 1}", "supervisor": "tcp main", "mi": "mi"}[kind]


def die_with_parent() -> None:
    """Ask Linux to TERM this child if the master disappears (kill -9 of the master)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)       # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def raise_open_files_limit(wanted: int) -> None:
    """open_files_limit: every connection is a descriptor; the soft limit (often 1024) goes up to
    ``wanted``, the hard limit too when we may (root)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted <= soft:
        return
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= wanted else wanted
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, new_hard))
    except (ValueError, OSError):
        raise Halt(f"open_files_limit={wanted}: above the hard limit ({hard}) that this user may not "
                   f"raise; raise it for the service (LimitNOFILE= in systemd) or lower the parameter") from None
    log.info(f"open files limit raised from {soft} to {wanted}")


def _open_descriptors() -> dict[int, tuple[int, int]]:
    """Open descriptors above 2 and what each refers to (device, inode)."""
    try:
        numbers = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        return {}
    out = {}
    for fd in numbers:
        try:
            st = os.fstat(fd)       # the listing's own descriptor is closed by now: skipped
        except OSError:
            continue
        if fd > 2:
            out[fd] = (st.st_dev, st.st_ino)
    return out


def daemonize(inherited: dict[int, tuple[int, int]]) -> int:
    """Detach from the terminal (fork=yes without -D), as OpenSER did. The command waits until the
    daemon reports how its start went (a line on the pipe whose write end this returns): "ok"
    exits 0, anything else is printed and exits 1, so a failure after the fork is not silent.
    The daemon closes the descriptors it inherited (``inherited``), as OpenSER's did."""
    report_r, report_w = os.pipe()
    if os.fork():
        os.close(report_w)
        with os.fdopen(report_r, "rb") as report:
            outcome = report.readline().decode("utf-8", "replace").strip()
        if outcome == "ok":
            os._exit(0)
        print(f"pyproxy: {outcome or 'the daemon exited while starting'}", file=sys.stderr)
        os._exit(1)
    os.close(report_r)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")       # not the starting folder, kept busy (wdir= chooses another)
    for fd, identity in inherited.items():
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == identity:      # not a number reused by what we opened since
                os.close(fd)
        except OSError:
            pass
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return report_w


def _spec(listener):
    from ..config.values import SocketSpec
    return SocketSpec(listener.proto, listener.host, listener.port)
