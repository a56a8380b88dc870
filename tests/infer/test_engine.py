"""The engine against plain full forward passes, batching, stops, cancellation and tool calls."""

import pytest
import torch

from chatforge.infer.engine import ContextTooLong, Engine, Request, SamplingParams
from chatforge.infer.tools import Tool, ToolRegistry, default_tools

NO_STOPS = dict(stop_token_ids=(), use_tools=False)


def full_forward_greedy(model, prompt, n):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


def prompts(tok):
    texts = ["To be", "Once upon a time, in a land far away, there lived", "Hello world " * 6]
    return [[tok.bos_id] + tok.encode(t) for t in texts]


def test_greedy_equals_argmax_of_full_forward(tiny_model, tiny_tokenizer):
    eng = Engine(tiny_model, tiny_tokenizer)
    for p in prompts(tiny_tokenizer):
        c = eng.complete(p, SamplingParams(max_tokens=24, temperature=0, **NO_STOPS))[0]
        assert c.token_ids == full_forward_greedy(tiny_model, p, 24)
        assert c.finish_reason == "length" and c.completion_tokens == 24
        # logprobs are those of the model's own distribution at each step
        with torch.no_grad():
            lp = torch.log_softmax(tiny_model(torch.tensor([p + c.token_ids]))[0].float(), -1)
        want = [lp[len(p) - 1 + i, t].item() for i, t in enumerate(c.token_ids)]
        assert c.logprobs == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("params", [dict(temperature=0), dict(temperature=0.9, top_p=0.9, top_k=50, seed=7)])
def test_batched_equals_unbatched(tiny_model, tiny_tokenizer, params):
    eng = Engine(tiny_model, tiny_tokenizer)
    sp = SamplingParams(max_tokens=16, **params, **NO_STOPS)
    alone = [eng.complete(p, sp, n=2) for p in prompts(tiny_tokenizer)]
    reqs = [Request(p, sp, n=2) for p in prompts(tiny_tokenizer)]
    together = eng.run_to_completion(reqs)
    for r, a in zip(reqs, alone):
        for x, y in zip(together[r.id], a):
            assert x.token_ids == y.token_ids
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)


def test_seed_reproducible_and_n_samples_differ(tiny_model, tiny_tokenizer):
    eng = Engine(tiny_model, tiny_tokenizer)
    p = prompts(tiny_tokenizer)[1]
    sp = SamplingParams(max_tokens=20, temperature=1.0, seed=123, **NO_STOPS)
    a, b = eng.complete(p, sp, n=3), eng.complete(p, sp, n=3)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert len({tuple(c.token_ids) for c in a}) == 3


def test_stop_token_and_stop_strings(tiny_model, tiny_tokenizer):
    eng = Engine(tiny_model, tiny_tokenizer)
    p = prompts(tiny_tokenizer)[0]
    free = eng.complete(p, SamplingParams(max_tokens=30, temperature=0, **NO_STOPS))[0]
    # stop on the token the model emits at step 5: output ends just before it
    stop_tok = free.token_ids[5]
    first = free.token_ids.index(stop_tok)
    c = eng.complete(p, SamplingParams(max_tokens=30, temperature=0, stop_token_ids=(stop_tok,), use_tools=False))[0]
    assert c.finish_reason == "stop" and c.token_ids == free.token_ids[:first + 1]
    # stop string taken from the middle of the free text: the text is cut right before it
    text = tiny_tokenizer.decode(free.token_ids)
    s = text[8:11]
    c = eng.complete(p, SamplingParams(max_tokens=30, temperature=0, stop=(s,), **NO_STOPS))[0]
    assert c.finish_reason == "stop" and c.text == text[:text.index(s)]


