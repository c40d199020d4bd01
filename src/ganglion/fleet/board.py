"""The load on each neuron, shared by the worker processes of one gateway
(``ganglion serve --workers N``).

Each worker routes on its own, so each must see the jobs the others have in flight: without
that, two workers would each put a job on the same free slot. A :class:`Board` is a block of
shared memory with a row per worker and, in each row, a cell per neuron. A worker writes
only its own row, so writing needs no lock, and it reads every row. A cell holds what the
worker's router book says of the neuron (:class:`Load`), 64 bytes, one cache line::

    version  neuron id  jobs  owed tokens  stamp  drain rate  oldest start  cool-until

``version`` makes each cell a seqlock: the writer makes it odd while it writes, and a reader
that saw it odd or changed reads the cell again, so no reader sees half a write. Times are
``time.monotonic()``, one clock for every process on the machine.

A neuron's cell is its id modulo :data:`CAPACITY`, and the cell names the neuron it holds:
two live neurons whose ids differ by a multiple of :data:`CAPACITY` (after that many
registrations) share a cell, and then each worker sees only its own jobs on them.

Rows are claimed under a file lock when a worker starts: a row that is free, or whose worker
has died (uvicorn starts a new one in its place), is cleared and taken.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

CAPACITY = 16384
CELL = struct.Struct("8d")
HEADER = 512  # bytes before the first row: the pids of the rows' owners
MAX_WORKERS = HEADER // 8
READ_TRIES = 1000  # a write takes microseconds; a cell odd for longer was left half written


@dataclass(frozen=True)
class Load:
    """What a worker's router knows of one neuron: its jobs in flight, the output tokens it
    owes them as of ``stamp`` (draining at ``rate`` tokens a second while it has jobs), when
    the oldest started, and until when the neuron cools down after a failure."""

    jobs: int = 0
    owed: float = 0.0
    stamp: float = 0.0
    rate: float = 0.0
    oldest: float = 0.0
    cool_until: float = 0.0

    def backlog(self, now: float) -> float:
        """Output tokens still owed at ``now``."""
        if not self.jobs:
            return 0.0
        return max(self.owed - self.rate * (now - self.stamp), 0.0)


class Board:
    """One gateway's shared load board; see the module's notes. Made by the parent process
    (:meth:`create`), joined by each worker (:meth:`join`)."""

    def __init__(self, memory: SharedMemory, workers: int, row: int | None) -> None:
        self.memory = memory
        self.workers = workers
        self.row = row
        self._owned = False

    @classmethod
    def create(cls, workers: int) -> Board:
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be 1 to {MAX_WORKERS}, not {workers}")
        memory = SharedMemory(create=True, size=HEADER + workers * CAPACITY * CELL.size)
        board = cls(memory, workers, None)
        board._owned = True
        _lock_path(memory.name).touch()
        return board

    @classmethod
    def join(cls, name: str, workers: int) -> Board:
        """Attach to the board ``name`` and claim a row for this process."""
        # Workers are the parent's children (multiprocessing's spawn), so they share its
        # resource tracker: the block is unlinked once, by the parent (:meth:`close`).
        memory = SharedMemory(name=name)
        board = cls(memory, workers, None)
        board.row = board._claim()
        return board

    @property
    def name(self) -> str:
        return self.memory.name

    def publish(self, neuron_id: int, load: Load) -> None:
        """Write this worker's load on a neuron."""
        assert self.row is not None, "only a worker that joined the board publishes"
        offset = self._cell(self.row, neuron_id)
        buffer = self._buffer
        version = struct.unpack_from("d", buffer, offset)[0]
        struct.pack_into("d", buffer, offset, version + 1)  # odd: being written
        CELL.pack_into(
            buffer,
            offset,
            version + 1,
            neuron_id,
            load.jobs,
            load.owed,
            load.stamp,
            load.rate,
            load.oldest,
            load.cool_until,
        )
        struct.pack_into("d", buffer, offset, version + 2)

    def others(self, neuron_id: int) -> list[Load]:
        """The other workers' loads on a neuron (those with jobs or a cool-down)."""
        found = []
        for row in range(self.workers):
            if row == self.row:
                continue
            load = self._read(self._cell(row, neuron_id), neuron_id)
            if load is not None and (load.jobs or load.cool_until):
                found.append(load)
        return found

    def close(self) -> None:
        self.memory.close()
        if self._owned:
            self.memory.unlink()
            _lock_path(self.memory.name).unlink(missing_ok=True)

    @property
    def _buffer(self) -> memoryview:
        buffer = self.memory.buf
        assert buffer is not None, "the board is closed"
        return buffer

    def _cell(self, row: int, neuron_id: int) -> int:
        return HEADER + (row * CAPACITY + neuron_id % CAPACITY) * CELL.size

    def _read(self, offset: int, neuron_id: int) -> Load | None:
        """The cell's load, read again while a write is under way; ``None`` for another
        neuron's cell, or one left half written (its worker died mid-write, and its row is
        cleared when a new worker takes it)."""
        buffer = self._buffer
        for _ in range(READ_TRIES):
            version, owner, jobs, owed, stamp, rate, oldest, cool = CELL.unpack_from(buffer, offset)
            if int(version) % 2 == 0 and struct.unpack_from("d", buffer, offset)[0] == version:
                break
        else:
            return None
        if owner != neuron_id:
            return None
        return Load(int(jobs), owed, stamp, rate, oldest, cool)

    def _claim(self) -> int:
        """Take a free row, or one whose worker has died, under the board's file lock."""
        with open(_lock_path(self.memory.name), "r+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            buffer = self._buffer
            for row in range(self.workers):
                owner = struct.unpack_from("q", buffer, row * 8)[0]
                if owner and _alive(owner):
                    continue
                start = HEADER + row * CAPACITY * CELL.size
                buffer[start : start + CAPACITY * CELL.size] = bytes(CAPACITY * CELL.size)
                struct.pack_into("q", buffer, row * 8, os.getpid())
                return row
        raise RuntimeError(f"every row of the load board {self.memory.name} is taken")


def _lock_path(name: str) -> Path:
    return Path("/dev/shm") / f"{name.lstrip('/')}.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
