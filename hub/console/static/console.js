// Live feed: ask how many items the feed holds every 5 s and reload when it grew (filters are kept in the URL).
(function () {
  var live = document.getElementById("live");
  if (!live) { return; }
  var known = Number(live.dataset.count);
  setInterval(function () {
    fetch(live.dataset.url, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (answer) {
        if (answer && answer.count !== known) { window.location.reload(); }
      })
      .catch(function () { live.textContent = "Cannot reach the console; retrying."; });
  }, 5000);
})();
