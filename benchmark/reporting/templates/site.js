(function () {
  "use strict";
  function key(row, index) {
    var cell = row.cells[index];
    return cell ? cell.getAttribute("data-sort") || "" : "";
  }
  document.querySelectorAll("table.board").forEach(function (table) {
    var heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, index) {
      th.querySelector("button").addEventListener("click", function () {
        var numeric = th.getAttribute("data-type") === "number";
        var current = th.getAttribute("aria-sort");
        var descending = current ? current === "ascending" : numeric;
        heads.forEach(function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a, index), y = key(b, index), order = 0;
          if (x === "" || y === "") {
            order = (x === "") - (y === "");  /* no number: always last */
          } else {
            order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
            if (descending) { order = -order; }
          }
          return order || a.getAttribute("data-rank") - b.getAttribute("data-rank");
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
  var controls = document.getElementById("filters");
  if (!controls) { return; }
  function value(name) { return controls.querySelector("[name=" + name + "]").value; }
  function apply() {
    var defense = value("defense"), attack = value("attack"), norm = value("norm");
    var text = value("text").trim().toLowerCase(), shown = 0, total = 0;
    document.querySelectorAll("section.board").forEach(function (section) {
      var columns = section.querySelectorAll("thead th[data-attack]");
      var hasAttack = attack === "" || Array.prototype.some.call(columns, function (th) {
        return th.getAttribute("data-attack") === attack;
      });
      var visible = hasAttack && (norm === "" || section.getAttribute("data-norm") === norm);
      section.querySelectorAll("[data-attack]").forEach(function (cell) {
        cell.hidden = attack !== "" && cell.getAttribute("data-attack") !== attack;
      });
      var rows = 0;
      section.querySelectorAll("tbody tr").forEach(function (row) {
        var name = row.getAttribute("data-defense");
        row.hidden = (defense !== "" && name !== defense) ||
          (text !== "" && name.toLowerCase().indexOf(text) < 0);
        total += 1;
        if (visible && !row.hidden) { rows += 1; }
      });
      section.hidden = !visible || rows === 0;
      shown += rows;
    });
    document.querySelectorAll("[data-gallery]").forEach(function (gallery) {
      var name = gallery.getAttribute("data-gallery");
      gallery.hidden = (defense !== "" && name !== defense) ||
        (text !== "" && name.toLowerCase().indexOf(text) < 0);
    });
    document.getElementById("count").textContent = shown + " of " + total + " rows shown";
  }
  controls.addEventListener("input", apply);
  controls.addEventListener("change", apply);
  apply();
}());
