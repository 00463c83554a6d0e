/* kubectl offwake: interactive chain flame graph (click to zoom, reset, search).
 *
 * Shared by the standalone SVG and the HTML report; fetches nothing. The SVG carries the
 * geometry in data attributes (written by render/svg.py):
 *   <svg data-total="µs" data-pad="px" data-fw="frame area width px" data-charw="px per char">
 *   <g class="fr" data-x="µs offset" data-w="µs width" data-d="depth"><title>name\n...</title>
 *      <rect/><text/></g>
 * Usage: offwakeFlame(svgElement, {matched: el, details: el, unzoom: el}) -> controller.
 * Frame names come from the traced node: they are read from <title> text (already escaped
 * and neutralized by the renderer) and only ever written back as textContent or attribute
 * values, never parsed as markup.
 */
(function () {
  "use strict";

  function fitText(name, width, charw) {
    if (width < 3 * charw) { return ""; }
    var n = Math.floor((width - 6) / charw);
    if (name.length <= n) { return name; }
    if (n < 3) { return ""; }
    return name.slice(0, n - 2) + "..";
  }

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  function formatUs(us) {
    if (us >= 1000000) { return (us / 1000000).toFixed(2) + " s"; }
    if (us >= 1000) { return (us / 1000).toFixed(1) + " ms"; }
    return Math.round(us) + " \u00b5s";
  }

  function show(el, visible) {
    if (el) { el.style.display = visible ? "" : "none"; }
  }

  function offwakeFlame(svg, opts) {
    opts = opts || {};
    var total = Number(svg.getAttribute("data-total")) || 0;
    var pad = Number(svg.getAttribute("data-pad")) || 0;
    var fw = Number(svg.getAttribute("data-fw")) || 0;
    var charw = Number(svg.getAttribute("data-charw")) || 7;
    var nodes = svg.querySelectorAll("g.fr");
    var frames = [];
    var i;
    for (i = 0; i < nodes.length; i++) {
      var g = nodes[i];
      var title = g.querySelector("title");
      var text = title ? title.textContent : "";
      frames.push({
        g: g,
        rect: g.querySelector("rect"),
        label: g.querySelector("text"),
        name: text.split("\n")[0],
        info: text.replace(/\n/g, " \u2014 "),
        x: Number(g.getAttribute("data-x")),
        w: Number(g.getAttribute("data-w")),
        d: Number(g.getAttribute("data-d"))
      });
      g.__offwake = frames[frames.length - 1];
    }

    function place(f, left, scale) {
      var x = pad + (f.x - left) * scale;
      var w = f.w * scale;
      f.rect.setAttribute("x", x.toFixed(2));
      f.rect.setAttribute("width", Math.max(w - 0.5, 0.1).toFixed(2));
      if (f.label) {
        f.label.setAttribute("x", (x + 3).toFixed(2));
        f.label.textContent = fitText(f.name, w, charw);
      }
    }

    var zoomed = null;

    function reset() {
      var scale = total > 0 ? fw / total : 0;
      for (var k = 0; k < frames.length; k++) {
        var f = frames[k];
        f.g.classList.remove("parent");
        show(f.g, true);
        place(f, 0, scale);
      }
      zoomed = null;
      show(opts.unzoom, false);
      svg.setAttribute("data-zoomed", "");
    }

    function zoom(z) {
      if (!z || z.d === 0 || z.w <= 0) { reset(); return; }
      var scale = fw / z.w;
      for (var k = 0; k < frames.length; k++) {
        var f = frames[k];
        if (f.d < z.d && f.x <= z.x && f.x + f.w >= z.x + z.w) {
          f.g.classList.add("parent");
          show(f.g, true);
          place(f, f.x, fw / f.w);
        } else if (f.d >= z.d && f.x >= z.x && f.x < z.x + z.w) {
          f.g.classList.remove("parent");
          show(f.g, true);
          place(f, z.x, scale);
        } else {
          f.g.classList.remove("parent");
          show(f.g, false);
        }
      }
      zoomed = z;
      show(opts.unzoom, true);
      svg.setAttribute("data-zoomed", z.name);
    }

    function clearSearch() {
      for (var k = 0; k < frames.length; k++) { frames[k].g.classList.remove("hl"); }
      if (opts.matched) { opts.matched.textContent = ""; }
      svg.setAttribute("data-matches", "0");
      svg.removeAttribute("data-search");
    }

    function search(term) {
      clearSearch();
      if (!term) { return 0; }
      var re;
      try {
        re = new RegExp(term, "i");
      } catch (err) {
        re = new RegExp(escapeRegExp(term), "i");
      }
      var spans = [];
      var count = 0;
      for (var k = 0; k < frames.length; k++) {
        var f = frames[k];
        if (f.d > 0 && re.test(f.name)) {
          f.g.classList.add("hl");
          spans.push([f.x, f.x + f.w]);
          count++;
        }
      }
      // The matched share counts each µs once, however many matched frames stack on it.
      spans.sort(function (a, b) { return a[0] - b[0] || a[1] - b[1]; });
      var sum = 0, end = -1;
      for (k = 0; k < spans.length; k++) {
        var s = spans[k][0], e = spans[k][1];
        if (e <= end) { continue; }
        sum += e - Math.max(s, end);
        end = e;
      }
      var share = total > 0 ? (100 * sum / total) : 0;
      if (opts.matched) {
        opts.matched.textContent = "Matched: " + share.toFixed(1) + "% (" + formatUs(sum) +
          ", " + count + " frames)";
      }
      svg.setAttribute("data-matches", String(count));
      svg.setAttribute("data-search", term);
      return count;
    }

    svg.addEventListener("click", function (ev) {
      var g = ev.target && ev.target.closest ? ev.target.closest("g.fr") : null;
      if (g && g.__offwake) { zoom(g.__offwake); }
    });
    svg.addEventListener("mouseover", function (ev) {
      var g = ev.target && ev.target.closest ? ev.target.closest("g.fr") : null;
      if (g && g.__offwake && opts.details) { opts.details.textContent = g.__offwake.info; }
    });
    svg.addEventListener("mouseout", function () {
      if (opts.details) { opts.details.textContent = " "; }
    });
    if (opts.unzoom) { opts.unzoom.addEventListener("click", function (ev) { ev.stopPropagation(); reset(); }); }

    reset();
    return {
      zoom: function (g) { zoom(g && g.__offwake); },
      reset: reset,
      search: search,
      clearSearch: clearSearch,
      zoomed: function () { return zoomed ? zoomed.name : null; }
    };
  }

  window.offwakeFlame = offwakeFlame;
})();
