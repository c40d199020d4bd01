"""Chat conversations through a real gateway: prefix-cache-aware routing against the rest.

Chat clients resend the whole conversation each turn; a neuron that answered the earlier
turns holds them in its prompt cache and reads only the new turn. A fleet of simulated
neurons with different prefill and decode speeds, each keeping ``--cache-slots`` prompts
(``ganglion sim --cache-slots``), is started on loopback. For each routing policy a fresh
gateway is started with ``GANGLION_ROUTING_POLICY``, the neurons are registered, benched
(decode) and sent one long prompt each (prefill, learnt from traffic), then
``--conversations`` clients each hold a conversation of ``--turns`` turns at once: every
turn adds a user message of ``--turn-words`` words (the simulator reads a word as a token),
so the context grows from 2k to 16k tokens by default, and asks for ``--tokens`` tokens of
answer, streamed. The table shows time to first token (TTFT) over turns 2 and later (the
ones a cache can serve), the makespan (first turn sent to last answer received), how many
of those turns the gateway predicted to hit a cache (``X-Ganglion-Cache``) and how many
cached tokens the neurons reported, and each policy's p50 TTFT and makespan as a ratio of
finish-time's, all measured in the same run.

    .venv/bin/python benchmarks/chat.py
    .venv/bin/python benchmarks/chat.py --conversations 6 --turns 4 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _fleet import Fleet, Gateway, heading, percentile, run_main, show

MODEL = "bench-model"
POLICIES = ("finish-time", "round-robin", "cache-aware")
SLOTS = 2
CACHE_SLOTS = 6


@dataclass(frozen=True)
class Neuron:
    name: str
    decode_tps: float
    prefill_tps: float


FLEET = (
    Neuron("fast", 100.0, 5_000.0),
    Neuron("mid", 50.0, 2_000.0),
    Neuron("cpu", 25.0, 750.0),
    Neuron("old", 12.0, 250.0),
)
"""Decode and prefill tokens/s before ``--scale``: a GPU box reading prompts 50x faster than
it writes, down to an old CPU box at 20x."""


@dataclass
class Turn:
    conversation: int
    turn: int
    ttft_s: float
    wall_s: float
    neuron: str
    predicted: str
    cached_tokens: int


@dataclass
class Outcome:
    policy: str
    makespan_s: float
    ttft_p50_s: float
    ttft_p95_s: float
    first_turn_ttft_p50_s: float
    predicted_hits: int
    later_turns: int
    cached_tokens: int
    served: dict[str, int]
    errors: int
    ttft_ratio: float | None = None
    makespan_ratio: float | None = None
    error_samples: list[str] = field(default_factory=list)


def user_message(salt: str, conversation: int, turn: int, words: int) -> dict[str, str]:
    text = f"{salt} conversation {conversation} turn {turn}: " + "word " * (words - 6)
    return {"role": "user", "content": text}


async def one_turn(
    http: httpx.AsyncClient, messages: list[dict[str, str]], tokens: int
) -> tuple[float, float, str, dict[str, Any], str]:
    """Send one streamed chat turn: TTFT, wall time, the answer, its last line, who served."""
    body = {"model": MODEL, "messages": messages, "options": {"num_predict": tokens}}
    sent = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    last: dict[str, Any] = {}
    async with http.stream("POST", "/api/chat", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {(await response.aread())[:200]!r}")
        headers = response.headers
        async for line in response.aiter_lines():
            if not line:
                continue
            last = json.loads(line)
            text = (last.get("message") or {}).get("content", "")
            if text and ttft is None:
                ttft = time.perf_counter() - sent
            parts.append(text)
    wall = time.perf_counter() - sent
    served = f"{headers.get('X-Ganglion-Neuron', '?')}|{headers.get('X-Ganglion-Cache', '?')}"
    return ttft if ttft is not None else wall, wall, "".join(parts), last, served


async def workload(
    gateway: Gateway, args: argparse.Namespace, salt: str
) -> tuple[float, list[Turn], list[str]]:
    """Every conversation at once, each turn after the last one's answer."""
    turns: list[Turn] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=args.conversations)

    async def converse(http: httpx.AsyncClient, number: int) -> None:
        messages: list[dict[str, str]] = []
        for turn in range(1, args.turns + 1):
            messages.append(user_message(salt, number, turn, args.turn_words))
            try:
                ttft, wall, answer, last, served = await one_turn(http, messages, args.tokens)
            except (httpx.HTTPError, RuntimeError) as error:
                errors.append(f"conversation {number} turn {turn}: {error}")
                return
            neuron, predicted = served.split("|")
            cached = int(last.get("prompt_eval_cached_count") or 0)
            turns.append(Turn(number, turn, ttft, wall, neuron, predicted, cached))
            messages.append({"role": "assistant", "content": answer})

    async with httpx.AsyncClient(base_url=gateway.url, timeout=600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(converse(http, n) for n in range(args.conversations)))
        makespan = time.perf_counter() - start
    return makespan, turns, errors


