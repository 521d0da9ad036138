// public/eta.js, the status page's lag and ETA figures (the module the browser loads from /eta.js,
// for a CLI to print the same): a throttled replica counts down at its throttle between the pieces
// write-behind copies (its lag moves in steps of up to 1 MiB), an unthrottled or overdue one drains
// at the rate measured over a sliding window, net of new writes; the volume's ETA is its slowest
// replica's; and the text shown.
import t from 'tap'
import {
  DRAIN_WINDOW_MS,
  estimateEta,
  etaSeconds,
  formatBytes,
  formatDuration,
  formatEta,
  formatEtaBasis,
  formatRate,
  LagTracker,
  MIN_SPAN_MS,
  OVERDUE_FACTOR,
  OVERDUE_SECONDS,
  RateWindow,
} from '../../public/eta.js'

const KiB = 1024
const MiB = 1024 * KiB

t.test('RateWindow: a falling counter drains at the rate it went down over the window', async (t) => {
  const w = new RateWindow(5000, true)
  t.equal(w.rate(), null, 'no sample: no rate')
  w.add(0, 512 * KiB)
  t.equal(w.rate(), null, 'one sample: no rate')
  w.add(100, 505 * KiB)
  t.equal(w.rate(200), null, 'two samples closer than the minimum span: no rate')
  w.add(1000, 448 * KiB)
  t.equal(w.rate(200), 64 * KiB, '64 KiB down in 1 s: 64 KiB/s')
  for (let s = 2; s <= 10; s++) w.add(s * 1000, 1 * MiB - s * 64 * KiB)
  t.equal(w.rate(), 64 * KiB, 'steady: 64 KiB/s')
  // New writes add 100 KiB in the last second: the net rate over the last 5 s drops by 20 KiB/s.
  w.add(11_000, 1 * MiB - 11 * 64 * KiB + 100 * KiB)
  t.equal(w.rate(), (5 * 64 * KiB - 100 * KiB) / 5, 'net of what new writes added')
  w.add(11_000, 1 * MiB - 11 * 64 * KiB)
  t.equal(w.rate(), 64 * KiB, 'a sample at the same time replaces the last one')
  w.reset()
  t.equal(w.rate(), null, 'reset: no rate')
})

t.test('RateWindow: only the last window counts (one older sample kept to span it); a rising counter', async (t) => {
  const w = new RateWindow(5000, true)
  // 10 KiB/s for 10 s, then 40 KiB/s.
  let value = 4 * MiB
  for (let s = 0; s <= 10; s++) w.add(s * 1000, (value -= s === 0 ? 0 : 10 * KiB))
  for (let s = 11; s <= 20; s++) w.add(s * 1000, (value -= 40 * KiB))
  t.equal(w.rate(), 40 * KiB, 'the old rate is forgotten')
  const rising = new RateWindow(1000)
  rising.add(0, 0)
  rising.add(500, 1000)
  t.equal(rising.rate(), 2000, 'units per second')
})

t.test('etaSeconds', async (t) => {
  t.equal(etaSeconds(0, null), 0, 'nothing left: 0')
  t.equal(etaSeconds(640 * KiB, 64 * KiB), 10, '640 KiB at 64 KiB/s: 10 s')
  t.equal(etaSeconds(1, 0), null, 'not shrinking: unknown')
  t.equal(etaSeconds(1, -5), null, 'growing: unknown')
  t.equal(etaSeconds(1, null), null, 'no rate: unknown')
})

