// The board's live updates: reload when the store changes (server-sent events from /board/events).
// The board works without this file; it only saves pressing reload. A form being typed in is not
// interrupted: the reload waits until no field has the focus.
"use strict";
(function () {
  let pending = false;
  function reload() {
    const active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA")) {
      pending = true;
      return;
    }
    location.reload();
  }
  document.addEventListener("focusout", function () { if (pending) { setTimeout(reload, 500); } });
  // the revision this page shows: the stream also reports a change made before it opened
  const shown = document.querySelector('meta[name="board-revision"]');
  const since = shown ? shown.getAttribute("content") : "";
  new EventSource("/board/events?since=" + encodeURIComponent(since)).addEventListener("changed", reload);
})();
