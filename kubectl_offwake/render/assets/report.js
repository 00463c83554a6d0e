/* kubectl offwake HTML report: wires the page's controls to the flame graph (flamegraph.js). */
(function () {
  var el = function (id) { return document.getElementById(id); };
  var flame = window.offwakeFlame(el("fg-svg"), {matched: el("fg-matched"),
                                                 details: el("fg-details"), unzoom: el("fg-reset")});
  el("fg-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    flame.search(el("fg-term").value);
  });
  el("fg-clear").addEventListener("click", function () {
    el("fg-term").value = "";
    flame.clearSearch();
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape") { flame.reset(); }
  });
  var rows = document.querySelectorAll("tr.cat");
  for (var i = 0; i < rows.length; i++) {
    rows[i].addEventListener("click", function () {
      var id = this.getAttribute("data-cat");
      var frames = document.querySelectorAll("#fg-svg g.k-category");
      for (var k = 0; k < frames.length; k++) {
        var t = frames[k].querySelector("title");
        if (t && t.textContent.split("\n")[0] === id) {
          flame.zoom(frames[k]);
          el("flame").scrollIntoView();
          return;
        }
      }
    });
  }
})();