t.test('estimateEta: at the throttle, counting down; measured when unthrottled or overdue', async (t) => {
  const behind = { state: 'behind', dirtyBytes: 1 * MiB, maxBytesPerSecond: 64 * KiB }
  t.same(estimateEta(behind), { etaSeconds: 16, rateBytesPerSecond: 64 * KiB, basis: 'throttle' }, '1 MiB at 64 KiB/s: 16 s')
  t.same(estimateEta({ ...behind, secondsSinceChange: 10, measuredRate: 0 }), { etaSeconds: 6, rateBytesPerSecond: 64 * KiB, basis: 'throttle' }, '10 s into it: 6 s (the measured 0 B/s is a step not yet taken)')
  t.same(estimateEta({ ...behind, secondsSinceChange: 20 }).etaSeconds, 0, 'a little late: any moment now')
  const overdueAfter = 16 * OVERDUE_FACTOR + OVERDUE_SECONDS
  t.equal(estimateEta({ ...behind, secondsSinceChange: overdueAfter }).basis, 'throttle', `overdue only after ${overdueAfter} s`)
  t.same(
    estimateEta({ ...behind, secondsSinceChange: overdueAfter + 1, measuredRate: 16 * KiB }),
    { etaSeconds: 64, rateBytesPerSecond: 16 * KiB, basis: 'measured' },
    'overdue: the pace write-behind really keeps (a busy source, a slow disk)',
  )
  t.same(estimateEta({ ...behind, secondsSinceChange: overdueAfter + 1, measuredRate: 0 }), { etaSeconds: null, rateBytesPerSecond: 0, basis: null }, 'overdue and not draining: unknown')
  const unthrottled = { state: 'resyncing', dirtyBytes: 300 * MiB, maxBytesPerSecond: null }
  t.same(estimateEta({ ...unthrottled, measuredRate: 100 * MiB }), { etaSeconds: 3, rateBytesPerSecond: 100 * MiB, basis: 'measured' }, 'unthrottled: over the measured rate')
  t.same(estimateEta({ ...unthrottled, measuredRate: -5 * MiB }), { etaSeconds: null, rateBytesPerSecond: -5 * MiB, basis: null }, 'growing faster than it drains: unknown')
  t.same(estimateEta(unthrottled), { etaSeconds: null, rateBytesPerSecond: null, basis: null }, 'one look: unknown')
  t.same(estimateEta({ state: 'in-sync', dirtyBytes: 0, maxBytesPerSecond: 64 * KiB }), { etaSeconds: 0, rateBytesPerSecond: null, basis: 'in-sync' }, 'in sync: 0')
  t.same(estimateEta({ ...behind, state: 'failed', measuredRate: 64 * KiB }), { etaSeconds: null, rateBytesPerSecond: null, basis: null }, 'failed: none (it needs a resync)')
})

t.test('LagTracker: 2.5 MiB behind a replica throttled to 64 KiB/s, copied a MiB at a time, looked at once a second', async (t) => {
  t.equal(DRAIN_WINDOW_MS, 10_000)
  t.equal(MIN_SPAN_MS, 500)
  const tracker = new LagTracker()
  const status = (dirty: number) => ({
    name: 'beta',
    replicas: [
      { id: 'fast', state: 'in-sync', dirtyBytes: 0, maxBytesPerSecond: null },
      { id: 'slow', state: dirty > 0 ? 'behind' : 'in-sync', dirtyBytes: dirty, maxBytesPerSecond: 64 * KiB },
    ],
  })
  // What write-behind does: a 1 MiB piece every 16 s, the last half piece 8 s after.
  const lagAt = (s: number) => (s < 16 ? 2.5 * MiB : s < 32 ? 1.5 * MiB : s < 40 ? 0.5 * MiB : 0)
  const etas: number[] = []
  for (let s = 0; s <= 41; s++) {
    const look = tracker.sampleVolume(status(lagAt(s)), 5000 + s * 1000)
    const slow = look.replicas.get('slow')!
    etas.push(slow.etaSeconds!)
    if (s === 0) {
      t.same(slow, { dirtyBytes: 2.5 * MiB, drainBytesPerSecond: null, etaSeconds: 40, rateBytesPerSecond: 64 * KiB, etaBasis: 'throttle' }, 'first look: 40 s at its throttle')
      t.equal(look.etaSeconds, 40, "the volume's ETA is its slowest replica's")
      t.same(look.replicas.get('fast'), { dirtyBytes: 0, drainBytesPerSecond: null, etaSeconds: 0, rateBytesPerSecond: null, etaBasis: 'in-sync' }, 'the in-sync replica')
      t.equal(formatEta(slow), '40s')
      t.equal(formatEtaBasis(slow), 'at its throttle, 64.0 KiB/s')
    }
    if (s === 10) t.equal(slow.drainBytesPerSecond, 0, 'no piece landed yet: a measured drain of 0')
    if (s === 17) t.ok(slow.drainBytesPerSecond! > 64 * KiB, `a piece landed: the measured drain jumps (${slow.drainBytesPerSecond} B/s), the ETA does not`)
  }
  t.same(etas, [40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0], 'the ETA counts down by a second a second, across the steps')
  const done = tracker.sampleVolume(status(0), 50_000)
  t.same([done.inSync, done.etaSeconds], [true, 0], 'in sync: 0')
})

