// chatforge web chat: talks to this server's /v1/chat/completions (SSE streaming) and keeps
// conversations in localStorage, so they survive reloads. No framework, no CDN.
"use strict";

const STORE = "chatforge.chat.v1";
const $ = (id) => document.getElementById(id);
let state = load();
let modelId = null;
let controller = null;   // AbortController of the reply being streamed

function load() {
  try {
    const s = JSON.parse(localStorage.getItem(STORE));
    if (s && s.convs && Array.isArray(s.order)) return s;
  } catch (e) { /* corrupt store: start fresh */ }
  return { convs: {}, order: [], current: null, settings: {} };
}
function save() { localStorage.setItem(STORE, JSON.stringify(state)); }
function current() { return state.convs[state.current]; }

function newConversation() {
  const id = Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
  state.convs[id] = { id, title: "New chat", system: $("system-prompt").value, messages: [] };
  state.order.unshift(id);
  state.current = id;
  save();
  renderAll();
}

// ---- rendering ------------------------------------------------------------------------------
const TOOL_LABEL = { python: "python call", python_output: "python output",
                     search: "search", search_output: "search results" };

function renderMessage(m, streaming) {
  const div = document.createElement("div");
  div.className = `msg ${m.role}` + (streaming ? " streaming" : "");
  const role = document.createElement("span");
  role.className = "role";
  role.textContent = m.role === "user" ? "You" : "Assistant";
  div.appendChild(role);
  if (m.role === "user") {
    div.appendChild(document.createTextNode(m.content));
  } else {
    (m.parts || []).forEach((p, i) => {
      if (p.type === "text") { div.appendChild(document.createTextNode(p.text)); return; }
      const d = document.createElement("details");
      d.className = "tool " + p.type;
      d.open = !!(m.open && m.open[i]);
      d.addEventListener("toggle", () => { (m.open = m.open || {})[i] = d.open; save(); });
      const s = document.createElement("summary");
      const first = p.text.split("\n")[0];
      s.textContent = `${TOOL_LABEL[p.type] || p.type}: ${first.slice(0, 60)}${first.length > 60 || p.text.includes("\n") ? " …" : ""}`;
      const pre = document.createElement("pre");
      if (p.type.endsWith("_output")) pre.className = "output";
      pre.textContent = p.text;
      d.append(s, pre);
      div.appendChild(d);
    });
    if (m.note) {
      const n = document.createElement("span");
      n.className = "note" + (m.error ? " error" : "");
      n.textContent = m.note;
      div.appendChild(n);
    }
  }
  return div;
}

function renderMessages() {
  const box = $("messages");
  const conv = current();
  box.replaceChildren();
  if (!conv || conv.messages.length === 0) {
    const hint = document.createElement("div");
    hint.id = "empty-hint";
    hint.textContent = "Start a conversation below.";
    box.appendChild(hint);
    return;
  }
  conv.messages.forEach((m, i) => {
    const last = i === conv.messages.length - 1;
    box.appendChild(renderMessage(m, last && controller !== null && m.role === "assistant"));
  });
  box.scrollTop = box.scrollHeight;
}

function renderSidebar() {
  const ul = $("conversations");
  ul.replaceChildren();
  for (const id of state.order) {
    const c = state.convs[id];
    const li = document.createElement("li");
    li.className = id === state.current ? "active" : "";
    li.dataset.id = id;
    const span = document.createElement("span");
    span.textContent = c.title;
    const del = document.createElement("button");
    del.textContent = "×";
    del.title = "Delete conversation";
    del.addEventListener("click", (e) => {
      e.stopPropagation();
      delete state.convs[id];
      state.order = state.order.filter((x) => x !== id);
      if (state.current === id) state.current = state.order[0] || null;
      save(); renderAll();
    });
    li.append(span, del);
    li.addEventListener("click", () => {
      if (controller) return;
      state.current = id; save(); renderAll();
    });
    ul.appendChild(li);
  }
}

function renderAll() {
  const conv = current();
  $("system-prompt").value = conv ? conv.system || "" : (state.settings.system || "");
  renderSidebar();
  renderMessages();
  setBusy(controller !== null);
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("regenerate").disabled = busy || !current() || current().messages.length === 0;
  $("stop").hidden = !busy;
}

