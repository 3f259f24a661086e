"""lofibeats live: an endless take of a trained model streamed to a browser page, with live knobs.

`python live.py ckpt=last` (conf/live.yaml) serves the page on localhost. Parts, bottom up:

- `protocol`: the WebSocket wire format (binary int16 PCM frames with a small header, JSON
  control messages) and the checks every control message goes through.
- `catalog`: the runs under `outputs/` a listener can pick, loaded models (shared by streams),
  their val clips (primes and style targets) and uploaded clips.
- `player`: one listener's generation, a worker thread running a `Stream` paced a bounded
  distance ahead of what the browser has played; knobs rewind it to just ahead of the listener.
- `server`: the Starlette app (page, static files, checkpoint list, uploads, `/ws`), the access
  guard, and `serve(cfg)` which runs it on uvicorn.
- `static/`: the page (plain HTML/JS/CSS) and its AudioWorklet ring buffer.
"""