def learn_prefill(gateway: Gateway, names: list[str], words: int) -> None:
    """One long prompt pinned to each neuron, so the gateway measures its prefill speed."""
    for name in names:
        message = {"role": "user", "content": f"warm-up {uuid.uuid4().hex} " + "word " * words}
        body = {"model": MODEL, "messages": [message], "stream": False}
        body |= {"options": {"num_predict": 4}}
        headers = {"X-Ganglion-Neuron": name}
        response = httpx.post(f"{gateway.url}/api/chat", json=body, headers=headers, timeout=120)
        response.raise_for_status()


def measure(fleet: Fleet, sims: dict[str, str], policy: str, args: argparse.Namespace) -> Outcome:
    env = {
        "GANGLION_ROUTING_POLICY": policy,
        "GANGLION_PREFIX_CACHE_SLOTS": str(args.cache_slots),
        "GANGLION_MAX_QUEUE": str(args.conversations),
    }
    gateway = fleet.gateway(env=env)
    try:
        for name, url in sims.items():
            gateway.add(url, name, slots=SLOTS)
        gateway.bench()
        learn_prefill(gateway, list(sims), args.turn_words)
        # a salt of its own per policy: nothing the sims hold from another policy's run helps
        makespan, turns, errors = asyncio.run(workload(gateway, args, uuid.uuid4().hex))
    finally:
        gateway.stop()
    later = [t for t in turns if t.turn >= 2]
    firsts = [t.ttft_s for t in turns if t.turn == 1]
    served = {name: sum(1 for t in turns if t.neuron == name) for name in sims}
    if args.turns_out:
        with args.turns_out.open("a") as out:
            out.writelines(json.dumps({"policy": policy, **asdict(t)}) + "\n" for t in turns)
    return Outcome(
        policy=policy,
        makespan_s=round(makespan, 2),
        ttft_p50_s=round(percentile([t.ttft_s for t in later], 0.5), 3),
        ttft_p95_s=round(percentile([t.ttft_s for t in later], 0.95), 3),
        first_turn_ttft_p50_s=round(percentile(firsts, 0.5), 3),
        predicted_hits=sum(1 for t in later if t.predicted == "hit"),
        later_turns=len(later),
        cached_tokens=sum(t.cached_tokens for t in turns),
        served=served,
        errors=len(errors),
        error_samples=errors[:3],
    )


