"""Seeing tokens: ANSI-coloured terminal output and a self-contained HTML playground page."""

from __future__ import annotations

import html

# Background colours cycled over tokens (256-colour ANSI codes; pastel, readable with black text).
ANSI_BG = [153, 229, 158, 217, 189, 223]
ANSI_SPECIAL_BG = 203
HTML_BG = ["#b3d4fc", "#fde68a", "#bbf7d0", "#fecaca", "#ddd6fe", "#fed7aa"]
HTML_SPECIAL_BG = "#f87171"


def token_pieces(tok, ids) -> list[str]:
    """Printable text of each token. A token holding only part of a multi-byte character shows its
    bytes in hex (e.g. <e2 80>) rather than U+FFFD, so the boundaries stay honest."""
    out = []
    for i in ids:
        b = tok.token_bytes(int(i))
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            out.append("<" + " ".join(f"{x:02x}" for x in b) + ">")
    return out


def _visible(piece: str) -> str:
    return piece.replace("\t", "→\t").replace("\r", "\\r").replace("\n", "↵\n")


def stats_line(text: str, ids) -> str:
    n = len(ids)
    cpt = len(text) / n if n else 0.0
    bpt = len(text.encode("utf-8")) / n if n else 0.0
    return f"{n} tokens, {len(text)} chars, {cpt:.2f} chars/token, {bpt:.2f} bytes/token"


def ansi(tok, ids) -> str:
    parts = []
    for k, (i, piece) in enumerate(zip(ids, token_pieces(tok, ids))):
        bg = ANSI_SPECIAL_BG if tok.is_special(int(i)) else ANSI_BG[k % len(ANSI_BG)]
        for j, line in enumerate(_visible(piece).split("\n")):
            if j:
                parts.append("\n")
            if line:
                parts.append(f"\x1b[30;48;5;{bg}m{line}\x1b[0m")
    return "".join(parts)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>chatforge tokenizer: {n} tokens</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 70rem; color: #111; }}
.stats {{ display: flex; gap: 2rem; margin: 1rem 0; }}
.stat b {{ display: block; font-size: 1.6rem; }}
.tokens {{ font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-all;
           line-height: 1.8; border: 1px solid #ddd; padding: 1rem; border-radius: 6px; }}
.tokens span {{ border-radius: 3px; padding: 1px 0; }}
.tokens span:hover {{ outline: 2px solid #111; }}
.special {{ font-weight: bold; }}
.ids {{ font-family: ui-monospace, monospace; font-size: .85rem; color: #444; word-break: break-all; }}
{colours}
</style></head><body>
<h1>chatforge tokenizer</h1>
<div>{tokname}</div>
<div class="stats">
<div class="stat"><b>{n}</b>tokens</div>
<div class="stat"><b>{chars}</b>characters</div>
<div class="stat"><b>{cpt:.2f}</b>chars / token</div>
<div class="stat"><b>{bpt:.2f}</b>bytes / token</div>
</div>
<p>Hover a token to see its id.</p>
<div class="tokens">{spans}</div>
<h2>Token ids</h2>
<div class="ids">{ids}</div>
</body></html>
"""


def html_page(tok, text: str, ids) -> str:
    spans = []
    for k, (i, piece) in enumerate(zip(ids, token_pieces(tok, ids))):
        special = tok.is_special(int(i))
        cls = "special" if special else f"c{k % len(HTML_BG)}"
        title = f"id {int(i)}" + (" (special)" if special else f" · {len(tok.token_bytes(int(i)))} bytes")
        body = html.escape(_visible(piece))
        spans.append(f'<span class="{cls}" title="{title}">{body}</span>')
    colours = "\n".join(f".c{k} {{ background: {c}; }}" for k, c in enumerate(HTML_BG))
    colours += f"\n.special {{ background: {HTML_SPECIAL_BG}; }}"
    n = len(ids)
    return PAGE.format(
        n=n, chars=len(text), cpt=len(text) / n if n else 0, bpt=len(text.encode()) / n if n else 0,
        spans="".join(spans), ids=html.escape(", ".join(str(int(i)) for i in ids)), colours=colours,
        tokname=html.escape(f"vocab size {tok.vocab_size}" + (f" · {tok.path}" if tok.path else "")),
    )
