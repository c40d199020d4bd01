"""The orchestrator: a brain decomposes a task, neurons solve the subtasks in parallel, the
brain synthesizes. ``plan`` asks for and checks the plan, ``schedule`` places subtasks on
neurons (Q||Cmax), ``run`` carries a run through and records it."""