t.test('LagTracker: new writes start the count again from the new lag; unthrottled replicas are measured', async (t) => {
  const tracker = new LagTracker()
  const slow = (dirtyBytes: number, maxBytesPerSecond: number | null = 64 * KiB) => ({ id: 'slow', state: 'behind', dirtyBytes, maxBytesPerSecond })
  t.equal(tracker.sample('v', slow(640 * KiB), 0).etaSeconds, 10)
  t.equal(tracker.sample('v', slow(640 * KiB), 4000).etaSeconds, 6)
  t.equal(tracker.sample('v', slow(1280 * KiB), 5000).etaSeconds, 20, 'a write doubled the lag: 20 s from now')
  // The throttle lifted: copied at disk speed, measured.
  const unthrottled = new LagTracker()
  unthrottled.sample('v', slow(300 * MiB, null), 0)
  t.same(unthrottled.sample('v', slow(300 * MiB, null), 400), { dirtyBytes: 300 * MiB, drainBytesPerSecond: null, etaSeconds: null, rateBytesPerSecond: null, etaBasis: null }, 'too soon to tell')
  t.same(unthrottled.sample('v', slow(200 * MiB, null), 1000), { dirtyBytes: 200 * MiB, drainBytesPerSecond: 100 * MiB, etaSeconds: 2, rateBytesPerSecond: 100 * MiB, etaBasis: 'measured' }, '100 MiB/s: 2 s')
  const failed = unthrottled.sample('v', { id: 'slow', state: 'failed', dirtyBytes: 10, maxBytesPerSecond: null }, 2000)
  t.same([failed.etaSeconds, failed.etaBasis], [null, null], 'failed: no ETA')
  const unknown = new LagTracker().sampleVolume({ name: 'v', replicas: [{ id: 'a', state: 'in-sync', dirtyBytes: 0 }, { id: 'b', state: 'behind', dirtyBytes: 1 }] }, 0)
  t.same([unknown.inSync, unknown.etaSeconds], [false, null], "a replica with no ETA yet: the volume's is unknown")
})

t.test('LagTracker: a replica removed and added again starts over; forget()', async (t) => {
  const tracker = new LagTracker()
  tracker.sample('v', { id: 'r', state: 'behind', dirtyBytes: 1000 }, 0)
  tracker.sample('v', { id: 'r', state: 'behind', dirtyBytes: 500 }, 1000)
  tracker.sampleVolume({ name: 'v', replicas: [] }, 2000)
  t.equal(tracker.sample('v', { id: 'r', state: 'behind', dirtyBytes: 400 }, 3000).drainBytesPerSecond, null, 'no rate across the removal')
  tracker.sample('w', { id: 'r', state: 'behind', dirtyBytes: 1000 }, 0)
  tracker.forget('w')
  t.equal(tracker.sample('w', { id: 'r', state: 'behind', dirtyBytes: 900 }, 1000).drainBytesPerSecond, null, 'forget(volume)')
  t.equal(tracker.sample('v', { id: 'r', state: 'behind', dirtyBytes: 300 }, 4000).drainBytesPerSecond, 100, 'other volumes kept')
  tracker.forget()
  t.equal(tracker.sample('v', { id: 'r', state: 'behind', dirtyBytes: 200 }, 5000).drainBytesPerSecond, null, 'forget(): everything')
})

t.test('what is shown', async (t) => {
  t.same([0, 512, 1536, 64 * KiB, 196_815, 5 * MiB, 3 * 2 ** 40].map(formatBytes), ['0 B', '512 B', '1.50 KiB', '64.0 KiB', '192 KiB', '5.00 MiB', '3.00 TiB'])
  t.equal(formatBytes(NaN), '?')
  t.same([null, 65536, 1000.4].map(formatRate), ['-', '64.0 KiB/s', '1000 B/s'])
  t.same([null, 0, 0.4, 42, 185, 7620, 400 * 3600].map(formatDuration), ['-', '0s', '0s', '42s', '3m05s', '2h07m', '16d'])
  t.equal(formatEta({ etaSeconds: null }), '-')
  t.equal(formatEtaBasis({ etaBasis: 'measured', rateBytesPerSecond: 3.2 * MiB }), 'at 3.20 MiB/s measured')
  t.equal(formatEtaBasis({ etaBasis: null, rateBytesPerSecond: null }), '')
  t.equal(formatEtaBasis({ etaBasis: 'in-sync', rateBytesPerSecond: null }), '')
})
