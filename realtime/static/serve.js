// The live view page: the MJPEG stream, counts from Server-Sent Events, a snapshot button.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const withToken = (path) => (token ? `${path}?token=${encodeURIComponent(token)}` : path);
const $ = (id) => document.getElementById(id);

function setState(text, kind) {
  const el = $("state");
  el.textContent = text;
  el.className = `state ${kind}`;
}

function show(live) {
  const now = live.faces_now_by_label || {};
  $("faces").textContent = live.faces_now;
  $("now-female").textContent = now.female || 0;
  $("now-male").textContent = now.male || 0;
  $("now-uncertain").textContent = now.uncertain || 0;
  const t = live.distinct_tracks_by_label || {};
  $("tracks").textContent = `${live.distinct_tracks}: ${t.female || 0} female, ${t.male || 0} male, ` +
    `${t.uncertain || 0} uncertain`;
  $("fps").textContent = live.fps == null ? "–" : live.fps.toFixed(1);
}

function ended() {
  setState("stream ended", "ended");
  $("ended").hidden = false;
  $("snapshot").disabled = true;
}

function start() {
  $("stream").src = withToken("/stream.mjpg");
  const events = new EventSource(withToken("/events"));
  events.addEventListener("frame", (e) => {
    setState("live", "live");
    show(JSON.parse(e.data).live);
  });
  events.addEventListener("end", (e) => {
    show(JSON.parse(e.data));
    events.close();
    ended();
  });
  events.onerror = () => {
    // The server is gone (the run stopped) or refused us (token, too many viewers).
    events.close();
    fetch(withToken("/stats.json")).then((r) => {
      if (r.status === 401) setState("needs the token: open the full address the program printed", "error");
      else if (r.ok) r.json().then((s) => (s.ended ? ended() : setState("reconnecting…", "error")));
      else setState(`refused (${r.status})`, "error");
    }).catch(ended);
  };
}

$("snapshot").addEventListener("click", async () => {
  const r = await fetch(withToken("/frame.jpg"));
  if (!r.ok) return;
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = `face-gender-${new Date().toISOString().replace(/[:.]/g, "-")}.jpg`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
});

start();
