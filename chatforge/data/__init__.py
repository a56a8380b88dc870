"""chatforge.data: raw crawl and text files -> clean document shards -> token shards.

Read in pipeline order:
  readers.py     WARC / HTML / JSONL / plain text / parquet -> Doc stream, bad input counted
  url_filter.py  UT1 domain/URL blocklists, banned URL words
  extract.py     HTML main text (ours: extract_fast.py, the default; trafilatura; resiliparse), per-page time limit
  langid.py      fastText lid.176 (bundled, offline)
  quality.py     Gopher repetition + quality, C4 lines, FineWeb rules
  dedup.py       exact + MinHash LSH across a whole build
  pii.py         emails, public IPs -> placeholders
  build.py       the resumable multi-process driver (`chatforge data build`, `build()`)
  ray_engine.py  the same passes as Ray tasks, one machine or a cluster (`--engine ray`)
  tokenize.py    document shards -> token shards (`chatforge data tokenize`, `tokenize()`)
  shards.py      the token shard format and reader the trainer uses
steps.py holds what every step shares (Doc, StepStats, Step); factworld.py generates the synthetic
people whose facts the factuality stages measure (`chatforge data factworld`).
"""
