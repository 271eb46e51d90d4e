"""Executors: where the tasks of a sweep run. A plug-in protocol, two implementations, a registry.

An executor is any object with ``map_unordered(fn, tasks)`` (see :class:`Executor`). The
registry :data:`EXECUTORS` maps the names the command line accepts (``--executor``) to classes;
:func:`make_executor` builds one by name. :func:`robustlaw.testing.executors.check_executor`
checks that an executor keeps the contract.

Workers never outlive their driver: a local worker ignores SIGINT (the driver decides what an
interrupt means), and dies when its driver dies, even by SIGKILL (PR_SET_PDEATHSIG on Linux, a
watchdog thread elsewhere). Closing the iterator of :meth:`LocalExecutor.map_unordered` kills the
workers at once, without waiting for the tasks they are running.
"""

from __future__ import annotations

import inspect
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from robustlaw.errors import RobustlawError

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
T = TypeVar("T")
R = TypeVar("R")


@runtime_checkable
class Executor(Protocol):
    """Runs ``fn`` on each task, somewhere, and streams the outcomes back as they finish.

    Contract of ``map_unordered(fn, tasks)``, which returns an iterator of ``(task, outcome)``:

    - every task's outcome is yielded exactly once, in any order; the outcome is ``fn(task)``,
      or the exception ``fn(task)`` raised (an exception is an outcome, never a crash);
    - a task whose worker process dies is retried up to ``retries`` times, then yielded with
      the exception that reports the death;
    - the executor never writes the results store: the driver that consumes the iterator is
      its single writer;
    - closing the iterator (``close()``, or an exception such as KeyboardInterrupt in the
      consumer) stops the workers, without waiting for the tasks they are running.

    ``fn`` and the tasks must be picklable for executors that run them in other processes.
    """

    retries: int

    def map_unordered(self, fn: Callable[[T], R], tasks: list[T]) -> Iterator[tuple[T, R | BaseException]]:
        ...


# ----------------------------------------------------------------------------- worker setup


