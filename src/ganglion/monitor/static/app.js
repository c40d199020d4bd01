// Synapse: the ganglion fleet monitor. Plain JavaScript and SVG, no build step.
//
// State arrives over server-sent events from GET /fleet/events: a "snapshot" of every
// neuron, then "neuron" (added or changed) and "removed" events. Changes are batched into
// one DOM update per animation frame, at most every FLUSH_MS, so a thousand neurons stay
// smooth and the browser mostly idle. Gauges and node groups are in natural name order
// (n2 before n10); a group too big for one column spans the whole width. The Runs section
// (runs.js) shares the stream, the API calls and the tooltip through window.synapse.
"use strict";

(() => {
  const KEY_STORE = "ganglion.apiKey";
  const COLLAPSED_STORE = "ganglion.collapsedNodes";
  const DENSITY_STORE = "ganglion.density";
  const COMPACT_FROM = 40; // neurons; above this the compact layout is the default
  const WIDE_FROM = 11; // neurons; a compact group this big spans the whole width
  const FLUSH_MS = 250; // live changes are drawn at most this often
  const SVG_NS = "http://www.w3.org/2000/svg";
  const WORDS = { active: "Active", degraded: "Degraded", offline: "Offline", suspended: "Suspended" };
  const ORDER = ["active", "degraded", "suspended", "offline"];
  // The dial: a 240° arc around (CX, CY), from bottom-left (0) to bottom-right (1).
  const CX = 60, CY = 54, R = 44, START = 210, SWEEP = 240;
  const HISTORY_REFRESH_MS = 5000;
  const MAX_RETRY_MS = 10000;
  const SILENCE_MS = 35000; // two keep-alives (15 s) missed

  const $ = (id) => document.getElementById(id);
  const state = {
    neurons: new Map(), // name -> the latest view from the stream
    cards: new Map(), // name -> { el, parts }
    groups: new Map(), // node -> { el, grid, toggle, parts }
    dirty: new Set(),
    all: false, // redraw every card (the scale changed, or a snapshot arrived)
    frame: 0,
    flushedAt: 0,
    flushes: 0, // DOM updates so far
    scale: 0,
    filter: "",
    key: localStorage.getItem(KEY_STORE) || "",
    density: localStorage.getItem(DENSITY_STORE) || "auto",
    collapsed: new Set(JSON.parse(localStorage.getItem(COLLAPSED_STORE) || "[]")),
    stream: null, // the AbortController of the current connection
    retryMs: 2000, // the server's "retry:" advice
    failures: 0,
    heardAt: Date.now(),
    drawer: null, // the name shown in the drawer
    drawerFrom: null, // the gauge that opened it, to return focus
    historyTimer: 0,
    historyAt: 0,
    handlers: new Map(), // event kind -> [handler]; the runs view adds its own with on()
  };

  // ---- small DOM helpers

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") el.className = value;
      else if (name === "text") el.textContent = value;
      else el.setAttribute(name, value);
    }
    for (const child of children) if (child != null) el.append(child);
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") el.textContent = value;
      else el.setAttribute(name, value);
    }
    for (const child of children) if (child != null) el.append(child);
    return el;
  }

  function fmt(tps) {
    if (tps == null) return "–";
    return tps >= 100 ? tps.toFixed(0) : tps.toFixed(1);
  }

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many || one + "s"}`;
  }

  function ago(stamp) {
    if (!stamp) return "never";
    const seconds = Math.max(0, (Date.now() - Date.parse(stamp)) / 1000);
    if (seconds < 90) return `${seconds.toFixed(0)} s ago`;
    if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min ago`;
    return new Date(stamp).toLocaleString();
  }

  // Natural order, as the gateway lists neurons: runs of digits compare as numbers.
  const byName = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" }).compare;

  function clock(stamp) {
    return new Date(stamp).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  // ---- the dial

  function point(fraction, radius = R) {
    const angle = ((START - SWEEP * fraction) * Math.PI) / 180;
    return [CX + radius * Math.cos(angle), CY - radius * Math.sin(angle)];
  }

  const ARC = (() => {
    const [x0, y0] = point(0);
    const [x1, y1] = point(1);
    return `M ${x0.toFixed(2)} ${y0.toFixed(2)} A ${R} ${R} 0 1 1 ${x1.toFixed(2)} ${y1.toFixed(2)}`;
  })();

  function niceCeiling(value) {
    if (!value || value <= 0) return 10;
    const exp = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
      if (m * exp >= value * 1.04) return m * exp;
    }
    return 10 * exp;
  }

  function fleetScale() {
    let top = 0;
    for (const view of state.neurons.values()) {
      top = Math.max(top, view.tokens_per_second || 0, view.best_tokens_per_second || 0);
    }
    return niceCeiling(top);
  }

  function hatchDefs() {
    // One shared pattern for the suspended look, referenced by every dial.
    const holder = s("svg", { width: 0, height: 0, "aria-hidden": "true", style: "position:absolute" });
    const pattern = s("pattern", {
      id: "hatch", width: 5, height: 5, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)",
    });
    pattern.append(s("rect", { width: 5, height: 5, fill: "#1d2430" }));
    pattern.append(s("rect", { width: 2, height: 5, fill: "#5a6396" }));
    const gradient = s("linearGradient", { id: "spark-fill", x1: 0, y1: 0, x2: 0, y2: 1 });
    gradient.append(s("stop", { offset: "0", "stop-color": "#5ee0c8", "stop-opacity": "0.28" }));
    gradient.append(s("stop", { offset: "1", "stop-color": "#5ee0c8", "stop-opacity": "0" }));
    holder.append(s("defs", {}, pattern, gradient));
    document.body.prepend(holder);
  }

  // ---- one gauge

  function makeCard(name) {
    const fill = s("path", { class: "fill", d: ARC, pathLength: 100, "stroke-dasharray": "0 100" });
    const [bx0, by0] = point(0, R - 6);
    const [bx1, by1] = point(0, R + 7);
    const best = s("line", { class: "best", x1: bx0, y1: by0, x2: bx1, y2: by1 });
    const value = s("text", { class: "value", x: CX, y: CY + 4, text: "–" });
    const unit = s("text", { class: "unit", x: CX, y: CY + 17, text: "TOK/S" });
    // The marker for a GPU that contributes nothing: the model runs on the CPU.
    const idle = s("text", { class: "idle-gpu", x: CX, y: CY - 20, text: "\u26a0 CPU", visibility: "hidden" });
    const dial = s(
      "svg",
      { class: "dial", viewBox: "0 0 120 86", "aria-hidden": "true", focusable: "false" },
      s("path", { class: "track", d: ARC }),
      fill,
      best,
      value,
      unit,
      idle,
    );
    const pill = h("span", { class: "pill" });
    const busy = h("span", { class: "busy" });
    const models = h("div", { class: "models" });
    const label = h("div", { class: "name", text: name });
    const el = h(
      "div",
      {
        class: "gauge",
        "data-neuron": name,
        tabindex: "0",
        role: "button",
        "aria-haspopup": "dialog",
        "aria-expanded": "false",
      },
      dial,
      h("div", { class: "meta" }, label, h("div", { class: "row" }, pill, busy), models),
    );
    return { el, parts: { fill, best, value, pill, busy, models, idle, label, labelNode: null } };
  }

  function describe(view) {
    const words = [`${view.name}: ${WORDS[view.status] || view.status}.`];
    words.push(view.tokens_per_second == null ? "No speed measured yet." : `${fmt(view.tokens_per_second)} tokens per second.`);
    if (view.best_tokens_per_second != null) words.push(`Own best ${fmt(view.best_tokens_per_second)}.`);
    words.push(`Node ${view.node}. ${view.in_flight} in flight.`);
    if (view.models.length) words.push(`Models: ${view.models.join(", ")}.`);
    if (view.reason) words.push(`Reason: ${view.reason}`);
    if (view.idle_gpu && view.idle_gpu !== view.reason) words.push(`GPU idle: ${view.idle_gpu}`);
    return words.join(" ");
  }

  // A name that begins with its node's ("gpu-box-3" on gpu-box) shows the rest only in the
  // compact layout: the group's head names the node, and "127.0.0.1-…" would say nothing.
  function drawName(parts, view) {
    if (parts.labelNode === view.node) return;
    parts.labelNode = view.node;
    const cut = view.node.length + 1;
    const prefixed = view.name.length > cut && view.name.startsWith(view.node) && "-_.:".includes(view.name[cut - 1]);
    if (prefixed) parts.label.replaceChildren(h("span", { class: "prefix", text: view.name.slice(0, cut) }), view.name.slice(cut));
    else parts.label.textContent = view.name;
  }

  function drawCard(card, view) {
    const { el, parts } = card;
    drawName(parts, view);
    const down = view.status === "offline" || view.status === "suspended";
    const tps = view.tokens_per_second;
    el.dataset.status = view.status;
    el.setAttribute("aria-label", describe(view));
    const note = [view.reason, view.idle_gpu !== view.reason ? view.idle_gpu : null].filter(Boolean);
    if (note.length) el.title = note.join("\n");
    else el.removeAttribute("title");
    el.dataset.idleGpu = view.idle_gpu ? "true" : "false";
    parts.idle.setAttribute("visibility", view.idle_gpu ? "visible" : "hidden");
    const fraction = down || tps == null ? 0 : Math.min(1, tps / state.scale);
    parts.fill.setAttribute("stroke-dasharray", `${(fraction * 100).toFixed(2)} 100`);
    parts.fill.setAttribute("visibility", fraction > 0 ? "visible" : "hidden"); // no round-cap dot at 0
    const best = view.best_tokens_per_second;
    if (best == null) {
      parts.best.setAttribute("visibility", "hidden");
    } else {
      parts.best.setAttribute("visibility", "visible");
      const turn = SWEEP * Math.min(1, best / state.scale);
      parts.best.setAttribute("transform", `rotate(${turn.toFixed(2)} ${CX} ${CY})`);
    }
    parts.value.textContent = down ? "–" : fmt(tps);
    parts.pill.className = `pill ${view.status}`;
    parts.pill.textContent = WORDS[view.status] || view.status;
    const slots = view.slots ? `/${view.slots}` : "";
    parts.busy.textContent = `${view.in_flight}${slots} busy`;
    parts.busy.classList.toggle("on", view.in_flight > 0);
    parts.models.textContent = view.models.length ? view.models.join(", ") : "no models";
    el.hidden = !matches(view);
  }

  // ---- node groups

  function makeGroup(node) {
    const id = `node-${state.groups.size}`;
    const chevron = s("svg", { class: "chevron", viewBox: "0 0 12 12", "aria-hidden": "true" }, s("path", { d: "M2.5 4.5 6 8l3.5-3.5" }));
    const icon = s(
      "svg",
      { class: "node-icon", viewBox: "0 0 16 16", "aria-hidden": "true" },
      s("rect", { x: 2, y: 2.5, width: 12, height: 4.5, rx: 1.2 }),
      s("rect", { x: 2, y: 9, width: 12, height: 4.5, rx: 1.2 }),
    );
    const count = h("span", { class: "node-count" });
    const bar = h("span", { class: "node-bar", "aria-hidden": "true" });
    const tps = h("span", { class: "node-tps" });
    const label = h("span", { class: "visually-hidden" });
    const toggle = h(
      "button",
      { class: "node-toggle", type: "button", "aria-controls": id, "aria-expanded": "true" },
      chevron,
      icon,
      h("span", { class: "node-name", text: node }),
      count,
      label,
      bar,
      tps,
    );
    const grid = h("div", { class: "grid", id, role: "group", "aria-label": `Neurons on ${node}` });
    const el = h("section", { class: "node", "data-node": node }, h("h2", { class: "node-head" }, toggle), grid);
    toggle.addEventListener("click", () => setCollapsed(node, toggle.getAttribute("aria-expanded") === "true"));
    // ``names``: the group's gauges in order, so that one is placed without reading the DOM
    const group = { node, el, grid, toggle, names: [], parts: { count, bar, tps, label } };
    state.groups.set(node, group);
    if (state.collapsed.has(node)) applyCollapsed(group, true);
    const after = [...state.groups.keys()].filter((other) => byName(other, node) > 0).sort(byName)[0];
    $("nodes").insertBefore(el, after ? state.groups.get(after).el : null);
    return group;
  }

  function applyCollapsed(group, collapsed) {
    group.toggle.setAttribute("aria-expanded", String(!collapsed));
    group.grid.hidden = collapsed;
  }

  function setCollapsed(node, collapsed) {
    const group = state.groups.get(node);
    if (!group) return;
    applyCollapsed(group, collapsed);
    if (collapsed) state.collapsed.add(node);
    else state.collapsed.delete(node);
    localStorage.setItem(COLLAPSED_STORE, JSON.stringify([...state.collapsed]));
    updateCollapseAll();
  }

  function updateCollapseAll() {
    const anyOpen = [...state.groups.values()].some((g) => g.toggle.getAttribute("aria-expanded") === "true");
    $("collapse-all").textContent = anyOpen ? "Collapse all" : "Expand all";
  }

  function drawGroup(node) {
    const group = state.groups.get(node);
    if (!group) return;
    const views = [...state.neurons.values()].filter((v) => v.node === node);
    if (!views.length) {
      group.el.remove();
      state.groups.delete(node);
      return;
    }
    const counts = Object.fromEntries(ORDER.map((status) => [status, 0]));
    let throughput = 0;
    for (const view of views) {
      counts[view.status] = (counts[view.status] || 0) + 1;
      if (view.is_active) throughput += view.tokens_per_second || 0;
    }
    const problems = ORDER.filter((st) => st !== "active" && counts[st]).map((st) => `${counts[st]} ${st}`);
    const shown = state.filter ? views.filter(matches).length : views.length;
    const total = shown === views.length ? plural(views.length, "neuron") : `${shown} of ${plural(views.length, "neuron")}`;
    // Only what changed is written: a thousand gauges' group is redrawn on every update.
    setText(group.parts.count, total + (problems.length ? ` · ${problems.join(" · ")}` : ""));
    setText(group.parts.label, `, ${counts.active} active`);
    const shares = ORDER.filter((st) => counts[st]).map((st) => [st, (100 * counts[st]) / views.length]);
    const bar = JSON.stringify(shares);
    if (group.parts.bar.dataset.shares !== bar) {
      group.parts.bar.dataset.shares = bar;
      group.parts.bar.replaceChildren(...shares.map(([st, width]) => h("span", { class: st, style: `width:${width}%` })));
    }
    const tps = fmt(throughput);
    if (group.parts.tps.dataset.value !== tps) {
      group.parts.tps.dataset.value = tps;
      group.parts.tps.replaceChildren(h("strong", { text: tps }), " tok/s");
    }
    const hidden = state.filter !== "" && !views.some(matches);
    if (group.el.hidden !== hidden) group.el.hidden = hidden;
    const wide = String(views.length >= WIDE_FROM);
    if (group.el.dataset.wide !== wide) group.el.dataset.wide = wide;
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function placeCard(card, view) {
    const group = state.groups.get(view.node) || makeGroup(view.node);
    if (card.group === group) return;
    const old = card.group;
    unplace(card);
    const names = group.names;
    let low = 0, high = names.length; // a binary search: a snapshot places a thousand
    while (low < high) {
      const middle = (low + high) >> 1;
      if (byName(names[middle], view.name) < 0) low = middle + 1;
      else high = middle;
    }
    names.splice(low, 0, view.name);
    const next = low + 1 < names.length ? state.cards.get(names[low + 1]) : null;
    group.grid.insertBefore(card.el, next ? next.el : null);
    card.group = group;
    if (old && old !== group) drawGroup(old.node);
  }

  function unplace(card) {
    if (!card.group) return;
    const names = card.group.names;
    const at = names.indexOf(card.el.dataset.neuron);
    if (at >= 0) names.splice(at, 1);
    card.el.remove();
    card.group = null;
  }

  // ---- density

  function applyDensity() {
    const compact = state.density === "compact" || (state.density === "auto" && state.neurons.size > COMPACT_FROM);
    const mode = compact ? "compact" : "comfortable";
    if (document.body.dataset.density === mode) return;
    document.body.dataset.density = mode;
    for (const button of document.querySelectorAll(".segmented button")) {
      button.setAttribute("aria-pressed", String(button.dataset.density === mode));
    }
  }

  function setupDensity() {
    for (const button of document.querySelectorAll(".segmented button")) {
      button.addEventListener("click", () => {
        state.density = button.dataset.density;
        localStorage.setItem(DENSITY_STORE, state.density);
        applyDensity();
      });
    }
  }

  // ---- filtering

  function matches(view) {
    if (!state.filter) return true;
    const haystack = [view.name, view.node, view.status, view.api, ...view.models].join(" ").toLowerCase();
    return state.filter.split(/\s+/).every((word) => haystack.includes(word));
  }

  // ---- applying changes, once per frame

  function schedule(name) {
    if (name) state.dirty.add(name);
    else state.all = true;
    if (state.frame) return;
    const wait = state.flushedAt + FLUSH_MS - performance.now();
    state.frame = wait > 0 ? setTimeout(() => requestAnimationFrame(flush), wait) : requestAnimationFrame(flush);
  }

  function flush() {
    state.frame = 0;
    state.flushedAt = performance.now();
    state.flushes += 1;
    const scale = fleetScale();
    if (scale !== state.scale) {
      state.scale = scale;
      state.all = true;
    }
    const names = state.all ? new Set([...state.neurons.keys(), ...state.cards.keys()]) : state.dirty;
    const nodes = new Set();
    for (const name of names) {
      const view = state.neurons.get(name);
      let card = state.cards.get(name);
      if (card?.group) nodes.add(card.group.node);
      if (!view) {
        if (card) unplace(card);
        state.cards.delete(name);
        continue;
      }
      if (!card) {
        card = makeCard(name);
        state.cards.set(name, card);
      }
      placeCard(card, view);
      drawCard(card, view);
      nodes.add(view.node);
    }
    state.dirty.clear();
    state.all = false;
    for (const node of nodes) if (node) drawGroup(node);
    drawSummary();
    applyDensity();
    updateCollapseAll();
    if (state.drawer && names.has(state.drawer)) drawDrawer();
  }

  function drawSummary() {
    const views = [...state.neurons.values()];
    const serving = views.filter((v) => v.is_active);
    let fastest = null;
    for (const view of serving) {
      if (view.tokens_per_second != null && (!fastest || view.tokens_per_second > fastest.tokens_per_second)) fastest = view;
    }
    $("stat-neurons").textContent = views.length;
    $("stat-serving").textContent = `${serving.length} / ${views.length}`;
    $("stat-throughput").textContent = fmt(serving.reduce((sum, v) => sum + (v.tokens_per_second || 0), 0));
    $("stat-inflight").textContent = views.reduce((sum, v) => sum + v.in_flight, 0);
    $("stat-fastest").textContent = fastest ? `${fmt(fastest.tokens_per_second)} · ${fastest.name}` : "–";
    $("stat-scale").textContent = `0–${state.scale}`;
    $("empty").hidden = views.length > 0;
    const visible = views.filter(matches).length;
    $("notice").hidden = !state.filter || visible > 0;
    $("notice").textContent = `No neuron matches "${state.filter}".`;
  }

  // ---- the event stream
  //
  // Read with fetch() rather than EventSource so that an API key travels in the
  // Authorization header, never in a URL (URLs end up in logs and browser history).
  // Reconnects by itself, after the server's "retry:" delay, growing while it fails;
  // a stream silent for longer than two keep-alives is treated as dead.

  function setLive(mode, text) {
    $("live").dataset.state = mode;
    document.body.dataset.connection = mode; // dims the gauges while they may be stale
    $("live-text").textContent = text;
  }

  function on(kind, handler) {
    state.handlers.set(kind, [...(state.handlers.get(kind) || []), handler]);
  }

  on("snapshot", (data) => {
    state.neurons = new Map(data.neurons.map((view) => [view.name, view]));
    schedule(null);
  });
  on("neuron", (view) => {
    const before = state.neurons.get(view.name);
    state.neurons.set(view.name, view);
    schedule(view.name);
    if (before && before.node !== view.node) drawGroup(before.node);
  });
  on("removed", (data) => {
    state.neurons.delete(data.name);
    schedule(data.name);
    if (state.drawer === data.name) closeDrawer();
  });

  function authHeaders() {
    return state.key ? { Authorization: `Bearer ${state.key}` } : {};
  }

  function api(path) {
    return fetch(path, { headers: authHeaders(), cache: "no-store" });
  }

  async function connect() {
    if (state.stream) state.stream.abort();
    const stream = new AbortController();
    state.stream = stream;
    try {
      const response = await fetch("/fleet/events", {
        headers: { Accept: "text/event-stream", ...authHeaders() },
        cache: "no-store",
        signal: stream.signal,
      });
      if (response.status === 401 || response.status === 403) {
        askForKey(state.key ? "That key was refused: paste a valid one." : null);
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      state.failures = 0;
      setLive("live", "Live");
      await readEvents(response.body);
    } catch {
      // The gateway went away or the stream broke: reconnect below.
    }
    if (state.stream !== stream) return; // a newer connection replaced this one
    state.failures = (state.failures || 0) + 1;
    setLive("reconnecting", "Reconnecting…");
    setTimeout(connect, Math.min(state.retryMs * state.failures, MAX_RETRY_MS));
  }

  async function readEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      state.heardAt = Date.now();
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
  }

  function dispatch(block) {
    let kind = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue; // a comment: the keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") kind = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) state.retryMs = Number(value);
    }
    if (data.length) emit(kind, JSON.parse(data.join("\n")));
  }

  function emit(kind, payload) {
    for (const handler of state.handlers.get(kind) || []) handler(payload);
  }

  function watchdog() {
    if (state.stream && Date.now() - state.heardAt > SILENCE_MS) {
      state.heardAt = Date.now();
      state.stream.abort(); // connect() notices and reconnects
    }
  }

  // ---- the API key

  function askForKey(message) {
    setLive("locked", "Key needed");
    const dialog = $("key-dialog");
    dialog.querySelector("p").textContent = message || "This gateway requires an API key. It is kept in this browser only.";
    $("key-input").value = "";
    if (!dialog.open) dialog.showModal();
  }

  function setupKey() {
    $("key-button").addEventListener("click", () => askForKey(state.key ? "Replace the key this browser uses." : null));
    $("key-form").addEventListener("submit", () => {
      const key = $("key-input").value.trim();
      if (!key) return;
      state.key = key;
      localStorage.setItem(KEY_STORE, key);
      setLive("connecting", "Connecting…");
      connect();
    });
    $("key-forget").addEventListener("click", () => {
      state.key = "";
      localStorage.removeItem(KEY_STORE);
      $("key-dialog").close();
      connect();
    });
  }

  // ---- tooltip (hover and focus)

  function showTooltip(card) {
    const view = state.neurons.get(card.dataset.neuron);
    if (!view) return;
    const rows = [
      ["Node", view.node],
      ["Endpoint", `${view.url} (${view.api})`],
      ["Models", view.models.join(", ") || "none"],
      [view.is_active ? "Speed" : "Last speed", view.tokens_per_second == null ? "not measured yet" : `${fmt(view.tokens_per_second)} tok/s`],
      ["Own best", view.best_tokens_per_second == null ? "–" : `${fmt(view.best_tokens_per_second)} tok/s`],
      ["In flight", String(view.in_flight)],
    ];
    const facts = h("dl");
    for (const [term, value] of rows) facts.append(h("dt", { text: term }), h("dd", { text: value }));
    placeTooltip(
      card,
      view.name,
      h("div", { class: "tt-name" }, view.name, h("span", { class: `pill ${view.status}`, text: WORDS[view.status] })),
      facts,
      view.reason ? h("div", { class: `tt-reason ${view.status}`, text: view.reason }) : null,
      view.idle_gpu && view.idle_gpu !== view.reason
        ? h("div", { class: "tt-reason degraded", text: view.idle_gpu })
        : null,
      h("div", { class: "tt-hint", text: "Enter or click for history and errors" }),
    );
  }

  // Shows the tooltip next to ``anchor`` (below it, or above when there is no room);
  // ``key`` says what it is about, so hovering the same thing again does not redraw it.
  function placeTooltip(anchor, key, ...children) {
    const tip = $("tooltip");
    tip.replaceChildren(...children.filter((child) => child != null));
    tip.hidden = false;
    const box = anchor.getBoundingClientRect();
    const width = tip.offsetWidth, height = tip.offsetHeight;
    let left = Math.min(Math.max(8, box.left), window.innerWidth - width - 8);
    let top = box.bottom + 8;
    if (top + height > window.innerHeight - 8) top = Math.max(8, box.top - height - 8);
    tip.style.left = `${left}px`;
    tip.style.top = `${top}px`;
    tip.dataset.for = key;
  }

  function hideTooltip() {
    $("tooltip").hidden = true;
    $("tooltip").dataset.for = "";
  }

  // ---- keyboard and pointer on the minimap

  function visibleGauges() {
    return [...document.querySelectorAll(".gauge")].filter((el) => el.offsetParent !== null);
  }

  function setupMinimap() {
    const nodes = $("nodes");
    nodes.addEventListener("mouseover", (event) => {
      const card = event.target.closest(".gauge");
      if (card && $("tooltip").dataset.for !== card.dataset.neuron) showTooltip(card);
      if (!card) hideTooltip();
    });
    nodes.addEventListener("mouseleave", () => {
      hideTooltip();
      $("tooltip").dataset.for = "";
    });
    nodes.addEventListener("focusin", (event) => {
      const card = event.target.closest(".gauge");
      if (card) showTooltip(card);
    });
    nodes.addEventListener("focusout", () => {
      hideTooltip();
      $("tooltip").dataset.for = "";
    });
    nodes.addEventListener("click", (event) => {
      const card = event.target.closest(".gauge");
      if (card) openDrawer(card.dataset.neuron, card);
    });
    nodes.addEventListener("keydown", (event) => {
      const card = event.target.closest(".gauge");
      if (!card) return;
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        openDrawer(card.dataset.neuron, card);
        return;
      }
      if (event.key === "Escape") {
        hideTooltip();
        return;
      }
      const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
      const gauges = visibleGauges();
      const at = gauges.indexOf(card);
      let next = null;
      if (step) next = gauges[at + step];
      if (event.key === "Home") next = gauges[0];
      if (event.key === "End") next = gauges[gauges.length - 1];
      if (next) {
        event.preventDefault();
        next.focus();
      }
    });
    $("filter").addEventListener("input", (event) => {
      state.filter = event.target.value.trim().toLowerCase();
      schedule(null);
      for (const node of state.groups.keys()) drawGroup(node);
    });
    $("collapse-all").addEventListener("click", () => {
      const collapse = $("collapse-all").textContent.startsWith("Collapse");
      for (const node of [...state.groups.keys()]) setCollapsed(node, collapse);
    });
  }

  // ---- the detail drawer

  function openDrawer(name, from) {
    if (state.drawer) closeDrawer(false);
    state.drawer = name;
    state.drawerFrom = from || null;
    if (from) from.setAttribute("aria-expanded", "true");
    hideTooltip();
    $("drawer").hidden = false;
    state.historyAt = 0;
    drawDrawer();
    state.historyTimer = setInterval(loadHistory, HISTORY_REFRESH_MS);
    $("drawer-close").focus();
  }

  function closeDrawer(restoreFocus = true) {
    clearInterval(state.historyTimer);
    $("drawer").hidden = true;
    const from = state.drawerFrom;
    state.drawer = null;
    state.drawerFrom = null;
    if (from) {
      from.setAttribute("aria-expanded", "false");
      if (restoreFocus && from.isConnected) from.focus();
    }
  }

  function drawDrawer() {
    const view = state.neurons.get(state.drawer);
    if (!view) return;
    $("drawer-title").textContent = view.name;
    $("drawer-sub").textContent = `${view.node} · ${view.api} · ${view.url}`;
    const pill = $("drawer-pill");
    pill.className = `pill ${view.status}`;
    pill.textContent = WORDS[view.status] || view.status;
    $("drawer-reason").textContent = view.reason || "";
    $("fact-now").textContent = view.tokens_per_second == null ? "–" : `${fmt(view.tokens_per_second)} tok/s`;
    $("fact-best").textContent = view.best_tokens_per_second == null ? "–" : `${fmt(view.best_tokens_per_second)} tok/s`;
    $("fact-busy").textContent = view.slots ? `${view.in_flight} / ${view.slots}` : String(view.in_flight);
    $("fact-seen").textContent = ago(view.last_seen);
    // Live changes refresh the history too, at most once a second.
    if (Date.now() - state.historyAt > 1000) loadHistory();
  }

  async function loadHistory() {
    const name = state.drawer;
    if (!name) return;
    state.historyAt = Date.now();
    let history;
    try {
      const response = await api(`/fleet/neurons/${encodeURIComponent(name)}/history`);
      if (!response.ok) return;
      history = await response.json();
    } catch {
      return;
    }
    if (state.drawer !== name) return;
    drawSparkline(history.samples);
    drawModels(history.models, history.loaded);
    drawLog($("drawer-errors"), history.errors.slice(-12).reverse(), (e) => e.reason, "No errors recorded.");
    drawLog(
      $("drawer-changes"),
      history.changes.slice(-12).reverse(),
      (c) => `${WORDS[c.status] || c.status}${c.reason ? ` — ${c.reason}` : ""}`,
      "No status changes since the gateway started.",
    );
  }

  function drawSparkline(samples) {
    const box = $("spark");
    if (samples.length < 2) {
      box.replaceChildren(
        h("p", {
          class: "spark-empty",
          text: samples.length
            ? `One sample so far: ${fmt(samples[0].tokens_per_second)} tok/s.`
            : "No speed samples yet: they come from real traffic and from ganglion bench.",
        }),
      );
      return;
    }
    const values = samples.map((sample) => sample.tokens_per_second);
    const top = niceCeiling(Math.max(...values));
    const width = 300, height = 80;
    const xs = values.map((_, i) => (i / (values.length - 1)) * width);
    const ys = values.map((v) => height - 4 - (v / top) * (height - 8));
    const line = xs.map((x, i) => `${i ? "L" : "M"}${x.toFixed(1)} ${ys[i].toFixed(1)}`).join(" ");
    const svg = s(
      "svg",
      { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": `Speed history: ${values.length} samples, last ${fmt(values.at(-1))} tok/s` },
      s("line", { class: "grid-line", x1: 0, x2: width, y1: 4, y2: 4 }),
      s("line", { class: "grid-line", x1: 0, x2: width, y1: height / 2, y2: height / 2 }),
      s("path", { class: "area", d: `${line} L${width} ${height} L0 ${height} Z` }),
      s("path", { class: "line", d: line }),
    );
    const caption = h(
      "div",
      { class: "spark-caption" },
      h("span", { text: `${values.length} samples since ${clock(samples[0].at)}` }),
      h("span", { text: `min ${fmt(Math.min(...values))} · max ${fmt(Math.max(...values))} · last ${fmt(values.at(-1))} tok/s` }),
    );
    const frame = h("div", { class: "spark-frame" }, svg, h("span", { class: "spark-top", text: `${top} tok/s` }));
    box.replaceChildren(frame, caption);
  }

  function drawModels(models, loaded) {
    const inMemory = new Set(loaded || []);
    const items = models.map((model) =>
      h("li", { class: inMemory.has(model) ? "loaded" : "" }, model, inMemory.has(model) ? h("span", { class: "tag", text: "loaded" }) : null),
    );
    for (const model of inMemory) {
      if (!models.includes(model)) items.push(h("li", { class: "loaded" }, model, h("span", { class: "tag", text: "loaded" })));
    }
    if (!items.length) items.push(h("li", { text: "none reported" }));
    $("drawer-models").replaceChildren(...items);
  }

  function drawLog(list, entries, text, empty) {
    if (!entries.length) {
      list.replaceChildren(h("li", { class: "empty-row", text: empty }));
      return;
    }
    list.replaceChildren(
      ...entries.map((entry) =>
        h("li", {}, h("time", { datetime: entry.at, title: new Date(entry.at).toLocaleString(), text: clock(entry.at) }), h("span", { class: "what", text: text(entry) })),
      ),
    );
  }

  function setupDrawer() {
    $("drawer-close").addEventListener("click", () => closeDrawer());
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && state.drawer && !$("key-dialog").open) closeDrawer();
    });
  }

  // ---- what the runs view (runs.js) uses

  window.synapse = {
    on,
    emit, // hands handlers an event as if the stream had sent it
    flushes: () => state.flushes,
    api,
    h,
    s,
    fmt,
    plural,
    ago,
    clock,
    neuron: (name) => state.neurons.get(name),
    tooltip: { show: placeTooltip, hide: hideTooltip, about: () => $("tooltip").dataset.for || "" },
  };

  // ---- start

  hatchDefs();
  setupKey();
  setupMinimap();
  setupDrawer();
  setupDensity();
  applyDensity();
  state.scale = fleetScale();
  drawSummary();
  connect();
  setInterval(watchdog, 5000);
  // Keep "last seen" fresh while the drawer is open.
  setInterval(() => {
    if (state.drawer) $("fact-seen").textContent = ago(state.neurons.get(state.drawer)?.last_seen);
  }, 1000);
})();
