// bigquant view: a canvas viewer over the server's Deep Zoom tiles, its palette beside it.
// No library: a few hundred lines that pan and zoom, draw tiles 1:1 without smoothing, and
// ask the server (bigquant/view.py) for highlighted and source tiles and for pixel labels.
"use strict";

(async function main() {
  const info = await (await fetch("info.json")).json();
  const view = document.getElementById("view");
  const canvas = document.getElementById("canvas");
  const ctx = canvas.getContext("2d");
  const message = document.getElementById("message");
  const T = info.tile_size, O = info.overlap, TOP = info.top;
  // The view: image pixel (cx, cy) at the canvas centre, `scale` screen pixels per image pixel.
  const state = { scale: 1, cx: info.width / 2, cy: info.height / 2, highlight: null, source: false };
  const tiles = new Map(); // url -> {img, ready}, oldest first
  const MAX_TILES = 800;
  let anim = null; // a zoom under way: {scale, px, py, ix, iy}
  let width = 0, height = 0;

  // -- Tiles -----------------------------------------------------------------------------
  function levelSize(level) {
    const f = 2 ** (TOP - level);
    return [Math.ceil(info.width / f), Math.ceil(info.height / f)];
  }
  // The coarsest level whose pixels are no larger than a screen pixel.
  function levelFor(scale) {
    return Math.max(0, TOP - Math.max(0, Math.floor(Math.log2(1 / scale) + 1e-9)));
  }
  function url(level, c, r) {
    if (state.source) return `source/${level}/${c}_${r}.png`;
    if (state.highlight !== null) return `highlight/${state.highlight}/${level}/${c}_${r}.png`;
    return `tile/${level}/${c}_${r}.png`;
  }
  function tile(u, request) {
    let t = tiles.get(u);
    if (t) {
      tiles.delete(u);
      tiles.set(u, t);
      return t;
    }
    if (!request) return null;
    t = { img: new Image(), ready: false };
    t.img.onload = () => { t.ready = true; schedule(); };
    // A level still being made (503) or a dropped request: asked again on a later draw.
    t.img.onerror = () => { setTimeout(() => { tiles.delete(u); schedule(); }, 500); };
    t.img.src = u;
    tiles.set(u, t);
    while (tiles.size > MAX_TILES) tiles.delete(tiles.keys().next().value);
    return t;
  }
  // Tiles of `level` over the canvas, each with the image rectangle its picture covers.
  function visible(level) {
    const f = 2 ** (TOP - level);
    const [w, h] = levelSize(level);
    const x0 = (state.cx - width / 2 / state.scale) / f, x1 = (state.cx + width / 2 / state.scale) / f;
    const y0 = (state.cy - height / 2 / state.scale) / f, y1 = (state.cy + height / 2 / state.scale) / f;
    const out = [];
    const c0 = Math.max(0, Math.floor(x0 / T)), c1 = Math.min(Math.ceil(w / T) - 1, Math.floor(x1 / T));
    const r0 = Math.max(0, Math.floor(y0 / T)), r1 = Math.min(Math.ceil(h / T) - 1, Math.floor(y1 / T));
    for (let r = r0; r <= r1; r++) {
      for (let c = c0; c <= c1; c++) {
        out.push({ c, r, x: (c ? c * T - O : 0) * f, y: (r ? r * T - O : 0) * f, f });
      }
    }
    return out;
  }

  // -- Drawing ---------------------------------------------------------------------------
  let queued = false;
  function schedule() {
    // Not complete until the frame drawn next says so: a change is never reported done early.
    if (window.bigquant) window.bigquant.complete = false;
    if (!queued) { queued = true; requestAnimationFrame(frame); }
  }
  function frame() {
    queued = false;
    if (anim) step();
    draw();
  }
  function draw() {
    const dpr = window.devicePixelRatio || 1;
    width = view.clientWidth; height = view.clientHeight;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, width, height);
    let level = levelFor(state.scale);
    const tooCoarse = state.source && level < info.source.min_level;
    const source = state.source;
    if (tooCoarse) state.source = false; // the quantized tiles meanwhile, and a word why
    // Coarser tiles already loaded first, as a stand-in while the finer ones come.
    let complete = true;
    for (let l = Math.max(0, level - 4); l <= level; l++) {
      for (const v of visible(l)) {
        const t = tile(url(l, v.c, v.r), l === level);
        if (t && t.ready) {
          paint(t.img, v);
        } else {
          if (l === level) complete = false;
          // Highlighted or source tiles on their way: the plain tile stands in, if loaded.
          const plain = tile(`tile/${l}/${v.c}_${v.r}.png`, false);
          if (plain && plain.ready) paint(plain.img, v);
        }
      }
    }
    state.source = source;
    message.hidden = !tooCoarse && complete;
    message.textContent = tooCoarse
      ? "Zoom in to see the source image: at this scale a tile would read too much of it."
      : "Loading tiles…";
    window.bigquant.complete = complete && !anim;
    window.bigquant.level = level;
  }
  function paint(img, v) {
    const s = state.scale * v.f;
    let x = (v.x - state.cx) * state.scale + width / 2;
    let y = (v.y - state.cy) * state.scale + height / 2;
    // 1:1 and coarser-than-screen tiles land on whole pixels, unsmoothed: crisp, exact colours.
    ctx.imageSmoothingEnabled = s < 1;
    if (s >= 1) { x = Math.round(x); y = Math.round(y); }
    ctx.drawImage(img, x, y, img.width * s, img.height * s);
  }

  // -- Pan and zoom ----------------------------------------------------------------------
  function fit() {
    width = view.clientWidth; height = view.clientHeight;
    return Math.min(width / info.width, height / info.height);
  }
  function limits(scale) {
    return Math.min(64, Math.max(fit() / 2, scale));
  }
  function zoomAt(factor, px, py) {
    const base = anim ? anim.scale : state.scale;
    anim = {
      scale: limits(base * factor), px, py,
      ix: state.cx + (px - width / 2) / state.scale, iy: state.cy + (py - height / 2) / state.scale,
    };
    schedule();
  }
  function step() {
    // Eased in log scale, the image point under the cursor kept there.
    const a = Math.log(state.scale), b = Math.log(anim.scale);
    state.scale = Math.abs(b - a) < 0.01 ? anim.scale : Math.exp(a + (b - a) * 0.3);
    state.cx = anim.ix - (anim.px - width / 2) / state.scale;
    state.cy = anim.iy - (anim.py - height / 2) / state.scale;
    if (state.scale === anim.scale) anim = null;
    else schedule();
  }
  function goto(cx, cy, scale) {
    anim = null;
    Object.assign(state, { cx, cy, scale });
    schedule();
  }

  view.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = view.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * (e.deltaMode ? 0.05 : 0.002)), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  let drag = null;
  view.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY };
    view.setPointerCapture(e.pointerId);
    view.classList.add("dragging");
  });
  view.addEventListener("pointerup", (e) => {
    drag = null;
    view.releasePointerCapture(e.pointerId);
    view.classList.remove("dragging");
  });
  view.addEventListener("pointermove", (e) => {
    if (drag) {
      anim = null;
      state.cx -= (e.clientX - drag.x) / state.scale;
      state.cy -= (e.clientY - drag.y) / state.scale;
      drag = { x: e.clientX, y: e.clientY };
      schedule();
      return;
    }
    const r = view.getBoundingClientRect();
    hover(Math.floor(state.cx + (e.clientX - r.left - width / 2) / state.scale),
          Math.floor(state.cy + (e.clientY - r.top - height / 2) / state.scale));
  });
  view.addEventListener("dblclick", (e) => {
    const r = view.getBoundingClientRect();
    zoomAt(e.shiftKey ? 0.5 : 2, e.clientX - r.left, e.clientY - r.top);
  });
  view.addEventListener("keydown", (e) => {
    const pan = 100 / state.scale;
    const keys = {
      "+": () => zoomAt(2, width / 2, height / 2), "=": () => zoomAt(2, width / 2, height / 2),
      "-": () => zoomAt(0.5, width / 2, height / 2),
      "0": () => goto(info.width / 2, info.height / 2, fit()),
      ArrowLeft: () => goto(state.cx - pan, state.cy, state.scale),
      ArrowRight: () => goto(state.cx + pan, state.cy, state.scale),
      ArrowUp: () => goto(state.cx, state.cy - pan, state.scale),
      ArrowDown: () => goto(state.cx, state.cy + pan, state.scale),
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  });
  window.addEventListener("resize", schedule);

  // -- Palette, hover, source ------------------------------------------------------------
  const palette = info.palette;
  const total = palette.reduce((n, p) => n + (p.count || 0), 0);
  const list = document.getElementById("palette");
  const order = palette.slice().sort((a, b) => (b.count || 0) - (a.count || 0) || a.label - b.label);
  function share(p) {
    return p.count === null ? "" : `${(100 * p.count / (total || 1)).toFixed(p.count / total < 0.001 ? 3 : 1)} %`;
  }
  for (const p of order) {
    const li = document.createElement("li");
    li.dataset.label = p.label;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = p.alpha ? p.hex : "repeating-conic-gradient(#777 0 25%, #333 0 50%) 0 0 / 8px 8px";
    const name = document.createElement("span");
    name.textContent = `${p.label} ${p.nodata ? "nodata" : p.hex}`;
    const part = document.createElement("span");
    part.className = "share";
    part.textContent = share(p);
    li.append(swatch, name, part);
    li.title = p.count === null ? "" : `${p.count.toLocaleString()} pixels`;
    li.addEventListener("click", () => {
      state.highlight = state.highlight === p.label ? null : p.label;
      for (const other of list.children) other.classList.toggle("selected", Number(other.dataset.label) === state.highlight);
      schedule();
    });
    list.append(li);
  }
  const source = document.getElementById("source");
  const note = document.getElementById("source-note");
  source.disabled = !info.source.available;
  note.textContent = info.source.note || (info.source.path ? `source: ${info.source.path}` : "");
  source.addEventListener("change", () => { state.source = source.checked; schedule(); });
  document.getElementById("title").textContent = info.store.split("/").filter(Boolean).pop();
  document.getElementById("summary").textContent =
    `${info.width.toLocaleString()} × ${info.height.toLocaleString()} pixels, ` +
    `${palette.length} colours${info.counts_from === "counted" ? " (shares counted now: the store records none)" : ""}`;

  const out = document.getElementById("hover");
  let asking = false, wanted = null;
  function hover(x, y) {
    if (x < 0 || y < 0 || x >= info.width || y >= info.height) return;
    wanted = [x, y];
    if (!asking) ask();
  }
  async function ask() {
    asking = true;
    while (wanted) {
      const [x, y] = wanted;
      wanted = null;
      try {
        const p = await (await fetch(`pixel/${x}/${y}.json`)).json();
        const entry = palette[p.label];
        out.textContent = `x ${p.x}, y ${p.y}: label ${p.label}, ${entry.nodata ? "nodata" : entry.hex}` +
          (entry.count === null ? "" : ` (${share(entry)} of pixels)`) +
          (p.source ? `; source ${p.source.map((v) => (v === null ? "NaN" : Math.round(v * 1000) / 1000)).join(", ")}` : "");
        out.dataset.label = p.label;
      } catch (err) {
        out.textContent = `x ${x}, y ${y}: ${err}`;
      }
    }
    asking = false;
  }

  // For scripts and tests: the view, and whether every tile of it is drawn.
  window.bigquant = { info, state, goto, complete: false, level: TOP };
  const s = fit();
  goto(info.width / 2, info.height / 2, s);
})();