def _limit_threads() -> None:
    """One thread per worker: oversubscribed threads made the same fit 10-30x slower here."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def _die_with(parent: int) -> None:
    """Make this process die when ``parent`` does: PR_SET_PDEATHSIG on Linux, else a watchdog thread.

    The death signal fires when the thread that forked this process ends; the pool forks its
    workers from the thread that first submits, the driver's main thread."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            armed = ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL) == 0  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the driver died before the death signal was armed
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="robustlaw-watchdog").start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _init_worker(parent: int) -> None:
    """Set up a worker process: SIGINT ignored, SIGTERM fatal (not the driver's handler, inherited
    by fork), dies with ``parent``, one thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):  # blocked by the driver while it forked this process
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    _die_with(parent)
    _limit_threads()


# ----------------------------------------------------------------------------- local


def _kill_pool(pool: ProcessPoolExecutor) -> None:
    """Stop ``pool`` now: cancel queued tasks and kill the workers, without waiting for running tasks."""
    processes = list((pool._processes or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()
    for process in processes:
        process.join(timeout=2)


class LocalExecutor:
    """Runs tasks in ``workers`` processes with one thread each (inline when workers == 1).

    If a worker process dies, the pool is rebuilt and the unfinished tasks are retried, each at
    most ``retries`` times; a task that still fails comes back as its exception. Inline (one
    worker, or a single task), tasks run in the calling process, so a task that kills its
    process kills the caller.
    """

    def __init__(self, workers: int | None = None, retries: int = 2):
        self.workers = workers or os.cpu_count() or 1
        self.retries = retries

    def map_unordered(self, fn: Callable[[T], R], tasks: list[T]) -> Iterator[tuple[T, R | BaseException]]:
        if self.workers == 1 or len(tasks) == 1:
            yield from self._inline(fn, tasks)
            return
        attempts = [0] * len(tasks)
        todo = list(range(len(tasks)))
        while todo:
            broken: list[int] = []
            with closing(self._round(fn, tasks, todo)) as outcomes:
                for i, outcome in outcomes:
                    if isinstance(outcome, BrokenProcessPool) and attempts[i] < self.retries:
                        attempts[i] += 1
                        broken.append(i)
                    else:
                        yield tasks[i], outcome
            todo = broken

    @staticmethod
    def _inline(fn: Callable[[T], R], tasks: list[T]) -> Iterator[tuple[T, R | BaseException]]:
        _limit_threads()
        for task in tasks:
            try:
                yield task, fn(task)
            except Exception as error:
                yield task, error

    @staticmethod
    def _submit(pool: ProcessPoolExecutor, fn: Callable[[T], R], tasks: list[T],
                todo: list[int]) -> tuple[dict[Future, int], list[tuple[int, BaseException]]]:
        """Submit ``todo``; return (future -> index, outcomes of the tasks a dead pool refused). The
        stop signals are blocked meanwhile, so a worker never runs the driver's handlers between
        its fork and its initializer; one that arrived is delivered on return."""
        blocked = hasattr(signal, "pthread_sigmask")
        if blocked:
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pending: dict[Future, int] = {}
            for k, i in enumerate(todo):
                try:
                    pending[pool.submit(fn, tasks[i])] = i
                except BrokenProcessPool as error:  # a worker died while we were still submitting
                    return pending, [(j, error) for j in todo[k:]]
            return pending, []
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _round(self, fn: Callable[[T], R], tasks: list[T], todo: list[int]) -> Iterator[tuple[int, Any]]:
        """One pool's life: submit ``todo`` (indices into ``tasks``), yield (index, outcome) as they
        finish. The pool is killed if the consumer stops early (close, KeyboardInterrupt)."""
        pool = ProcessPoolExecutor(min(self.workers, len(todo)), initializer=_init_worker, initargs=(os.getpid(),))
        finished_cleanly = False
        try:
            pending, unsubmitted = self._submit(pool, fn, tasks, todo)
            yield from unsubmitted
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    i = pending.pop(future)
                    error = future.exception()
                    yield i, future.result() if error is None else error
            finished_cleanly = True
        finally:
            if finished_cleanly:
                pool.shutdown(wait=True)
            else:
                _kill_pool(pool)


# ----------------------------------------------------------------------------- ray


def check_reachable(address: str | None, timeout: float = 3.0) -> None:
    """Raise :class:`RobustlawError` unless ``address`` (host:port or ray://host:port) accepts a TCP
    connection within ``timeout`` seconds; other forms (None, 'auto', 'local') are not checked."""
    if not address:
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise RobustlawError(f"--address {address}: no Ray cluster answers at {host}:{port} ({reason})") from None


class RayExecutor:
    """Runs tasks as Ray tasks (one CPU each) on the cluster at ``address`` (default: a local Ray
    instance with ``workers`` CPUs), streaming results back as they finish. Ray retries a task
    whose worker dies (``retries`` times); a task that still fails comes back as its exception.
    Workers get this driver's copy of robustlaw on their PYTHONPATH (nodes that lack it use
    their installed package). Closing the iterator cancels the tasks still running. An address
    of the form host:port or ray://host:port that accepts no TCP connection is rejected here."""

    def __init__(self, address: str | None = None, workers: int | None = None, retries: int = 3):
        check_reachable(address)  # fail in seconds, before Ray is imported, if nothing listens there
        self.address, self.workers, self.retries = address, workers, retries

    def _connect(self):
        """Import Ray and start (or join) the cluster; return (ray, whether this call started it)."""
        try:
            import ray
        except ImportError:
            raise RobustlawError("--executor ray needs Ray: pip install 'robustlaw[ray]'") from None
        if ray.is_initialized():
            return ray, False
        source = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
        env = {"PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        options = dict(address=self.address, runtime_env={"env_vars": env}, log_to_driver=False,
                       include_dashboard=False)
        if self.address is None and self.workers:
            options["num_cpus"] = self.workers
        main = threading.current_thread() is threading.main_thread()
        on_sigterm = signal.getsignal(signal.SIGTERM)
        try:
            ray.init(**options)
        except (ConnectionError, TimeoutError) as error:
            raise RobustlawError(f"--address {self.address}: cannot connect to a Ray cluster ({error})") from None
        finally:
            if main and on_sigterm is not None:  # ray.init installs its own SIGTERM handler: the driver's wins
                signal.signal(signal.SIGTERM, on_sigterm)
        return ray, True

    def map_unordered(self, fn: Callable[[T], R], tasks: list[T]) -> Iterator[tuple[T, R | BaseException]]:
        ray, started = self._connect()
        pending: dict = {}
        try:
            remote = ray.remote(num_cpus=1, max_retries=self.retries, retry_exceptions=False)(fn)
            pending = {remote.remote(t): t for t in tasks}
            while pending:
                finished, _ = ray.wait(list(pending), num_returns=1)
                for ref in finished:
                    task = pending.pop(ref)
                    try:
                        yield task, ray.get(ref)
                    except Exception as error:  # the task raised, or failed on every attempt
                        yield task, getattr(error, "cause", None) or error
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or gone: nothing to stop
                    pass
            if started:
                ray.shutdown()


# ----------------------------------------------------------------------------- registry

EXECUTORS: dict[str, type] = {"local": LocalExecutor, "ray": RayExecutor}


def make_executor(name: str = "local", workers: int | None = None, address: str | None = None) -> Executor:
    """The executor registered as ``name`` in :data:`EXECUTORS`, with ``workers`` (and, for Ray,
    ``address``); ``address`` is rejected for executors that take none."""
    if name not in EXECUTORS:
        raise RobustlawError(f"unknown executor {name!r} (known: {', '.join(sorted(EXECUTORS))})")
    cls = EXECUTORS[name]
    if address is not None:
        if "address" not in inspect.signature(cls).parameters:
            raise RobustlawError(f"--address is only for --executor ray, not {name}")
        return cls(address=address, workers=workers)
    return cls(workers=workers)