def test_streaming_events_and_cancel(tiny_model, tiny_tokenizer):
    eng = Engine(tiny_model, tiny_tokenizer)
    p = prompts(tiny_tokenizer)[0]
    a, b = Request(p, SamplingParams(max_tokens=50, temperature=0, **NO_STOPS)), Request(p, SamplingParams(max_tokens=10, temperature=0, **NO_STOPS))
    steps, fin = 0, {}
    for events in eng.generate([a, b]):
        steps += 1
        if steps == 3:
            a.cancel()
        for ev in events:
            if ev.finish_reason:
                fin[ev.request.id] = ev.finish_reason
    assert fin == {a.id: "cancelled", b.id: "length"} and steps == 10


def test_prompt_too_long_is_a_clear_error(tiny_model, tiny_tokenizer):
    eng = Engine(tiny_model, tiny_tokenizer)
    with pytest.raises(ContextTooLong, match="context is 256"):
        eng.complete([1] * 300, SamplingParams(max_tokens=5))
    # a long generation stops at the context edge with "length", no crash
    c = eng.complete([1] * 250, SamplingParams(max_tokens=50, temperature=0, **NO_STOPS))[0]
    assert c.finish_reason == "length" and len(c.token_ids) == 256 - 250 + 1  # last one needs no slot


class ScriptedModel(torch.nn.Module):
    """Writes a fixed script: text, a python call, then (after the engine's forced output) more text."""

    def __init__(self, real, before, after, output_end):
        super().__init__()
        self.real, self.before, self.after, self.output_end = real, before, after, output_end
        self.config = real.config

    def new_kv_cache(self, *a, **k):
        self.inputs = []
        return self.real.new_kv_cache(*a, **k)

    def forward(self, idx, kv_cache=None, attention_mask=None):
        kv_cache.pos += idx.shape[1]
        if kv_cache.pos > idx.shape[1]:
            self.inputs.append(int(idx[0, -1]))
        if self.output_end in self.inputs:
            k = len(self.inputs) - 1 - self.inputs.index(self.output_end)
            nxt = self.after[k]
        else:
            nxt = self.before[min(len(self.inputs), len(self.before) - 1)]
        logits = torch.zeros(idx.shape[0], idx.shape[1], self.config.vocab_size)
        logits[:, -1, nxt] = 10.0
        return logits


def test_tool_call_runs_in_sandbox_and_output_enters_context(tiny_model, tiny_tokenizer):
    tok = tiny_tokenizer
    sid = tok.special_id
    before = tok.encode("Let me compute. ") + [sid("python_start")] + tok.encode("print(6*7)") + [sid("python_end")]
    after = tok.encode(" So 42.") + [sid("assistant_end")]
    model = ScriptedModel(tiny_model, before, after, sid("output_end"))
    eng = Engine(model, tok, default_tools())
    c = eng.complete(eng.chat_prompt([{"role": "user", "content": "6*7?"}]), SamplingParams(temperature=0))[0]
    assert c.parts == [{"type": "text", "text": "Let me compute. "}, {"type": "python", "text": "print(6*7)"},
                       {"type": "python_output", "text": "42\n"}, {"type": "text", "text": " So 42."}]
    assert c.finish_reason == "stop"
    # the output went into the context between <|output_start|> and <|output_end|>
    forced = [sid("output_start")] + tok.encode("42\n") + [sid("output_end")]
    assert model.inputs[len(before):len(before) + len(forced)] == forced
    assert c.completion_tokens == len(before) + len(after)


def test_a_search_tool_plugs_in(tiny_model, tiny_tokenizer):
    tok = tiny_tokenizer
    sid = tok.special_id
    before = [sid("search_start")] + tok.encode("capital of France") + [sid("search_end")]
    after = tok.encode("Paris") + [sid("assistant_end")]
    reg = ToolRegistry([Tool("search", "<|search_start|>", "<|search_end|>", lambda q: f"results for {q}")])
    eng = Engine(ScriptedModel(tiny_model, before, after, sid("output_end")), tok, reg)
    c = eng.complete([tok.bos_id, 5], SamplingParams(temperature=0))[0]
    assert [p["type"] for p in c.parts] == ["search", "search_output", "text"]
    assert c.parts[1]["text"] == "results for capital of France"


