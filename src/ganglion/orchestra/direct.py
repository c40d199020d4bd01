"""The direct answer: the fastest suitable neuron answers the task alone, when splitting
would lose (or was turned off), with the reason recorded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ganglion.orchestra.request import RunRequest

if TYPE_CHECKING:
    from ganglion.orchestra.run import Orchestra


async def answer_directly(
    o: Orchestra,
    run_id: str,
    request: RunRequest,
    model: str,
    reason: str,
    timings: dict[str, Any],
    budget: int,
) -> tuple[str, dict[str, Any]]:
    """The answer, and the run's ``schedule`` and ``baseline``; ``budget`` is the answer's
    size in tokens (a plan's total when there was one: the same work, done by one neuron)."""
    await o._save(run_id, mode="direct", reason=reason)
    await o._publish(run_id)
    start = o.clock()
    answer, (neuron, stats) = await o._ask(
        model, [{"role": "user", "content": request.task}], budget, answer_of=run_id
    )
    seconds = o.clock() - start
    timings |= {"parallel_s": round(seconds, 3), "synthesize_s": 0.0}
    timings.setdefault("decompose_s", 0.0)
    fastest = max(o._speeds(model).values(), default=0.0)
    solo = (stats.output_tokens or 0) / fastest if fastest else seconds
    extra = {
        "schedule": {
            "policy": request.policy,
            "lower_bound_s": round(solo, 3),
            "predicted_s": round(solo, 3),
            "efficiency": round(solo / seconds, 3) if seconds else None,
        },
        "baseline": {"neuron": neuron, "estimated_solo_s": round(solo, 3)},
    }
    return answer, extra
