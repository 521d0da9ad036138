// Lag and ETA to in-sync, from successive looks at replicas' dirtyBytes: what the status page shows,
// and what a CLI's `status --watch` should print, computed the same way. Pure (no DOM, no clock of
// its own: the caller passes the time of each look) and plain JavaScript, so the browser loads it as
// a module from /eta.js and Node imports it as it is. Types: eta.d.ts beside it.
//
// Write-behind copies a replica's dirty ranges a piece at a time (up to 1 MiB), each piece after the
// pause its throttle (maxBytesPerSecond) asks, and a piece leaves dirtyBytes only once it has landed.
// So a throttled replica's lag does not drain smoothly: 1 MiB behind at 64 KiB/s reads 1 MiB for 16 s,
// then 0. A rate measured from dirtyBytes alone would be 0, then far above the throttle. Hence:
//  - a throttled replica is copied at its throttle (write-behind never beats it, and runs at it while
//    it is behind): the ETA is its lag over the throttle, less the time the lag has been what it is
//    ('throttle' basis), counting down between pieces. New writes change the lag and start the count
//    again from the new figure;
//  - an unthrottled replica, or a throttled one overdue (write-behind slower than its throttle: a
//    busy source, a slow disk or remote, a resync waiting for idle time), drains at the rate its lag
//    was seen going down over the last DRAIN_WINDOW_MS, net of what new writes added ('measured');
//  - with neither (not draining yet), it is unknown; a failed replica has none: nothing drains it
//    until it is resynced.

/** How far back the measured drain rate looks. */
export const DRAIN_WINDOW_MS = 10_000
/** The shortest span of looks a drain rate is measured over. */
export const MIN_SPAN_MS = 500
/** A throttled replica is overdue (its pace measured instead) past this many times the throttle's time, plus OVERDUE_SECONDS. */
export const OVERDUE_FACTOR = 1.5
export const OVERDUE_SECONDS = 2

/**
 * A rate over the last `windowMs` of samples of a counter: bytes sent (rising), or bytes still
 * dirty (`falling: true`: the rate is how fast it drains, net of what new writes add).
 */
export class RateWindow {
  /** @type {Array<{ at: number, value: number }>} */
  #samples = []
  #windowMs
  #falling

  constructor(windowMs = DRAIN_WINDOW_MS, falling = false) {
    this.#windowMs = windowMs
    this.#falling = falling
  }

  /** A sample at `at` (milliseconds, any monotonic origin); one not after the last replaces its value. */
  add(at, value) {
    const samples = this.#samples
    const last = samples[samples.length - 1]
    if (last && at <= last.at) {
      last.value = value
      return
    }
    samples.push({ at, value })
    // One sample older than the window stays, so the rate spans the whole window once it can.
    while (samples.length > 2 && samples[1].at <= at - this.#windowMs) samples.shift()
  }

  /** Units per second over the window; null until two samples span at least `minSpanMs`. */
  rate(minSpanMs = 200) {
    const samples = this.#samples
    const first = samples[0]
    const last = samples[samples.length - 1]
    if (!first || first === last || last.at - first.at < minSpanMs) return null
    const delta = this.#falling ? first.value - last.value : last.value - first.value
    return (delta * 1000) / (last.at - first.at)
  }

  reset() {
    this.#samples = []
  }
}

/** Seconds until `remaining` reaches 0 at `rate` per second: 0 when nothing remains, null when it does not shrink. */
export function etaSeconds(remaining, rate) {
  if (remaining <= 0) return 0
  if (rate === null || rate <= 0) return null
  return remaining / rate
}

/**
 * A replica's ETA to in-sync: { etaSeconds, rateBytesPerSecond, basis } from
 *  - state, dirtyBytes and maxBytesPerSecond, as its status says;
 *  - secondsSinceChange: how long its dirtyBytes have been what they are;
 *  - measuredRate: the net rate its lag was seen going down (bytes/s; null before two looks).
 * basis 'throttle' (copied at maxBytesPerSecond), 'measured', 'in-sync' (nothing lacking), or null
 * (unknown: not draining yet, or failed).
 */
export function estimateEta({ state, dirtyBytes, maxBytesPerSecond = null, secondsSinceChange = 0, measuredRate = null }) {
  if (state === 'failed') return { etaSeconds: null, rateBytesPerSecond: null, basis: null }
  if (dirtyBytes <= 0) return { etaSeconds: 0, rateBytesPerSecond: measuredRate, basis: 'in-sync' }
  if (maxBytesPerSecond !== null && maxBytesPerSecond > 0) {
    const expected = dirtyBytes / maxBytesPerSecond
    // Overdue once well past what the throttle allows: then the throttle is not what sets the pace.
    if (secondsSinceChange <= expected * OVERDUE_FACTOR + OVERDUE_SECONDS) {
      return { etaSeconds: Math.max(0, expected - secondsSinceChange), rateBytesPerSecond: maxBytesPerSecond, basis: 'throttle' }
    }
  }
  const eta = etaSeconds(dirtyBytes, measuredRate)
  if (eta !== null) return { etaSeconds: eta, rateBytesPerSecond: measuredRate, basis: 'measured' }
  return { etaSeconds: null, rateBytesPerSecond: measuredRate, basis: null }
}

/**
 * Every replica's lag figures across successive looks at volume statuses (GET /volumes or
 * GET /volumes/{name}), by volume and replica id.
 */
export class LagTracker {
  /** @type {Map<string, { window: RateWindow, lag: number, changedAt: number }>} */
  #replicas = new Map()
  #windowMs
  #minSpanMs