def test_requests_joining_a_running_batch_match_running_alone(tiny_model, tiny_tokenizer):
    eng = Engine(tiny_model, tiny_tokenizer)
    ps = prompts(tiny_tokenizer)
    sp = SamplingParams(max_tokens=20, temperature=0, **NO_STOPS)
    first = Request(ps[2], sp)                       # the longest prompt starts the batch
    late = [Request(ps[0], sp, n=2), Request(ps[1], SamplingParams(max_tokens=8, temperature=0.8, seed=3, **NO_STOPS))]
    calls = []

    def admit(free, pos, room):
        calls.append((free, pos))
        return late if len(calls) == 4 else []

    got = {}
    for events in eng.generate([first], admit=admit, max_rows=4):
        for ev in events:
            got.setdefault((ev.request.id, ev.index), []).append(ev.token)
    assert calls[3] == (3, len(ps[2]) + 3)  # joined at step 4, into the 3 free rows
    for r in [first] + late:
        alone = eng.complete(r.prompt, r.params, n=r.n)
        for i in range(r.n):
            assert [t for t in got[(r.id, i)] if t is not None] == alone[i].token_ids


def test_streamed_text_is_exact_across_split_utf8(tiny_model, tiny_tokenizer):
    """Multi-byte characters split over tokens stream out whole; the deltas add up to decode(ids)."""
    tok = tiny_tokenizer
    text = "naïve café — 日本語 😀 done"
    ids = tok.encode(text)
    assert any(tok.decode([i]).endswith("\ufffd") for i in ids)  # some token ends mid-character
    model = ScriptedModel(tiny_model, ids + [tok.special_id("assistant_end")], [], tok.special_id("output_end"))
    eng = Engine(model, tok)
    deltas = []
    for events in eng.generate([Request([tok.bos_id, 5], SamplingParams(temperature=0))]):
        deltas += [t for ev in events for k, t in ev.parts]
    assert "".join(deltas) == text and all("\ufffd" not in d for d in deltas)


@pytest.mark.parametrize("with_tool", [False, True])
def test_text_decoded_at_the_end_equals_streamed(tiny_model, tiny_tokenizer, with_tool):
    """stream_text=False (RL rollouts) decodes the reply once at the end: same ids, log-probs, parts
    and finish as streaming, but no text deltas while the rows run."""
    tok = tiny_tokenizer
    sid = tok.special_id
    text = "naïve café — 日本語 😀 done. "
    before = tok.encode(text) + ([sid("python_start")] + tok.encode("print(6*7)") + [sid("python_end")] if with_tool
                                 else [sid("assistant_end")])
    after = tok.encode(" So 42.") + [sid("assistant_end")]
    got = {}
    for stream in (True, False):
        eng = Engine(ScriptedModel(tiny_model, before, after, sid("output_end")), tok, default_tools())
        req = Request([tok.bos_id, 5], SamplingParams(temperature=0, stream_text=stream))
        deltas = [ev.parts for events in eng.generate([req]) for ev in events if ev.parts]
        got[stream] = eng.complete([tok.bos_id, 5], req.params)[0], len(deltas)
    (a, n_stream), (b, n_lazy) = got[True], got[False]
    assert (b.token_ids, b.parts, b.finish_reason) == (a.token_ids, a.parts, a.finish_reason)
    assert b.logprobs == pytest.approx(a.logprobs)
    assert b.parts[0] == {"type": "text", "text": text}
    assert n_lazy == (3 if with_tool else 1) < n_stream  # text, call + its output, text: one event each


def test_stop_strings_still_stop_without_streamed_text(tiny_model, tiny_tokenizer):
    tok = tiny_tokenizer
    script = tok.encode("alpha beta gamma delta") + [tok.special_id("assistant_end")]
    eng = Engine(ScriptedModel(tiny_model, script, [], tok.special_id("output_end")), tok)
    c = eng.complete([tok.bos_id, 5], SamplingParams(temperature=0, stop=(" gamma",), stream_text=False))[0]
    assert c.text == "alpha beta" and c.finish_reason == "stop"