// ---- talking to the server --------------------------------------------------------------------
function apiMessages(conv) {
  const out = [];
  if (conv.system && conv.system.trim()) out.push({ role: "system", content: conv.system });
  for (const m of conv.messages) {
    if (m.role === "user") out.push({ role: "user", content: m.content });
    else if (m.parts && m.parts.length) {
      const text = m.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
      out.push({ role: "assistant", content: text, chatforge_parts: m.parts });
    }
  }
  return out;
}

function addParts(msg, parts) {
  for (const p of parts) {
    const last = msg.parts[msg.parts.length - 1];
    if (last && last.type === p.type) last.text += p.text;
    else msg.parts.push({ type: p.type, text: p.text });
  }
}

async function streamReply(conv) {
  const reply = { role: "assistant", parts: [] };
  conv.messages.push(reply);
  controller = new AbortController();
  setBusy(true);
  renderMessages();
  const body = {
    model: modelId, messages: apiMessages({ ...conv, messages: conv.messages.slice(0, -1) }), stream: true,
    temperature: parseFloat($("temperature").value),
    max_tokens: Math.max(1, parseInt($("max-tokens").value, 10) || 512),
  };
  try {
    const res = await api("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: controller.signal,
    });
    if (!res.ok) {
      const err = await res.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || `HTTP ${res.status}`);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          for (const ch of chunk.choices || []) {
            const d = ch.delta || {};
            if (d.chatforge_parts) addParts(reply, d.chatforge_parts);
            else if (d.content) addParts(reply, [{ type: "text", text: d.content }]);
            if (ch.finish_reason === "length") reply.note = "(reply cut at the max-token limit)";
          }
        }
      }
      save();
      renderMessages();
    }
  } catch (e) {
    if (e.name === "AbortError") reply.note = "(stopped)";
    else { reply.note = "Error: " + e.message; reply.error = true; }
  } finally {
    controller = null;
    save();
    renderAll();
  }
}

function send(text) {
  if (!current()) newConversation();
  const conv = current();
  conv.system = $("system-prompt").value;
  conv.messages.push({ role: "user", content: text });
  if (conv.title === "New chat") conv.title = text.slice(0, 40) || "New chat";
  save();
  renderSidebar();
  streamReply(conv);
}

// ---- wiring -------------------------------------------------------------------------------------
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller || !modelId) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
});
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
$("new-chat").addEventListener("click", () => { if (!controller) newConversation(); });
$("regenerate").addEventListener("click", () => {
  const conv = current();
  if (!conv || controller) return;
  while (conv.messages.length && conv.messages[conv.messages.length - 1].role === "assistant") conv.messages.pop();
  if (conv.messages.length) streamReply(conv);
});
$("system-prompt").addEventListener("input", () => {
  state.settings.system = $("system-prompt").value;
  if (current()) current().system = $("system-prompt").value;
  save();
});
$("temperature").addEventListener("input", () => {
  $("temperature-value").textContent = $("temperature").value;
  state.settings.temperature = $("temperature").value; save();
});
$("max-tokens").addEventListener("change", () => { state.settings.maxTokens = $("max-tokens").value; save(); });

if (state.settings.temperature) $("temperature").value = state.settings.temperature;
if (state.settings.maxTokens) $("max-tokens").value = state.settings.maxTokens;
$("temperature-value").textContent = $("temperature").value;
renderAll();

// A server started with --api-key answers 401 on /v1: ask for the key once, keep it in this browser.
async function api(path, opts = {}) {
  for (let attempt = 0; ; attempt++) {
    const key = localStorage.getItem("chatforge-api-key");
    const headers = { ...(opts.headers || {}), ...(key ? { Authorization: `Bearer ${key}` } : {}) };
    const res = await fetch(path, { ...opts, headers });
    if (res.status !== 401 || attempt > 0) return res;
    const entered = window.prompt("This server needs an API key (chatforge serve --api-key):");
    if (!entered) return res;
    localStorage.setItem("chatforge-api-key", entered.trim());
  }
}

api("/v1/models").then((r) => r.json()).then((d) => {
  modelId = d.data[0].id;
  $("model-info").textContent = `${modelId} · context ${d.data[0].context_length} tokens`;
}).catch(() => { $("model-info").textContent = "server unreachable"; });