  constructor(windowMs = DRAIN_WINDOW_MS, minSpanMs = MIN_SPAN_MS) {
    this.#windowMs = windowMs
    this.#minSpanMs = minSpanMs
  }

  /**
   * One look at a replica (its state, dirtyBytes and maxBytesPerSecond) at `at` milliseconds (any
   * monotonic origin): { dirtyBytes, drainBytesPerSecond (measured, net), etaSeconds,
   * rateBytesPerSecond (the one the ETA rests on), etaBasis }, rates rounded to a byte/s and the
   * ETA to a tenth of a second.
   */
  sample(volume, replica, at) {
    const key = `${volume}\u0000${replica.id}`
    let seen = this.#replicas.get(key)
    if (!seen) this.#replicas.set(key, (seen = { window: new RateWindow(this.#windowMs, true), lag: replica.dirtyBytes, changedAt: at }))
    if (replica.dirtyBytes !== seen.lag) {
      seen.lag = replica.dirtyBytes
      seen.changedAt = at
    }
    seen.window.add(at, replica.dirtyBytes)
    const drain = seen.window.rate(this.#minSpanMs)
    const eta = estimateEta({
      state: replica.state,
      dirtyBytes: replica.dirtyBytes,
      maxBytesPerSecond: replica.maxBytesPerSecond ?? null,
      secondsSinceChange: Math.max(0, at - seen.changedAt) / 1000,
      measuredRate: drain,
    })
    const round = (n) => (n === null ? null : Math.round(n))
    return {
      dirtyBytes: replica.dirtyBytes,
      drainBytesPerSecond: round(drain),
      etaSeconds: eta.etaSeconds === null ? null : Math.round(eta.etaSeconds * 10) / 10,
      rateBytesPerSecond: round(eta.rateBytesPerSecond),
      etaBasis: eta.basis,
    }
  }

  /**
   * One look at a whole volume status at `at`: its replicas' figures by id, and the volume's own
   * ETA (its slowest replica's; 0 when every one is in sync, null when one is unknown). Replicas no
   * longer in it are forgotten.
   */
  sampleVolume(status, at) {
    const replicas = new Map()
    for (const replica of status.replicas) replicas.set(replica.id, this.sample(status.name, replica, at))
    for (const key of this.#replicas.keys()) {
      const [volume, id] = key.split('\u0000')
      if (volume === status.name && !replicas.has(id)) this.#replicas.delete(key)
    }
    const inSync = status.replicas.every((r) => r.state === 'in-sync' && r.dirtyBytes === 0)
    const etas = [...replicas.values()].map((r) => r.etaSeconds)
    const eta = inSync ? 0 : etas.some((e) => e === null) ? null : Math.max(0, ...etas)
    return { inSync, etaSeconds: eta, replicas }
  }

  /** Forgets a volume (deleted), or everything. */
  forget(volume) {
    for (const key of this.#replicas.keys()) if (volume === undefined || key.startsWith(`${volume}\u0000`)) this.#replicas.delete(key)
  }
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']

/** 512 B, 1.50 KiB, 64.0 KiB, 196 KiB; '?' when not a number. */
export function formatBytes(n) {
  if (!Number.isFinite(n)) return '?'
  let value = n
  let unit = 0
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : value < 100 ? 1 : 0)} ${UNITS[unit]}`
}

/** 64.0 KiB/s; '-' when unknown. */
export function formatRate(bytesPerSecond) {
  return bytesPerSecond === null || bytesPerSecond === undefined ? '-' : `${formatBytes(Math.round(bytesPerSecond))}/s`
}

/** 0s, 42s, 3m05s, 2h07m, 5d; '-' when unknown. */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '-'
  const s = Math.max(0, Math.round(seconds))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  if (s < 100 * 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
  return `${Math.floor(s / 86400)}d`
}

/** An ETA as shown: '8s', '2m05s', '-' when unknown. */
export function formatEta(eta) {
  return eta.etaSeconds === null ? '-' : formatDuration(eta.etaSeconds)
}

/** What an ETA rests on, in words: 'at its throttle, 64.0 KiB/s', 'at 3.20 MiB/s measured', ''. */
export function formatEtaBasis(eta) {
  if (eta.etaBasis === 'throttle') return `at its throttle, ${formatRate(eta.rateBytesPerSecond)}`
  if (eta.etaBasis === 'measured') return `at ${formatRate(eta.rateBytesPerSecond)} measured`
  return ''
}