@pytest.mark.gpu
def test_rows_sharing_their_settings_sample_inside_the_cuda_graph(tiny_model, tiny_tokenizer):
    """On a GPU, rows that sample with the same settings draw inside the captured step: fresh noise
    at every replay, tokens within each step's top-k, log-probs those of the model."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    import copy

    model = copy.deepcopy(tiny_model).cuda()
    eng = Engine(model, tiny_tokenizer)
    p = prompts(tiny_tokenizer)[1]
    torch.manual_seed(0)
    outs = eng.complete(p, SamplingParams(max_tokens=24, temperature=1.0, top_k=5, **NO_STOPS), n=16)
    assert any(key[2] and key[2] != True for key in eng._decoder.graphs)  # noqa: E712  (a sampling graph)
    assert len({tuple(c.token_ids) for c in outs}) == 16
    with torch.no_grad():
        for c in outs[:4]:
            logits = model(torch.tensor([p + c.token_ids], device="cuda"))[0, len(p) - 1:-1].float()
            top = logits.topk(5, dim=-1).indices
            assert all(t in top[i].tolist() for i, t in enumerate(c.token_ids))
            lp = torch.log_softmax(logits, -1)[torch.arange(len(c.token_ids)), c.token_ids]
            assert c.logprobs == pytest.approx(lp.tolist(), abs=2e-3)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_queueing_the_next_step_ahead_changes_nothing(tiny_model, tiny_tokenizer, temperature, monkeypatch):
    """overlap=True (the next decode step queued before this step's host work) gives the same
    tokens, log-probs and finishes as stepping one at a time: rows stopping at different steps
    (dropped from the cache after a step already ran for them), the length limit, the context edge."""
    tok = tiny_tokenizer
    ps = prompts(tok)
    # stop on the tokens this model writes often, so rows finish at different steps
    eng = Engine(tiny_model, tok, overlap=False)
    c = eng.complete(ps[1], SamplingParams(max_tokens=40, temperature=0, **NO_STOPS))[0]
    stops = tuple(sorted(set(c.token_ids), key=c.token_ids.count)[-3:])
    import chatforge.infer.engine as engine_module

    ahead = []  # steps queued ahead (each copies the picks to the host first)
    copy = engine_module._to_host_async
    monkeypatch.setattr(engine_module, "_to_host_async", lambda t: ahead.append(1) or copy(t))
    got = {}
    for overlap in (False, True):
        eng = Engine(tiny_model, tok, overlap=overlap)
        torch.manual_seed(0)
        reqs = [Request(p, SamplingParams(max_tokens=30, temperature=temperature, use_tools=False,
                                          stop_token_ids=stops), n=3) for p in ps]
        reqs.append(Request([1] * 240, SamplingParams(max_tokens=50, temperature=0, **NO_STOPS)))  # context edge
        done = eng.run_to_completion(reqs)
        got[overlap] = [(c.token_ids, c.finish_reason, c.logprobs) for r in reqs for c in done[r.id]]
    assert [g[:2] for g in got[True]] == [g[:2] for g in got[False]]
    for a, b in zip(got[True], got[False]):
        assert a[2] == pytest.approx(b[2], abs=1e-5)
    finishes = [g[1] for g in got[True]]
    assert "stop" in finishes and "length" in finishes
    # on a CPU the decoder picks greedy batches only (sampled ones are drawn by the engine)
    assert (len(ahead) >= 10) if temperature == 0 else not ahead, len(ahead)  # ~17 steps in all
    # rows really left at different steps: the stopped ones while the context-edge row went on
    assert min(len(g[0]) for g in got[True] if g[1] == "stop") < len(got[True][-1][0])
