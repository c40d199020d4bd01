"""The orchestrator: a brain plans a task, neurons solve its parts in parallel, the answer
is put together.

run.py          the Orchestra: carrying runs (leases, resume, cancel), the direct answer,
                and the rewrite path (a whole plan, scheduled, the brain rewrites)
pipeline.py     the stitched run, the default: outline streamed, parts sized and dispatched
                as they arrive, the answer stitched
plan_stream.py  reading the brain's outline while it streams
plan.py         the rewrite path's plan: asking for it, checking it
schedule.py     placing work on neurons of different speeds (Q||Cmax, Q|pmtn|Cmax)
stitch.py       the prompts around the parts, and the answer put in order
view.py         a run as the API, the CLI and the dashboard show it
events.py       each run's progress, for server-sent events
"""
