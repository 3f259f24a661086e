// lofibeats live: the AudioWorklet that plays the stream from a ring buffer.
//
// Frames arrive from the page as {take, rev, position, pcm: Int16Array}. Positions are the
// take's sample index; the ring maps them to absolute ring positions (`offset` of the take).
// A frame that starts before the end of what the ring holds replaces the audio from there on:
// the server rewound the stream to apply a knob. A new take is staged until it has
// `startSeconds` of audio, then crossfaded in where playback is, so "new take" never gaps.
// Playback waits for `startSeconds` of audio; running dry is an underrun: silence, counted and
// reported, then it waits again (the page raises the threshold when the model is too slow).
// Every `reportSeconds` of audio it posts its status (played position, buffered seconds,
// underruns, the knob revision being heard, level), which the page forwards to the server as
// the pacing signal; the audio thread is not throttled in background tabs, so pacing holds.

const TAKE_FADE_SECONDS = 0.03; // crossfade between takes
const LATE_FADE_SECONDS = 0.005; // crossfade when a replacement arrives after its start played

class LiveOutput extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.capacity = Math.ceil(sampleRate * (o.capacitySeconds || 8));
    this.ring = new Float32Array(this.capacity);
    this.revs = new Uint32Array(this.capacity);
    this.history = new Float32Array(Math.ceil(sampleRate * (o.historySeconds || 60)));
    this.historyPos = 0;
    this.startSamples = Math.round(sampleRate * (o.startSeconds || 0.3));
    this.threshold = this.startSamples;
    this.reportSamples = Math.round(sampleRate * (o.reportSeconds || 0.05));
    this.readPos = 0;
    this.writePos = 0;
    this.take = -1;
    this.offset = 0;
    this.pending = null; // {take, frames: [...], samples}
    this.playing = false;
    this.underruns = 0;
    this.samplesPlayed = 0;
    this.sinceReport = 0;
    this.sumSquares = 0;
    this.peak = 0;
    this.lateSplices = 0;
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(msg) {
    if (msg.type === "frame") this.onFrame(msg);
    else if (msg.type === "config") this.configure(msg);
    else if (msg.type === "threshold") this.threshold = Math.round(sampleRate * msg.seconds);
    else if (msg.type === "history") this.sendHistory(msg.seconds);
    else if (msg.type === "reset") {
      this.take = -1;
      this.pending = null;
      this.writePos = this.readPos;
      this.playing = false;
    }
  }

  // The server's settings: start threshold, and a ring big enough for what it sends ahead
  // (resized only while empty, i.e. before the first frame).
  configure({ startSeconds, capacitySeconds, historySeconds }) {
    this.startSamples = this.threshold = Math.round(sampleRate * startSeconds);
    const capacity = Math.ceil(sampleRate * capacitySeconds);
    if (capacity > this.capacity && this.take < 0 && !this.pending) {
      this.capacity = capacity;
      this.ring = new Float32Array(capacity);
      this.revs = new Uint32Array(capacity);
      this.readPos = this.writePos = 0;
    }
    const history = Math.ceil(sampleRate * historySeconds);
    if (history !== this.history.length && this.samplesPlayed === 0) {
      this.history = new Float32Array(history);
      this.historyPos = 0;
    }
  }

  onFrame(f) {
    const pcm = f.pcm;
    if (f.take === this.take) {
      this.write(this.offset + f.position, pcm, f.rev);
    } else if (f.take > this.take) {
      if (!this.pending || this.pending.take !== f.take)
        this.pending = { take: f.take, frames: [], samples: 0 };
      this.pending.frames.push(f);
      this.pending.samples = f.position + pcm.length;
      // switch at once when nothing else is playing, else once the new take can carry on
      if (this.take < 0 || !this.playing || this.pending.samples >= this.startSamples)
        this.switchTake();
    } // frames of an older take: dropped
  }

  switchTake() {
    const { take, frames } = this.pending;
    this.pending = null;
    const old = this.take >= 0 && this.playing ? this.writePos : this.readPos;
    this.take = take;
    this.offset = this.readPos;
    const fadeEnd = Math.min(old, this.readPos + Math.round(sampleRate * TAKE_FADE_SECONDS));
    this.writePos = this.readPos;
    for (const f of frames) this.write(this.offset + f.position, f.pcm, f.rev, fadeEnd, old);
  }

  // Write int16 `pcm` at ring position `pos`; everything after it is replaced. Positions
  // before `fadeEnd` (and before `oldEnd`, where old audio is) crossfade from the old audio.
  write(pos, pcm, rev, fadeEnd = -1, oldEnd = -1) {
    if (pos < this.writePos && fadeEnd < 0) {
      // a replacement; late if its start already played: fade over from what is playing
      if (pos < this.readPos) {
        this.lateSplices += 1;
        fadeEnd = this.readPos + Math.round(sampleRate * LATE_FADE_SECONDS);
        oldEnd = this.writePos;
      }
    }
    if (pos > this.writePos) {
      // a gap (never sent by the server): silence rather than stale audio
      for (let p = this.writePos; p < pos; p++) this.ring[p % this.capacity] = 0;
    }
    const fadeStart = this.readPos;
    const fadeLen = Math.max(1, fadeEnd - fadeStart);
    for (let i = 0; i < pcm.length; i++) {
      const p = pos + i;
      if (p < this.readPos) continue; // already played
      if (p - this.readPos >= this.capacity) break; // the ring is full: keep what fits
      const k = p % this.capacity;
      let x = pcm[i] / 32767;
      if (p < fadeEnd && p < oldEnd) {
        const t = (p - fadeStart + 0.5) / fadeLen;
        x = this.ring[k] * Math.cos((t * Math.PI) / 2) + x * Math.sin((t * Math.PI) / 2);
      }
      this.ring[k] = x;
      this.revs[k] = rev;
    }
    this.writePos = Math.min(Math.max(pos, this.readPos) + pcm.length, this.readPos + this.capacity);
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    for (let i = 0; i < out.length; i++) {
      if (!this.playing && this.take >= 0 && this.writePos - this.readPos >= this.threshold) {
        this.playing = true;
      }
      if (this.playing && this.readPos < this.writePos) {
        const k = this.readPos % this.capacity;
        const x = this.ring[k];
        out[i] = x;
        this.rev = this.revs[k];
        this.readPos += 1;
        this.samplesPlayed += 1;
        this.sumSquares += x * x;
        if (Math.abs(x) > this.peak) this.peak = Math.abs(x);
        this.history[this.historyPos] = x;
        this.historyPos = (this.historyPos + 1) % this.history.length;
      } else {
        if (this.playing) {
          this.playing = false;
          this.underruns += 1;
          this.port.postMessage({ type: "underrun", time: currentTime, played: this.samplesPlayed });
        }
        out[i] = 0;
      }
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.sinceReport += out.length;
    // report at once when a new knob revision is heard (the page times knobs by it)
    if (this.sinceReport >= this.reportSamples || this.rev !== this.reportedRev) this.report();
    return true;
  }

  report() {
    const n = this.sinceReport;
    this.reportedRev = this.rev;
    this.port.postMessage({
      type: "status",
      time: currentTime,
      take: this.take,
      position: Math.max(0, this.readPos - this.offset),
      playing: this.playing,
      buffered: (this.writePos - this.readPos) / sampleRate,
      underruns: this.underruns,
      samplesPlayed: this.samplesPlayed,
      rev: this.rev === undefined ? -1 : this.rev,
      rms: Math.sqrt(this.sumSquares / n),
      peak: this.peak,
      lateSplices: this.lateSplices,
    });
    this.sinceReport = 0;
    this.sumSquares = 0;
    this.peak = 0;
  }

  sendHistory(seconds) {
    const n = Math.min(Math.round(seconds * sampleRate), this.samplesPlayed, this.history.length);
    const audio = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const k = (this.historyPos - n + i + this.history.length) % this.history.length;
      audio[i] = this.history[k];
    }
    this.port.postMessage({ type: "history", audio, sampleRate }, [audio.buffer]);
  }
}

registerProcessor("lofibeats-live", LiveOutput);
