// coarsen: intervals bounded for display by filling the smallest gaps.
import fc from 'fast-check'
import t from 'tap'
import { coarsen, type Interval } from '../../src/http/coarse-ranges.js'

t.test('small sets pass through; larger ones lose their smallest gaps first', async (t) => {
  t.same(coarsen([], 3), { bytes: 0, count: 0, intervals: [], merged: false })
  t.same(coarsen([[0, 10], [20, 30]], 2), { bytes: 20, count: 2, intervals: [[0, 10], [20, 30]], merged: false })
  // Gaps: 5 (10-15), 50 (20-70), 1 (80-81): the 1 and then the 5 go.
  const ivs: Interval[] = [[0, 10], [15, 20], [70, 80], [81, 90]]
  t.same(coarsen(ivs, 3).intervals, [[0, 10], [15, 20], [70, 90]], 'one gap filled: the smallest')
  t.same(coarsen(ivs, 2).intervals, [[0, 20], [70, 90]], 'two gaps filled')
  t.same(coarsen(ivs, 1), { bytes: 34, count: 4, intervals: [[0, 90]], merged: true }, 'one interval: the hull; bytes stay exact')
  t.same(coarsen([[0, 1], [2, 3], [4, 5]], 2).intervals, [[0, 3], [4, 5]], 'equal gaps: the earliest goes first')
  t.throws(() => coarsen(ivs, 0), RangeError)
})

const sortedDisjoint = fc
  .uniqueArray(fc.integer({ min: 0, max: 10_000 }), { minLength: 0, maxLength: 60 })
  .map((points) => {
    const sorted = [...points].sort((a, b) => a - b)
    const out: Interval[] = []
    // Pairs of points, kept apart by at least one byte so intervals never touch.
    for (let i = 0; i + 1 < sorted.length; i += 2) if (!out.length || sorted[i] > out.at(-1)![1]) out.push([sorted[i], sorted[i + 1]])
    return out
  })

t.test('properties: bounded, covering, made of original boundaries, exact bytes', async (t) => {
  fc.assert(
    fc.property(sortedDisjoint, fc.integer({ min: 1, max: 80 }), (ivs, max) => {
      const r = coarsen(ivs, max)
      const starts = new Set(ivs.map((iv) => iv[0]))
      const ends = new Set(ivs.map((iv) => iv[1]))
      if (r.intervals.length !== Math.min(ivs.length, max)) return false
      if (r.merged !== ivs.length > max) return false
      if (r.count !== ivs.length || r.bytes !== ivs.reduce((n, [s, e]) => n + e - s, 0)) return false
      for (let i = 1; i < r.intervals.length; i++) if (r.intervals[i][0] <= r.intervals[i - 1][1]) return false
      if (!r.intervals.every(([s, e]) => starts.has(s) && ends.has(e))) return false
      return ivs.every(([s, e]) => r.intervals.some(([rs, re]) => rs <= s && e <= re))
    }),
    { numRuns: 500 },
  )
  t.pass('500 random sets')
})
