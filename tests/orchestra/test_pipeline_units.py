"""The pipeline's pieces without a fleet: reading an outline as it streams, sizing parts to
speed, the forecast that decides, and the stitcher that puts the answer in order."""

from __future__ import annotations

import json

import pytest

from ganglion.orchestra import stitch
from ganglion.orchestra.pipeline import forecast
from ganglion.orchestra.plan_stream import Part, PlanReader, Skipped, outline_problem
from ganglion.orchestra.schedule import size_parts, workers

# --- the outline, read as it streams -----------------------------------------------------


def feed_in_pieces(reader: PlanReader, text: str, size: int) -> list[tuple[int, Part | Skipped]]:
    """Feed ``text`` ``size`` characters at a time; each entry with where it became known."""
    found = []
    for at in range(0, len(text), size):
        for entry in reader.feed(text[at : at + size])[1]:
            found.append((at + size, entry))
    return found


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_each_entry_is_known_the_moment_its_text_closes(size: int) -> None:
    text = json.dumps({"subtasks": ["Inner planets", "Gas giants", "Ice giants"]})
    found = feed_in_pieces(PlanReader(4), text, size)
    assert [entry.subtask.heading for _, entry in found if isinstance(entry, Part)] == [
        "Inner planets",
        "Gas giants",
        "Ice giants",
    ]
    if size == 1:  # not at the end: as soon as each string closed
        closes = [text.index('"', text.index(h) + 1) + 1 for h in ("Inner", "Gas", "Ice")]
        assert [at for at, _ in found] == closes


def test_objects_strings_and_aliases_are_entries() -> None:
    text = json.dumps(
        {
            "note": {"ignored": [1, 2]},
            "parts": [
                {"heading": "Mars", "task": "Describe Mars", "tokens": 90},
                {"task": "Describe Venus\nin detail", "expected_tokens": 3},
                "  Jupiter   and   Saturn ",
            ],
        }
    )
    reader = PlanReader(4)
    reader.feed(text)
    subtasks = [part.subtask for part in reader.parts]
    assert [s.heading for s in subtasks] == ["Mars", "Describe Venus", "Jupiter and Saturn"]
    assert subtasks[1].expected_tokens == 16  # clamped to the smallest budget
    assert subtasks[0].task == "Describe Mars"


def test_a_bad_entry_is_skipped_with_the_reason_and_the_next_still_counts() -> None:
    text = '{"subtasks": ["A", {"heading": "x"}, 7, {"task": "B", "expected_tokens": 1e999}, "C"]}'
    reader = PlanReader(4)
    reader.feed(text)
    assert [p.subtask.heading for p in reader.parts] == ["A", "C"]
    assert [(s.index, s.reason) for s in reader.skipped] == [
        (1, "subtask 2 has no task text"),
        (2, "subtask 3 is not an object"),
        (3, "subtask 4 has expected_tokens inf: give a count"),
    ]


def test_entries_past_the_parts_planned_are_skipped() -> None:
    reader = PlanReader(2)
    reader.feed(json.dumps({"subtasks": ["A", "B", "C"]}))
    assert len(reader.parts) == 2
    assert reader.skipped == [Skipped(2, "subtask 3 is one too many: at most 2")]


def test_an_entry_cut_short_by_the_end_of_the_stream_is_skipped() -> None:
    reader = PlanReader(4)
    reader.feed('{"subtasks": ["Inner planets", {"heading": "Gas gi')
    assert [p.subtask.heading for p in reader.parts] == ["Inner planets"]
    assert reader.finish() == [Skipped(1, "subtask 2 was cut short")]
    whole = PlanReader(4)
    whole.feed('{"subtasks": ["A"]}')
    assert whole.finish() == []


def test_the_opening_streams_as_it_grows_escapes_and_all() -> None:
    text = json.dumps({"opening": 'Planets "wander" \u00e9\n', "subtasks": ["A"]})
    reader = PlanReader(2)
    grown = "".join(reader.feed(text[at : at + 2])[0] for at in range(0, len(text), 2))
    assert grown == 'Planets "wander" \u00e9\n'
    assert reader.opening == grown


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Sure! Here is a plan.", "not valid JSON"),
        ('{"steps": ["a"]}', 'no "subtasks" list'),
        ('[{"task": "a"}]', 'no "subtasks" list'),
        ('{"subtasks": []}', "0 sections: an outline needs at least 1"),
        ('{"subtasks": [{"heading": "h"}]}', "subtask 1 has no task text"),
    ],
)
def test_an_unusable_outline_says_why(text: str, why: str) -> None:
    reader = PlanReader(4)
    reader.feed(text)
    reader.finish()
    assert reader.parts == []
    assert outline_problem(reader).startswith(why)


