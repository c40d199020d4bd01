"""The load board that the workers of ``ganglion serve --workers N`` share: each sees the
others' jobs on a neuron, in one process (two routers) and across real processes."""

from __future__ import annotations

import multiprocessing
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ganglion.fleet.board import CAPACITY, CELL, HEADER, Board, Load
from ganglion.fleet.neuron import Neuron
from ganglion.fleet.registry import Registry
from ganglion.neurons.base import Dialect
from ganglion.routing import Job, Router
from ganglion.store import Store


@pytest.fixture
def board() -> Iterator[Board]:
    made = Board.create(workers=3)
    yield made
    made.close()


def neuron(id: int, name: str) -> Neuron:
    return Neuron(
        id=id,
        name=name,
        url=f"http://{name}:1",
        api=Dialect.OLLAMA,
        node=name,
        models=["llama3:latest"],
        adapter=None,  # type: ignore[arg-type]  # routing never talks to neurons
        slots=1,
    )


def workers_routers(board: Board, tmp_path: Path) -> list[Router]:
    """Two workers' routers over the same neurons ``a`` and ``b``, each with a board row."""
    routers = []
    for _ in range(2):
        registry = Registry(Store.open(f"sqlite:///{tmp_path / 'r.db'}"))
        for n in (neuron(1, "a"), neuron(2, "b")):
            registry._neurons[n.name] = n
        routers.append(Router(registry, board=Board.join(board.name, 3)))
    return routers


def test_a_worker_sees_the_others_loads_and_not_its_own(board: Board) -> None:
    one, two, three = (Board.join(board.name, 3) for _ in range(3))
    try:
        assert sorted(b.row for b in (one, two, three) if b.row is not None) == [0, 1, 2]
        one.publish(7, Load(jobs=2, owed=100.0, stamp=5.0, rate=10.0, oldest=4.0))
        two.publish(7, Load(jobs=1, owed=20.0, stamp=5.0, rate=10.0, oldest=3.0))
        assert [load.jobs for load in three.others(7)] == [2, 1]
        assert [load.jobs for load in one.others(7)] == [1]
        assert three.others(8) == []
        # Another neuron whose id lands on the same cell is not mistaken for this one.
        assert three.others(7 + CAPACITY) == []
        one.publish(7, Load())  # its jobs ended
        assert [load.jobs for load in three.others(7)] == [1]
    finally:
        for joined in (one, two, three):
            joined.close()


def test_every_row_taken_is_refused_until_a_worker_dies(board: Board) -> None:
    joined = [Board.join(board.name, 3) for _ in range(3)]
    try:
        with pytest.raises(RuntimeError, match="every row"):
            Board.join(board.name, 3)
    finally:
        for one in joined:
            one.close()


def test_two_workers_routers_do_not_put_two_jobs_on_one_free_slot(
    board: Board, tmp_path: Path
) -> None:
    """Each worker has its own router; without the board both would pick ``a`` (the first
    by name, nothing measured) for a job each, and one job would wait behind the other."""
    routers = workers_routers(board, tmp_path)
    job = Job("llama3", prompt_tokens=10, output_tokens=100)
    first = routers[0].rank(job)[0]
    with routers[0].admit(first, job):
        second = routers[1].rank(job)[0]
        assert (first.neuron.name, second.neuron.name) == ("a", "b")
        assert routers[1].load(first.neuron).jobs == 1
    assert routers[1].rank(job)[0].neuron.name == "a"  # the job ended: a is free again
    for router in routers:
        assert router.board is not None
        router.board.close()


def test_a_cool_down_seen_by_one_worker_holds_for_all(board: Board, tmp_path: Path) -> None:
    routers = workers_routers(board, tmp_path)
    job = Job("llama3")
    routers[0].cool_down(routers[0].registry.get("a"))
    assert [e.neuron.name for e in routers[1].rank(job)] == ["b", "a"]
    for router in routers:
        assert router.board is not None
        router.board.close()


def _hold_a_job(name: str, ready: multiprocessing.Event, done: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    joined = Board.join(name, 3)
    joined.publish(1, Load(jobs=1, owed=50.0, stamp=time.monotonic(), rate=1.0, oldest=0.0))
    ready.set()  # type: ignore[attr-defined]
    done.wait(30)  # type: ignore[attr-defined]
    joined.close()


def test_another_process_jobs_are_seen_and_its_row_is_taken_back_when_it_dies(
    board: Board,
) -> None:
    spawn = multiprocessing.get_context("spawn")
    ready, done = spawn.Event(), spawn.Event()
    worker = spawn.Process(target=_hold_a_job, args=(board.name, ready, done))
    worker.start()
    try:
        assert ready.wait(60)
        me = Board.join(board.name, 3)
        assert [load.jobs for load in me.others(1)] == [1]
        assert me.others(1)[0].backlog(time.monotonic()) > 0
    finally:
        worker.kill()
        worker.join()
    # Its row is free again, and a new worker that takes it starts from nothing.
    second, third = Board.join(board.name, 3), Board.join(board.name, 3)
    assert me.others(1) == []
    for joined in (me, second, third):
        joined.close()


def test_a_cell_left_half_written_reads_as_no_load(board: Board) -> None:
    """A worker that died between a write's two version bumps leaves its cell odd: readers
    must not wait on it for good."""
    writer, reader = Board.join(board.name, 3), Board.join(board.name, 3)
    try:
        writer.publish(5, Load(jobs=1, owed=10.0, stamp=1.0, rate=1.0, oldest=1.0))
        assert writer.row is not None
        offset = HEADER + (writer.row * CAPACITY + 5) * CELL.size
        struct.pack_into("d", writer.memory.buf, offset, 3.0)  # odd: a write under way
        assert reader.others(5) == []
    finally:
        writer.close()
        reader.close()
