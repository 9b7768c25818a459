(function () {
  "use strict";
  /* Robust accuracy at ε: the share of samples whose attack radius is above ε; certified
     accuracy: the share certified at a positive radius of at least ε (null: infinite). */
  function share(radii, n, counted) {
    return radii.filter(counted).length / n;
  }
  document.querySelectorAll("section.curve").forEach(function (section) {
    var groups = JSON.parse(section.querySelector("script[type='application/json']").textContent);
    var slider = section.querySelector("input[type=range]");
    var shown = section.querySelector("output");
    var body = section.querySelector("tbody");
    var rows = Object.create(null);
    Array.prototype.forEach.call(body.rows, function (row) {
      rows[row.getAttribute("data-curve-defense")] = row;
    });
    function rank() {
      var eps = parseFloat(slider.value);
      shown.textContent = "ε = " + slider.value;
      groups.map(function (group, index) {
        return {row: rows[group.defense], index: index,
          robust: share(group.attack, group.n, function (r) { return r === null || r > eps; }),
          certified: group.certified === null ? null : share(group.certified, group.n,
            function (c) { return c === null || (c > 0 && c >= eps); })};
      }).sort(function (a, b) {
        return b.robust - a.robust || a.index - b.index;  /* best first; ties by name */
      }).forEach(function (entry) {
        entry.row.cells[1].textContent = entry.robust.toFixed(3);
        if (entry.certified !== null) {
          entry.row.cells[2].textContent = entry.certified.toFixed(3);
        }
        body.appendChild(entry.row);
      });
    }
    slider.addEventListener("input", rank);
    rank();
  });
  var controls = document.getElementById("filters");
  if (!controls) { return; }
  function follow() {  /* the page's defense and norm filters hide rows and sections here too */
    var pick = function (name) { return controls.querySelector("[name=" + name + "]").value; };
    var defense = pick("defense"), norm = pick("norm"), text = pick("text").trim().toLowerCase();
    document.querySelectorAll("section.curve").forEach(function (section) {
      section.hidden = norm !== "" && section.getAttribute("data-curve-norm") !== norm;
      section.querySelectorAll("tbody tr").forEach(function (row) {
        var name = row.getAttribute("data-curve-defense");
        row.hidden = (defense !== "" && name !== defense) ||
          (text !== "" && name.toLowerCase().indexOf(text) < 0);
      });
    });
  }
  controls.addEventListener("input", follow);
  controls.addEventListener("change", follow);
}());