def table(result: dict[str, Any]) -> None:
    workload = result["workload"]
    names = [neuron["name"] for neuron in result["fleet"]]
    speeds = ", ".join(
        f"{n['name']} {n['decode_tps']:g}/{n['prefill_tps']:g}" for n in result["fleet"]
    )
    print(
        f"fleet (decode/prefill tok/s, {SLOTS} slots, {workload['cache_slots']} cache slots "
        f"each, speeds x{workload['scale']:g}): {speeds}"
    )
    print(
        f"{workload['conversations']} conversations x {workload['turns']} turns, "
        f"{workload['turn_words']} words a turn (context {workload['turn_words']} to "
        f"{workload['turn_words'] * workload['turns']} tokens), {workload['tokens']} tokens "
        "an answer, streamed (ollama API)"
    )
    head = [
        "policy",
        "TTFT p50 t2-8",
        "p95",
        "t1 p50",
        "makespan",
        "hits pred",
        "cached tok",
        *names,
        "err",
        "x TTFT",
        "x makespan",
    ]
    rows = [
        [
            o["policy"],
            f"{o['ttft_p50_s']:.3f} s",
            f"{o['ttft_p95_s']:.3f} s",
            f"{o['first_turn_ttft_p50_s']:.3f} s",
            f"{o['makespan_s']:.2f} s",
            f"{o['predicted_hits']}/{o['later_turns']}",
            str(o["cached_tokens"]),
            *(str(o["served"][n]) for n in names),
            str(o["errors"]),
            "-" if o["ttft_ratio"] is None else f"{o['ttft_ratio']:.2f}",
            "-" if o["makespan_ratio"] is None else f"{o['makespan_ratio']:.2f}",
        ]
        for o in result["results"]
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print("x TTFT, x makespan: the policy's p50 TTFT (turns 2 on) and makespan / finish-time's")
    print(f"({result['machine']}; whole benchmark {result['wall_s']} s)")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--conversations", type=int, default=12, help="at once (12)")
    parser.add_argument("--turns", type=int, default=8, help="turns in each (8)")
    parser.add_argument("--turn-words", type=int, default=2000, help="words a turn adds (2000)")
    parser.add_argument("--tokens", type=int, default=24, help="answer tokens a turn (24)")
    parser.add_argument(
        "--cache-slots", type=int, default=CACHE_SLOTS, help="prompts each neuron keeps (6)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=4.0,
        help="multiply every neuron's speeds, to finish sooner (4: the fleet's shape, at 4x)",
    )
    parser.add_argument(
        "--policy", action="append", choices=POLICIES, help="repeat; default: all three"
    )
    parser.add_argument("--logs", type=Path, help="keep process logs and databases here")
    parser.add_argument("--turns-out", type=Path, help="append every turn, as JSON lines")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    policies: list[str] = args.policy or list(POLICIES)
    if "finish-time" not in policies:
        policies.insert(0, "finish-time")  # the reference for the ratios

    def say(text: str) -> None:
        print(text, file=sys.stderr)

    started = time.perf_counter()
    outcomes: list[Outcome] = []
    fleet_now = [
        Neuron(n.name, n.decode_tps * args.scale, n.prefill_tps * args.scale) for n in FLEET
    ]
    with Fleet(args.logs) as fleet:
        say(f"starting {len(FLEET)} simulated neurons")
        sims = {}
        for neuron in fleet_now:
            extra = [
                "--prefill-tps", str(neuron.prefill_tps),
                "--slots", str(SLOTS),
                "--cache-slots", str(args.cache_slots),
            ]  # fmt: skip
            sims[neuron.name] = fleet.sim(
                neuron.decode_tps, model=MODEL, name=neuron.name, extra=extra
            ).url
        for policy in policies:
            say(f"{policy}: fresh gateway, bench, {args.conversations} conversations")
            outcomes.append(measure(fleet, sims, policy, args))
    reference = next(o for o in outcomes if o.policy == "finish-time")
    for outcome in outcomes:
        outcome.ttft_ratio = round(outcome.ttft_p50_s / reference.ttft_p50_s, 2)
        outcome.makespan_ratio = round(outcome.makespan_s / reference.makespan_s, 2)
    result = {
        **heading("chat"),
        "fleet": [asdict(neuron) for neuron in fleet_now],
        "workload": {
            "conversations": args.conversations,
            "turns": args.turns,
            "turn_words": args.turn_words,
            "tokens": args.tokens,
            "cache_slots": args.cache_slots,
            "scale": args.scale,
        },
        "wall_s": round(time.perf_counter() - started, 1),
        "results": [asdict(o) for o in outcomes],
    }
    show(result, args.json, table)
    return 1 if any(o.errors for o in outcomes) else 0


if __name__ == "__main__":
    run_main(main)
