// Live pages: ask every 5 s how many records the page was built from and reload when that moved (filters stay in the
// URL). A form being filled in is never thrown away.
(function () {
  var live = document.getElementById("live");
  if (!live) { return; }
  var known = Number(live.dataset.count);
  setInterval(function () {
    fetch(live.dataset.url, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (answer) {
        var typing = document.activeElement && document.activeElement.tagName === "INPUT";
        if (answer && answer.count !== known && !typing) { window.location.reload(); }
      })
      .catch(function () { live.textContent = "Cannot reach the console; retrying."; });
  }, 5000);
})();