# --- parts sized to speed ----------------------------------------------------------------


def test_equal_workers_finish_together_and_later_entries_get_less() -> None:
    pool = workers({f"w{i}": 20.0 for i in range(4)})
    arrivals = [0.5, 1.0, 1.5, 2.0]
    sizing = size_parts(300, pool, arrivals)
    assert len(sizing.shares) == 4
    assert sum(s.tokens for s in sizing.shares) == pytest.approx(300, abs=2)
    for share in sizing.shares:  # every share ends at the common finish
        assert share.start_s + share.tokens / 20 == pytest.approx(sizing.finish_s, abs=0.05)
    tokens = [s.tokens for s in sizing.shares]
    assert tokens == sorted(tokens, reverse=True)
    assert sizing.finish_s == pytest.approx((300 + 20 * sum(arrivals)) / 80)


def test_a_worker_too_slow_to_help_gets_nothing() -> None:
    pool = workers({"gpu": 90.0, "cpu": 13.0, "quadro": 5.8, "old": 5.5})
    sizing = size_parts(306, pool, [0.15, 0.25, 0.35, 0.45])
    used = {s.neuron for s in sizing.shares}
    assert "gpu" in used
    assert not used & {"quadro", "old"}
    assert all(s.tokens >= 32 for s in sizing.shares)
    assert sizing.finish_s < 0.15 + 306 / 90  # never slower than the fast one alone


def test_a_busy_or_slow_reading_worker_starts_later_and_gets_less() -> None:
    pool = workers({"a": 20.0, "b": 20.0})
    free = size_parts(200, pool, [0.0, 0.0])
    busy = size_parts(200, pool, [0.0, 0.0], free_at={"a": 2.0})
    slow = size_parts(200, pool, [0.0, 0.0], delay={"a": 2.0})
    for sizing in (busy, slow):
        share = next(s for s in sizing.shares if s.neuron == "a")
        assert share.start_s == pytest.approx(2.0)
        assert share.tokens < next(s.tokens for s in free.shares if s.neuron == "a")
        assert sizing.finish_s > free.finish_s


def test_when_no_split_reaches_the_smallest_part_the_fastest_does_it_all() -> None:
    pool = workers({"a": 20.0, "b": 19.0})
    sizing = size_parts(40, pool, [0.0, 5.0], min_tokens=32)
    assert [(s.neuron, s.tokens) for s in sizing.shares] == [("a", 40)]


def test_the_forecast_splits_for_an_even_fleet_and_not_for_a_slow_brain() -> None:
    pool = workers({f"w{i}": 20.0 for i in range(4)})
    even = forecast(360, pool, 20.0, "brain", 4)
    assert even.parts == 4
    assert even.finish_s < even.solo_s / 2.4
    assert even.opener == pool[0].neuron
    slow = forecast(300, workers({"a": 60.0, "b": 60.0, "c": 60.0}), 4.0, "brain", 4)
    assert slow.finish_s > slow.solo_s  # the outline alone takes longer than answering


# --- the stitched answer ------------------------------------------------------------------


def test_pieces_go_out_in_order_as_soon_as_everything_before_them_is_done() -> None:
    out: list[str] = []
    stitcher = stitch.Stitcher(out.append)
    stitcher.expect(0, "One")
    stitcher.expect(1, "Two")
    stitcher.add(stitch.part_key(1), "second", done=True)  # done first, held back
    assert out == []
    stitcher.add(stitch.OPENING, "Hello")
    assert out == ["Hello"]  # the opening streams as it grows
    stitcher.add(stitch.OPENING, " there.", done=True)
    assert out[-1] == " there."  # part 1 goes out whole, once it is done
    stitcher.add(stitch.part_key(0), "first", done=True)
    assert "".join(out).endswith("first" + stitch.heading_text("Two") + "second")
    stitcher.add(stitch.CLOSING, "\n\nBye.", done=True)
    assert not stitcher.complete  # more parts may come until the outline ends
    stitcher.seal()
    assert stitcher.complete
    assert stitcher.text == "Hello there.\n\n## One\n\nfirst\n\n## Two\n\nsecond\n\nBye."
