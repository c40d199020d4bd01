// Synapse, the Runs section: the orchestrator's recent runs and, for the one selected,
// its timeline as a Gantt chart: the brain's lane (the outline or plan, the closing, the
// synthesis), one lane per neuron with a bar per delegation (and the opening, on the
// worker that writes it), the first answer token, the lower bound (LB) against the
// achieved parallel phase, and the figures (efficiency, speed-up). A stitched run's bars
// overlap in time: the parts start while the brain still writes the outline.
//
// The list comes from GET /fleet/runs, a run from GET /fleet/runs/ID; after that "run"
// events on the shared stream (app.js) carry each run's view as it changes. Times are
// the server's, in seconds from the run's start (the view's "timeline" and each
// delegation's start_s / end_s), so the browser's clock never skews the chart; while a
// run goes on, "now" is the view's elapsed_s plus the time since the view arrived.
"use strict";

(() => {
  const { on, api, h, s, fmt, plural, ago, neuron, tooltip } = window.synapse;
  const LIST_LIMIT = 20;
  const TICK_MS = 100; // how often a running run's bars grow
  const LABEL_W = 168; // the lane names' column, in px
  const AXIS_H = 26;
  const FOOT_H = 30;
  const BAR_H = 22;
  const ROW_H = 30; // one bar's row within a lane
  const LANE_PAD = 7;
  const WORDS = {
    running: "Running",
    completed: "Completed",
    failed: "Failed",
    cancelled: "Cancelled",
    pending: "Pending",
    active: "Running",
  };
  const PHASES = { decompose: "Decompose", synthesize: "Synthesize", parallel: "Direct answer", opening: "Opening", closing: "Closing" };

  const $ = (id) => document.getElementById(id);
  const state = {
    runs: new Map(), // id -> { view, at }: the newest view of each listed run, when it came
    selected: null,
    pinned: false, // the user chose a run: stop following the newest one
    answers: new Map(), // id -> the answer text (the stream leaves texts out)
    bars: new Map(), // "d3" / "decompose" -> the bar's elements, reused while live
    focus: 0, // the delegation that takes the chart's tab stop
    timer: 0,
    width: 0,
  };

  // ---- numbers and words

  function secs(value) {
    if (value == null) return "–";
    if (value < 10) return `${value.toFixed(1)} s`;
    if (value < 90) return `${value.toFixed(0)} s`;
    const minutes = Math.floor(value / 60);
    return `${minutes} min ${Math.round(value - minutes * 60)} s`;
  }

  function times(value) {
    return value == null ? "–" : `×${value >= 10 ? value.toFixed(0) : value.toFixed(2)}`;
  }

  function percent(value) {
    return value == null ? "–" : `${Math.round(value * 100)}%`;
  }

  // A stitched run's decomposition is the brain's outline.
  function phaseName(phase, view) {
    return phase === "decompose" && view?.synthesis === "stitch" ? "Outline" : PHASES[phase];
  }

  function niceStep(span, room) {
    const most = Math.max(2, Math.floor(room / 80)); // ticks at least 80 px apart
    for (const step of [0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600]) {
      if (span / step <= most) return step;
    }
    return 3600 * Math.ceil(span / 3600 / most);
  }

  function tickLabel(t, step) {
    if (step >= 60) return `${Math.round(t / 60)} min`;
    return `${t.toFixed(step < 1 ? 1 : 0)} s`;
  }

  function niceEnd(value) {
    if (!value || value <= 0) return 1;
    const exp = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * exp >= value * 1.03) return m * exp;
    return 10 * exp;
  }

  // ---- the data

  function entry(id) {
    return state.runs.get(id);
  }

  function nowS(id) {
    const known = entry(id);
    if (!known) return 0;
    const { view, at } = known;
    const elapsed = view.timeline?.elapsed_s ?? 0;
    return view.status === "running" ? elapsed + (performance.now() - at) / 1000 : elapsed;
  }

  function remember(view) {
    const before = entry(view.id);
    // a list entry has no delegations; keep the ones a fuller view brought
    if (view.delegations == null && before?.view.delegations) view = { ...view, delegations: before.view.delegations };
    state.runs.set(view.id, { view, at: performance.now() });
    if (view.answer) state.answers.set(view.id, view.answer);
    return before?.view;
  }

  function newestFirst() {
    return [...state.runs.values()]
      .map((known) => known.view)
      .sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
  }

  async function loadList() {
    let views;
    try {
      const response = await api(`/fleet/runs?limit=${LIST_LIMIT}`);
      if (!response.ok) return;
      views = await response.json();
    } catch {
      return;
    }
    for (const view of views) remember(view);
    const keep = new Set(newestFirst().slice(0, LIST_LIMIT).map((v) => v.id));
    for (const id of [...state.runs.keys()]) if (!keep.has(id) && id !== state.selected) state.runs.delete(id);
    if (!state.selected && views.length) select(newestFirst()[0].id, false);
    else if (state.selected) loadRun(state.selected);
    drawList();
  }

  async function loadRun(id) {
    let view;
    try {
      const response = await api(`/fleet/runs/${encodeURIComponent(id)}`);
      if (!response.ok) return;
      view = await response.json();
    } catch {
      return;
    }
    remember(view);
    if (state.selected === id) drawRun();
    drawList();
  }

  function select(id, byUser) {
    state.pinned = state.pinned || byUser;
    if (state.selected !== id) {
      state.selected = id;
      state.bars.clear();
      state.focus = 0;
      $("gantt").replaceChildren();
    }
    drawList();
    drawRun();
    loadRun(id);
  }

  on("run", (view) => {
    const before = remember(view);
    const newest = newestFirst()[0];
    if (!state.selected || (!state.pinned && newest.id === view.id && state.selected !== view.id)) {
      select(view.id, false);
      return;
    }
    if (before && before.status === "running" && view.status !== "running") loadRun(view.id); // its answer
    if (state.selected === view.id) drawRun();
    drawList();
  });
  on("snapshot", loadList); // on every (re)connection: catch up on what the stream missed

  // ---- the list

  // Rows are kept and updated in place, so a click never lands on a row being replaced.
  function drawList() {
    const list = $("run-list");
    const views = newestFirst().slice(0, LIST_LIMIT);
    const rows = new Map([...list.children].map((li) => [li.firstChild.dataset.run, li]));
    const items = views.map((view) => {
      const li = rows.get(view.id) || h("li", {}, h("button", { type: "button", class: "run-row", "data-run": view.id }));
      drawRow(li.firstChild, view);
      return li;
    });
    items.forEach((li, at) => {
      if (list.children[at] !== li) list.insertBefore(li, list.children[at] || null);
    });
    while (list.children.length > items.length) list.lastChild.remove();
    $("runs-empty").hidden = views.length > 0;
    $("runs").dataset.empty = String(!views.length);
  }

  function drawRow(button, view) {
    const running = view.status === "running";
    const total = running ? nowS(view.id) : view.timings?.total_s ?? view.timeline?.elapsed_s;
    const facts = [view.mode || (running ? "planning" : "–"), running ? `${secs(total)} so far` : secs(total)];
    if (view.speedup_estimate != null) facts.push(`${times(view.speedup_estimate)} speed-up`);
    button.dataset.status = view.status;
    button.setAttribute("aria-current", String(view.id === state.selected));
    button.setAttribute("aria-label", `${WORDS[view.status] || view.status} run: ${view.task}. ${facts.join(", ")}.`);
    button.replaceChildren(
      h("span", { class: `pill run-${view.status}`, text: WORDS[view.status] || view.status }),
      h("span", { class: "run-task", text: view.task }),
      h(
        "span",
        { class: "run-meta" },
        h("span", { text: facts.join(" · ") }),
        h("time", { datetime: view.created_at || "", text: view.created_at ? ago(view.created_at) : "" }),
      ),
    );
  }

  function setupList() {
    const list = $("run-list");
    list.addEventListener("click", (event) => {
      const row = event.target.closest(".run-row");
      if (row) select(row.dataset.run, true);
    });
    list.addEventListener("keydown", (event) => {
      const rows = [...list.querySelectorAll(".run-row")];
      const at = rows.indexOf(event.target.closest(".run-row"));
      if (at < 0) return;
      const next = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: rows.length - 1 }[event.key];
      if (next != null && rows[next]) {
        event.preventDefault();
        rows[next].focus();
      }
    });
  }

  // ---- one run: header, figures, chart, table, answer

  function drawRun() {
    const known = state.selected && entry(state.selected);
    $("run").hidden = !known;
    if (!known) return;
    const view = known.view;
    const running = view.status === "running";
    $("run-id").textContent = view.id.slice(0, 8);
    $("run-title").textContent = view.task;
    $("run-title").title = view.task;
    const sub = [view.model && `model ${view.model}`, view.brain && view.brain !== view.model && `brain ${view.brain}`];
    sub.push(view.schedule?.policy && `policy ${view.schedule.policy}`);
    sub.push(view.created_at && `started ${ago(view.created_at)}`);
    $("run-sub").textContent = sub.filter(Boolean).join(" · ");
    const pill = $("run-pill");
    pill.className = `pill run-${view.status}`;
    pill.textContent = WORDS[view.status] || view.status;
    const reason = $("run-reason");
    reason.hidden = !view.reason;
    reason.textContent = view.mode === "direct" ? `Answered directly: ${view.reason}` : view.reason || "";
    drawFigures(view, running);
    drawChart(view);
    drawTable(view);
    const answer = state.answers.get(view.id);
    $("run-answer-box").hidden = !answer;
    $("run-answer").textContent = answer || "";
    clearInterval(state.timer);
    state.timer = running ? setInterval(tick, TICK_MS) : 0;
  }

  function tick() {
    const known = state.selected && entry(state.selected);
    if (!known || known.view.status !== "running") {
      clearInterval(state.timer);
      return;
    }
    drawChart(known.view);
    drawFigures(known.view, true);
  }

  function figure(term, value, note, cls) {
    return h(
      "div",
      { class: `${cls || ""}${value === "–" ? " unknown" : ""}` },
      h("dt", { text: term }),
      h("dd", { text: value }),
      note ? h("dd", { class: "note", text: note }) : null,
    );
  }

  function drawFigures(view, running) {
    const d = view.delegations || [];
    const done = d.filter((x) => x.status === "completed").length;
    const retried = d.filter((x) => x.attempts > 1).length;
    const lb = view.schedule?.lower_bound_s;
    const parallel = view.timings?.parallel_s;
    const baseline = view.baseline || {};
    const lanes = new Set(d.map((x) => x.neuron).filter(Boolean)).size;
    const direct = view.mode === "direct";
    const items = [
      figure("Total", running ? secs(nowS(view.id)) : secs(view.timings?.total_s), running ? "so far" : "", "total"),
      direct
        ? figure("Mode", "direct", "one neuron answered", "mode")
        : figure(
            "Delegations",
            d.length ? `${done} / ${d.length}` : "–",
            d.length ? [`on ${plural(lanes, "neuron")}`, retried ? `${retried} retried` : null].filter(Boolean).join(" · ") : "planning…",
            "delegations",
          ),
      figure(
        direct ? "Answer phase" : "Parallel phase",
        secs(parallel),
        parallel == null ? (running ? "under way" : "") : "achieved",
        "parallel",
      ),
      figure("Lower bound", secs(lb), lb == null ? (running ? "known at the end" : "") : `predicted ${secs(view.schedule?.predicted_s)}`, "lb"),
      figure("Efficiency", percent(view.schedule?.efficiency), view.schedule?.efficiency == null ? "" : "LB ÷ achieved", "efficiency"),
      figure(
        "Speed-up",
        times(view.speedup_estimate),
        baseline.estimated_solo_s == null ? "" : `vs ${secs(baseline.estimated_solo_s)} on ${baseline.neuron || "one neuron"} alone`,
        "speedup",
      ),
    ];
    $("run-figures").replaceChildren(...items);
  }

  // ---- the Gantt chart

  function laneSpeed(name, view) {
    const live = neuron(name)?.tokens_per_second;
    if (live) return live;
    const seen = (view.delegations || []).filter((d) => d.neuron === name && d.tokens_per_second);
    if (seen.length) return seen.reduce((sum, d) => sum + d.tokens_per_second, 0) / seen.length;
    return 20;
  }

  // What to draw, in seconds: [{ key, label, sub, bars: [{ id, start, end, ...}] }].
  function layout(view, now) {
    const line = view.timeline || {};
    const brain = { key: "brain", label: "Brain", sub: view.brain || view.model || "", bars: [] };
    const phaseBar = (name) => {
      const phase = line[name];
      if (!phase) return null;
      const end = phase.end_s ?? now;
      if (end - phase.start_s <= 0 && phase.end_s != null) return null;
      return { id: name, kind: "phase", phase: name, start: phase.start_s, end, live: phase.end_s == null };
    };
    // the pieces around the parts: the closing is the brain's, the opening its worker's
    const opening = phaseBar("opening");
    if (opening && !line.opening.neuron) brain.bars.push(opening);
    for (const name of ["decompose", "closing", "synthesize"]) {
      const bar = phaseBar(name);
      if (bar) brain.bars.push(bar);
    }
    pack(brain.bars);
    const lanes = brain.bars.length || view.mode !== "direct" ? [brain] : [];
    if (view.mode === "direct" && line.parallel) {
      const phase = line.parallel;
      const who = view.baseline?.neuron;
      lanes.push({
        key: "direct",
        label: who || "Fastest neuron",
        sub: "direct answer",
        bars: [{ id: "parallel", kind: "phase", phase: "parallel", start: phase.start_s, end: phase.end_s ?? now, live: phase.end_s == null }],
      });
    }
    const byNeuron = new Map();
    for (const d of view.delegations || []) {
      const name = d.neuron || "unassigned";
      if (!byNeuron.has(name)) byNeuron.set(name, []);
      byNeuron.get(name).push(d);
    }
    const opener = opening && line.opening.neuron;
    if (opener && !byNeuron.has(opener)) byNeuron.set(opener, []);
    const parallelStart = line.parallel?.start_s ?? line.decompose?.end_s ?? now;
    for (const name of [...byNeuron.keys()].sort()) {
      const tps = laneSpeed(name, view);
      const bars = [];
      let cursor = parallelStart;
      const queued = [];
      for (const d of byNeuron.get(name)) {
        const expected = (d.expected_tokens || 100) / tps;
        if (d.status === "pending" || d.start_s == null) {
          queued.push(d);
          continue;
        }
        const live = d.status === "active";
        const end = live ? Math.max(now, d.start_s) : d.end_s ?? d.start_s;
        const projected = live ? Math.max(end, d.start_s + expected) : end;
        bars.push({ id: `d${d.index}`, kind: "delegation", d, start: d.start_s, end, projected, live });
        cursor = Math.max(cursor, projected);
      }
      if (name === opener) bars.push(opening);
      cursor = Math.max(cursor, now);
      for (const d of queued) {
        const length = (d.expected_tokens || 100) / tps;
        bars.push({ id: `d${d.index}`, kind: "delegation", d, start: cursor, end: cursor + length, projected: cursor + length, ghost: true });
        cursor += length;
      }
      lanes.push({ key: `n:${name}`, label: name, sub: `${fmt(tps)} tok/s`, bars: pack(bars) });
    }
    return lanes;
  }

  // Bars that overlap in time (a neuron with several slots) go on rows of their own.
  function pack(bars) {
    const rowEnds = [];
    for (const bar of [...bars].sort((a, b) => a.start - b.start)) {
      let row = rowEnds.findIndex((end) => end <= bar.start + 1e-3);
      if (row < 0) row = rowEnds.push(0) - 1;
      rowEnds[row] = bar.projected ?? bar.end;
      bar.row = row;
    }
    return bars;
  }

  function drawChart(view) {
    const box = $("gantt");
    const width = Math.max(480, box.clientWidth || 900);
    state.width = width;
    const now = nowS(view.id);
    const lanes = layout(view, now);
    const running = view.status === "running";
    const line = view.timeline || {};
    const lb = view.schedule?.lower_bound_s;
    let span = running ? now : line.elapsed_s ?? now;
    for (const lane of lanes) for (const bar of lane.bars) span = Math.max(span, bar.projected ?? bar.end);
    if (line.parallel && lb != null) span = Math.max(span, line.parallel.start_s + lb);
    const end = running ? niceEnd(span * 1.04) : Math.max(span, 0.1) * 1.02;
    const x0 = LABEL_W, x1 = width - 18;
    const x = (t) => x0 + (Math.max(0, t) / end) * (x1 - x0);

    let y = AXIS_H;
    for (const lane of lanes) {
      const rows = Math.max(1, ...lane.bars.map((b) => (b.row ?? 0) + 1));
      lane.y = y;
      lane.h = rows * ROW_H + LANE_PAD * 2 - (ROW_H - BAR_H);
      y += lane.h;
    }
    const height = y + FOOT_H;
    const neuronTop = lanes.find((lane) => lane.key !== "brain")?.y ?? AXIS_H;

    let svg = box.querySelector("svg.chart");
    if (!svg) {
      svg = s("svg", { class: "chart", role: "group" });
      svg.append(s("g", { class: "grid" }), s("g", { class: "lanes" }), s("g", { class: "band" }), s("g", { class: "bars" }), s("g", { class: "marks" }));
      box.replaceChildren(svg);
    }
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    const done = (view.delegations || []).filter((d) => d.status === "completed").length;
    svg.setAttribute(
      "aria-label",
      `Timeline of the run: ${plural((view.delegations || []).length, "delegation")}, ${done} completed, over ${plural(lanes.filter((l) => l.key !== "brain").length, "neuron lane")}. Arrow keys move between delegations.`,
    );
    const [grid, laneLayer, band, barLayer, marks] = svg.children;

    // the time axis and its grid
    const step = niceStep(end, x1 - x0);
    const ticks = [];
    for (let t = 0; t <= end + 1e-9; t += step) {
      ticks.push(s("line", { class: "tick", x1: x(t), x2: x(t), y1: AXIS_H - 4, y2: height - FOOT_H }));
      ticks.push(s("text", { class: "tick-label", x: x(t), y: AXIS_H - 10, text: tickLabel(t, step) }));
    }
    grid.replaceChildren(...ticks);

    // lanes: a name, what it is, a separator
    laneLayer.replaceChildren(
      ...lanes.flatMap((lane, i) => [
        s("rect", { class: `lane-bg${i % 2 ? " odd" : ""}`, x: 0, y: lane.y, width, height: lane.h }),
        s("text", { class: "lane-name", x: 14, y: lane.y + lane.h / 2 - 2, text: lane.label }),
        s("text", { class: "lane-sub", x: 14, y: lane.y + lane.h / 2 + 12, text: lane.sub }),
        s("line", { class: "lane-rule", x1: 0, x2: width, y1: lane.y + lane.h, y2: lane.y + lane.h }),
      ]),
    );

    // the parallel phase behind the neurons' lanes
    const pieces = [];
    if (line.parallel && view.mode === "decomposed") {
      const from = x(line.parallel.start_s), to = x(line.parallel.end_s ?? now);
      pieces.push(s("rect", { class: "phase-band", x: from, y: neuronTop, width: Math.max(0, to - from), height: height - FOOT_H - neuronTop }));
    }
    band.replaceChildren(...pieces);

    // bars, kept between draws so focus and hover survive live updates
    const seen = new Set();
    let order = 0;
    for (const lane of lanes) {
      for (const bar of lane.bars) {
        seen.add(bar.id);
        const top = lane.y + LANE_PAD + (bar.row ?? 0) * ROW_H;
        drawBar(barLayer, bar, view, x, top, order++);
      }
    }
    for (const [id, parts] of state.bars) {
      if (!seen.has(id)) {
        parts.g.remove();
        state.bars.delete(id);
      }
    }
    rovingFocus();

    // markers: LB and the achieved parallel phase; "now" while running
    const signs = [];
    const bottom = height - FOOT_H;
    if (line.parallel && lb != null && view.mode === "decomposed") {
      const at = x(line.parallel.start_s + lb);
      signs.push(s("line", { class: "mark-lb", x1: at, x2: at, y1: neuronTop - 4, y2: bottom + 6 }));
      signs.push(s("text", { class: "mark-label lb", x: at - 5, y: bottom + 19, "text-anchor": "end", text: `LB ${secs(lb)}` }));
    }
    if (line.parallel?.end_s != null && view.mode === "decomposed") {
      const at = x(line.parallel.end_s);
      const achieved = view.timings?.parallel_s ?? line.parallel.end_s - line.parallel.start_s;
      signs.push(s("line", { class: "mark-achieved", x1: at, x2: at, y1: neuronTop - 4, y2: bottom + 6 }));
      signs.push(s("text", { class: "mark-label achieved", x: at + 5, y: bottom + 19, text: `achieved ${secs(achieved)}` }));
    }
    const first = view.timings?.first_token_s ?? line.first_token_s;
    if (first != null) {
      const at = x(first);
      signs.push(s("line", { class: "mark-first", x1: at, x2: at, y1: AXIS_H - 4, y2: bottom + 6 }));
      signs.push(s("text", { class: "mark-label first", x: at + 5, y: AXIS_H + 10, text: `first token ${secs(first)}` }));
    }
    if (running) {
      const at = x(now);
      signs.push(s("line", { class: "mark-now", x1: at, x2: at, y1: AXIS_H - 4, y2: bottom }));
      signs.push(s("text", { class: "mark-label now", x: at, y: bottom + 19, "text-anchor": "middle", text: "now" }));
    }
    marks.replaceChildren(...signs);
  }

  function describeBar(bar, view) {
    if (bar.kind === "phase") {
      const what = phaseName(bar.phase, view);
      return `${what}: ${bar.live ? `under way for ${secs(bar.end - bar.start)}` : secs(bar.end - bar.start)}.`;
    }
    const d = bar.d;
    const words = [`Delegation ${d.index} on ${d.neuron || "no neuron yet"}: ${WORDS[d.status] || d.status}.`];
    if (d.tokens != null) words.push(`${d.tokens} tokens in ${secs(d.seconds)}, ${fmt(d.tokens_per_second)} tok/s.`);
    else if (d.expected_tokens) words.push(`About ${d.expected_tokens} tokens expected.`);
    words.push(plural(d.attempts, "attempt") + ".");
    words.push(`Subtask: ${d.subtask}`);
    if (d.error) words.push(`Last error: ${d.error}`);
    return words.join(" ");
  }

  function drawBar(layer, bar, view, x, top, order) {
    let parts = state.bars.get(bar.id);
    if (!parts) {
      const g = s("g", { class: "bar", role: "img" });
      if (bar.kind === "delegation") g.dataset.delegation = String(bar.d.index);
      else g.dataset.phase = bar.phase;
      parts = {
        g,
        rest: s("rect", { class: "rest", rx: 5, height: BAR_H }),
        body: s("rect", { class: "body", rx: 5, height: BAR_H }),
        head: s("rect", { class: "head", width: 3, height: BAR_H - 8, rx: 1.5 }),
        label: s("text", { class: "bar-label" }),
      };
      g.append(parts.rest, parts.body, parts.head, parts.label);
      state.bars.set(bar.id, parts);
    }
    const { g, rest, body, head, label } = parts;
    if (g.parentNode !== layer || layer.children[order] !== g) layer.insertBefore(g, layer.children[order] || null);
    const status = bar.kind === "phase" ? (bar.live ? "active" : "completed") : bar.ghost ? "pending" : bar.d.status;
    g.dataset.status = status;
    g.dataset.kind = bar.kind;
    g.setAttribute("aria-label", describeBar(bar, view));
    const left = x(bar.start);
    const w = Math.max(4, x(bar.end) - left);
    for (const rect of [rest, body, head, label]) rect.setAttribute("y", top);
    body.setAttribute("x", left);
    body.setAttribute("width", w);
    const restW = bar.live && bar.projected > bar.end ? x(bar.projected) - x(bar.end) : 0;
    rest.setAttribute("x", left + w);
    rest.setAttribute("width", Math.max(0, restW));
    rest.setAttribute("visibility", restW > 1 ? "visible" : "hidden");
    head.setAttribute("x", left + w - 5);
    head.setAttribute("y", top + 4);
    head.setAttribute("visibility", bar.live ? "visible" : "hidden");
    label.setAttribute("x", left + 8);
    label.setAttribute("y", top + BAR_H / 2 + 4);
    label.textContent = barText(bar, w, view);
  }

  function barText(bar, width, view) {
    const room = Math.floor((width - 14) / 6.6); // characters that fit
    let options;
    if (bar.kind === "phase") {
      const name = phaseName(bar.phase, view);
      options = [`${name} · ${secs(bar.end - bar.start)}`, name, name.slice(0, 3)];
    } else {
      const d = bar.d;
      const retry = d.attempts > 1 ? ` ↻${d.attempts}` : "";
      const amount = d.tokens != null ? `${d.tokens} tok · ${fmt(d.tokens_per_second)} tok/s` : d.status === "active" ? "running" : d.status === "failed" || d.status === "cancelled" ? d.status : "queued";
      const short = d.tokens != null ? `${d.tokens} tok` : amount;
      options = [`#${d.index}${retry} · ${amount}`, `#${d.index}${retry} · ${short}`, `#${d.index}${retry}`, `#${d.index}`];
    }
    return options.find((text) => text.length <= room) || "";
  }

  // One tab stop for the whole chart; arrow keys move between delegations.
  function delegationBars() {
    return [...document.querySelectorAll("#gantt [data-delegation]")].sort((a, b) => a.dataset.delegation - b.dataset.delegation);
  }

  function rovingFocus() {
    const bars = [...document.querySelectorAll("#gantt .bar")];
    const byIndex = delegationBars();
    const stop = byIndex.find((g) => Number(g.dataset.delegation) === state.focus) || byIndex[0] || bars[0];
    for (const g of bars) g.setAttribute("tabindex", g === stop ? "0" : "-1");
  }

  function showBarTip(g) {
    const known = entry(state.selected);
    if (!known) return;
    const view = known.view;
    const key = `run:${view.id}:${g.dataset.delegation ?? g.dataset.phase}`;
    const facts = h("dl");
    const add = (term, value) => facts.append(h("dt", { text: term }), h("dd", { text: value }));
    let title;
    let extra = null;
    if (g.dataset.delegation != null) {
      const d = (view.delegations || []).find((x) => String(x.index) === g.dataset.delegation);
      if (!d) return;
      title = h("div", { class: "tt-name" }, `Delegation #${d.index}`, h("span", { class: `pill d-${d.status}`, text: WORDS[d.status] || d.status }));
      add("Subtask", d.subtask);
      add("Neuron", d.neuron || "–");
      add("Tokens", d.tokens != null ? `${d.tokens}${d.expected_tokens ? ` of ~${d.expected_tokens}` : ""}` : `~${d.expected_tokens ?? "?"} expected`);
      add("Speed", d.tokens_per_second != null ? `${fmt(d.tokens_per_second)} tok/s` : "–");
      add("Time", d.seconds != null ? secs(d.seconds) : d.status === "active" ? `${secs(nowS(view.id) - d.start_s)} so far` : "–");
      add("Attempts", String(d.attempts));
      if (d.error) extra = h("div", { class: "tt-reason", text: d.error });
    } else {
      const phase = g.dataset.phase;
      const span = phase === "parallel" ? view.timeline?.parallel : view.timeline?.[phase];
      title = h("div", { class: "tt-name" }, phaseName(phase, view));
      const writer = span?.neuron ? `${span.neuron}${phase === "closing" ? ` (the brain, ${view.brain || view.model})` : ""}` : null;
      add("On", phase === "parallel" ? view.baseline?.neuron || "the fastest neuron" : writer || `the brain (${view.brain || view.model})`);
      add("Took", span?.end_s != null ? secs(span.end_s - span.start_s) : "under way");
    }
    tooltip.show(g, key, title, facts, extra);
  }

  function setupChart() {
    const box = $("gantt");
    box.addEventListener("mouseover", (event) => {
      const g = event.target.closest(".bar");
      if (!g) return tooltip.about().startsWith("run:") && tooltip.hide();
      showBarTip(g);
    });
    box.addEventListener("mouseleave", () => tooltip.hide());
    box.addEventListener("focusin", (event) => {
      const g = event.target.closest(".bar");
      if (!g) return;
      if (g.dataset.delegation != null) state.focus = Number(g.dataset.delegation);
      rovingFocus();
      showBarTip(g);
    });
    box.addEventListener("focusout", () => tooltip.hide());
    box.addEventListener("keydown", (event) => {
      const g = event.target.closest(".bar");
      if (!g) return;
      if (event.key === "Escape") return tooltip.hide();
      const bars = delegationBars();
      const at = bars.indexOf(g);
      const next = { ArrowRight: at + 1, ArrowDown: at + 1, ArrowLeft: at - 1, ArrowUp: at - 1, Home: 0, End: bars.length - 1 }[event.key];
      if (next != null && bars[next]) {
        event.preventDefault();
        bars[next].focus();
      }
    });
    // Redraw for a new width, in the next frame: drawing changes the box's height, and doing
    // that inside the observer's callback would make it report a resize loop.
    let pending = 0;
    new ResizeObserver(() => {
      if (pending || Math.abs(box.clientWidth - state.width) <= 2) return;
      pending = requestAnimationFrame(() => {
        pending = 0;
        const known = state.selected && entry(state.selected);
        if (known) drawChart(known.view);
      });
    }).observe(box);
  }

  // ---- the table: every delegation in words

  function drawTable(view) {
    const rows = (view.delegations || []).map((d) =>
      h(
        "tr",
        { "data-row": String(d.index), "data-status": d.status },
        h("td", { class: "num", text: String(d.index) }),
        h("td", { class: "subtask", text: d.subtask, title: d.subtask }),
        h("td", { text: d.neuron || "–" }),
        h("td", {}, h("span", { class: `pill d-${d.status}`, text: WORDS[d.status] || d.status })),
        h("td", { class: "num", text: String(d.attempts) }),
        h("td", { class: "num", text: d.tokens != null ? String(d.tokens) : `~${d.expected_tokens ?? "?"}` }),
        h("td", { class: "num", text: secs(d.seconds) }),
        h("td", { class: "num", text: d.tokens_per_second != null ? `${fmt(d.tokens_per_second)} tok/s` : "–" }),
      ),
    );
    $("run-table").tBodies[0].replaceChildren(...rows);
    $("run-table-box").hidden = rows.length === 0;
    $("run-table-box").querySelector("summary").textContent = `Delegations (${rows.length})`;
  }

  // Striped fills for what is under way, shared by every chart.
  function stripeDefs() {
    const defs = s("defs", {});
    for (const [id, a, b] of [["stripes-active", "#5ee0c8", "#3aa796"], ["stripes-brain", "#a78bfa", "#7c5fd6"]]) {
      const pattern = s("pattern", { id, width: 8, height: 8, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" });
      pattern.append(s("rect", { width: 8, height: 8, fill: a }), s("rect", { width: 3.5, height: 8, fill: b }));
      defs.append(pattern);
    }
    document.body.prepend(s("svg", { width: 0, height: 0, "aria-hidden": "true", style: "position:absolute" }, defs));
  }

  // ---- start

  stripeDefs();
  setupList();
  setupChart(); // the list loads on the stream's first snapshot, and again on every reconnection
  setInterval(() => {
    // running runs' times in the list, and "… ago"
    if (!document.hidden && [...state.runs.values()].some((known) => known.view.status === "running")) drawList();
  }, 1000);
})();
