import t from 'tap'
import fc from 'fast-check'
import { RangeSet } from '../../src/engine/range-set.js'

const intervals = (set: RangeSet): Array<[number, number]> => [...set]

t.test('add reports whether anything changed', async (t) => {
  const set = new RangeSet()
  t.equal(set.add(10, 20), true, 'new interval')
  t.equal(set.add(10, 20), false, 'same interval again')
  t.equal(set.add(12, 18), false, 'interval inside an existing one')
  t.equal(set.add(10, 10), false, 'empty interval')
  t.equal(set.add(20, 10), false, 'reversed interval')
  t.equal(set.add(15, 25), true, 'overlap extending the end')
  t.same(intervals(set), [[10, 25]])
  t.equal(set.bytes, 15)
  t.equal(set.add(5, 10), true, 'touching on the left')
  t.same(intervals(set), [[5, 25]])
  t.equal(set.count, 1)
  t.equal(set.bytes, 20)
})

t.test('touching intervals merge, separated ones do not', async (t) => {
  const set = new RangeSet()
  set.add(0, 10)
  set.add(10, 20)
  t.same(intervals(set), [[0, 20]], '[0,10) + [10,20) = [0,20)')
  set.add(21, 30)
  t.same(intervals(set), [[0, 20], [21, 30]], 'a one-byte gap keeps them apart')
  t.equal(set.count, 2)
  t.equal(set.add(20, 21), true, 'filling the gap changes the set')
  t.same(intervals(set), [[0, 30]], 'filling the gap merges all three')
  t.equal(set.bytes, 30)

  const many = RangeSet.of([0, 2], [4, 6], [8, 10], [12, 14])
  t.equal(many.count, 4)
  t.equal(many.add(1, 13), true)
  t.same(intervals(many), [[0, 14]], 'one add swallows several intervals')
  t.equal(many.bytes, 14)
})

t.test('intervals are kept sorted whatever the insertion order', async (t) => {
  const set = RangeSet.of([50, 60], [10, 20], [30, 40], [0, 5])
  t.same(intervals(set), [[0, 5], [10, 20], [30, 40], [50, 60]])
  t.same(set.toJSON(), [[0, 5], [10, 20], [30, 40], [50, 60]])
  t.equal(set.bytes, 5 + 10 + 10 + 10)
})

t.test('remove reports whether anything changed', async (t) => {
  const set = RangeSet.of([10, 20], [30, 40])
  t.equal(set.remove(0, 10), false, 'before the first interval, touching')
  t.equal(set.remove(20, 30), false, 'exactly the gap')
  t.equal(set.remove(40, 100), false, 'after the last interval, touching')
  t.equal(set.remove(15, 15), false, 'empty range')
  t.equal(set.remove(18, 12), false, 'reversed range')
  t.same(intervals(set), [[10, 20], [30, 40]], 'nothing changed')
  t.equal(set.bytes, 20)

  t.equal(set.remove(12, 14), true, 'a hole in the middle')
  t.same(intervals(set), [[10, 12], [14, 20], [30, 40]])
  t.equal(set.bytes, 18)

  t.equal(set.remove(5, 11), true, 'clips the start')
  t.same(intervals(set), [[11, 12], [14, 20], [30, 40]])

  t.equal(set.remove(35, 50), true, 'clips the end')
  t.same(intervals(set), [[11, 12], [14, 20], [30, 35]])

  t.equal(set.remove(11, 35), true, 'removes several whole intervals')
  t.equal(set.isEmpty, true)
  t.equal(set.count, 0)
  t.equal(set.bytes, 0)
  t.equal(set.remove(0, 1000), false, 'removing from an empty set')
})

t.test('intersects', async (t) => {
  const set = RangeSet.of([10, 20], [30, 40])
  t.equal(set.intersects(0, 10), false, 'touching from the left')
  t.equal(set.intersects(0, 11), true)
  t.equal(set.intersects(19, 21), true)
  t.equal(set.intersects(20, 30), false, 'the gap')
  t.equal(set.intersects(40, 50), false, 'touching from the right')
  t.equal(set.intersects(39, 50), true)
  t.equal(set.intersects(0, 100), true, 'spanning everything')
  t.equal(set.intersects(15, 15), false, 'empty range')
  t.equal(new RangeSet().intersects(0, 100), false, 'empty set')
})

t.test('covers', async (t) => {
  const set = RangeSet.of([10, 20], [30, 40])
  t.equal(set.covers(10, 20), true, 'exactly one interval')
  t.equal(set.covers(12, 18), true, 'inside')
  t.equal(set.covers(9, 20), false, 'one byte before')
  t.equal(set.covers(10, 21), false, 'one byte after')
  t.equal(set.covers(10, 40), false, 'across the gap')
  t.equal(set.covers(25, 25), true, 'empty range is always covered')
  t.equal(new RangeSet().covers(0, 1), false, 'empty set covers no byte')
  t.equal(new RangeSet().covers(5, 5), true, 'empty set covers the empty range')
})

t.test('bytesWithin', async (t) => {
  const set = RangeSet.of([10, 20], [30, 40])
  t.equal(set.bytesWithin(0, 100), 20)
  t.equal(set.bytesWithin(15, 35), 10)
  t.equal(set.bytesWithin(20, 30), 0, 'the gap')
  t.equal(set.bytesWithin(12, 14), 2, 'inside one interval')
  t.equal(set.bytesWithin(0, 10), 0)
  t.equal(set.bytesWithin(15, 15), 0, 'empty range')
  t.equal(set.bytesWithin(15, 12), 0, 'reversed range is never negative')
})

t.test('firstFrom', async (t) => {
  const set = RangeSet.of([10, 20], [30, 40])
  t.same(set.firstFrom(0), [10, 20], 'before everything')
  t.same(set.firstFrom(10), [10, 20])
  t.same(set.firstFrom(15), [15, 20], 'clipped to the offset')
  t.same(set.firstFrom(20), [30, 40], 'an interval ending at the offset is skipped')
  t.same(set.firstFrom(25), [30, 40])
  t.same(set.firstFrom(39), [39, 40])
  t.equal(set.firstFrom(40), undefined, 'nothing after the end')
  t.equal(new RangeSet().firstFrom(0), undefined, 'empty set')
})

t.test('truncate drops every byte at or after the size', async (t) => {
  const set = RangeSet.of([10, 20], [30, 40], [50, 60])
  set.truncate(35)
  t.same(intervals(set), [[10, 20], [30, 35]])
  t.equal(set.bytes, 15)
  set.truncate(100)
  t.same(intervals(set), [[10, 20], [30, 35]], 'growing changes nothing')
  set.truncate(10)
  t.equal(set.isEmpty, true)
  t.equal(set.bytes, 0)
})

t.test('clone, clear, addAll', async (t) => {
  const set = RangeSet.of([0, 10], [20, 30])
  const copy = set.clone()
  copy.add(10, 20)
  t.same(intervals(set), [[0, 10], [20, 30]], 'the original is untouched by the copy')
  t.same(intervals(copy), [[0, 30]])
  t.equal(set.bytes, 20)
  t.equal(copy.bytes, 30)

  const other = RangeSet.of([5, 25], [100, 110])
  set.addAll(other)
  t.same(intervals(set), [[0, 30], [100, 110]])
  t.equal(set.bytes, 40)

  set.clear()
  t.equal(set.isEmpty, true)
  t.equal(set.bytes, 0)
  t.equal(set.count, 0)
})

t.test('memory is by intervals, not by bytes', async (t) => {
  const set = new RangeSet()
  t.equal(set.add(0, 1e12), true)
  t.equal(set.count, 1, 'one interval for a terabyte')
  t.equal(set.bytes, 1e12)
  t.equal(set.covers(0, 1e12), true)
  t.equal(set.remove(5e11, 5e11 + 1), true)
  t.equal(set.count, 2, 'a one-byte hole makes exactly two intervals')
  t.equal(set.bytes, 1e12 - 1)
  t.equal(set.bytesWithin(0, 1e12), 1e12 - 1)
  set.truncate(1e6)
  t.same(intervals(set), [[0, 1e6]])
})

// ---- property test against a reference model ----

const UNIVERSE = 200

type Step = { op: 'add' | 'remove'; start: number; end: number }

const stepArb: fc.Arbitrary<Step> = fc.record({
  op: fc.constantFrom<'add' | 'remove'>('add', 'remove'),
  start: fc.integer({ min: 0, max: UNIVERSE }),
  end: fc.integer({ min: 0, max: UNIVERSE }),
})

const queryArb = fc.tuple(fc.integer({ min: 0, max: UNIVERSE }), fc.integer({ min: 0, max: UNIVERSE }))

function modelIntervals(model: boolean[]): Array<[number, number]> {
  const out: Array<[number, number]> = []
  let i = 0
  while (i < model.length) {
    if (!model[i]) {
      i++
      continue
    }
    const start = i
    while (i < model.length && model[i]) i++
    out.push([start, i])
  }
  return out
}

t.test('matches a boolean-array model under random add/remove', async (t) => {
  let runs = 0
  fc.assert(
    fc.property(fc.array(stepArb, { maxLength: 60 }), fc.array(queryArb, { minLength: 1, maxLength: 20 }), (steps, queries) => {
      runs++
      const set = new RangeSet()
      const model: boolean[] = new Array(UNIVERSE).fill(false)
      for (const { op, start, end } of steps) {
        let modelChanged = false
        for (let i = start; i < end; i++) {
          if (model[i] !== (op === 'add')) modelChanged = true
          model[i] = op === 'add'
        }
        const changed = op === 'add' ? set.add(start, end) : set.remove(start, end)
        if (changed !== modelChanged) throw new Error(`${op}(${start}, ${end}) reported ${changed}, model says ${modelChanged}`)

        // invariants after every step
        const ivs = [...set]
        for (const [s, e] of ivs) if (!(s < e)) throw new Error(`empty or reversed interval [${s}, ${e})`)
        for (let k = 1; k < ivs.length; k++) {
          // strictly greater: sorted, disjoint and not touching
          if (!(ivs[k][0] > ivs[k - 1][1])) throw new Error(`intervals ${JSON.stringify(ivs)} overlap or touch`)
        }
        const modelBytes = model.filter(Boolean).length
        if (set.bytes !== modelBytes) throw new Error(`bytes ${set.bytes} vs model ${modelBytes}`)
        if (JSON.stringify(ivs) !== JSON.stringify(modelIntervals(model))) throw new Error(`intervals ${JSON.stringify(ivs)} differ from model`)
        if (set.count !== ivs.length) throw new Error('count disagrees with iteration')
        if (set.isEmpty !== (modelBytes === 0)) throw new Error('isEmpty disagrees with model')
      }
      for (const [a, b] of queries) {
        const inRange = model.slice(a, Math.max(a, b))
        const expIntersects = inRange.some(Boolean)
        const expCovers = inRange.every(Boolean)
        const expWithin = inRange.filter(Boolean).length
        if (set.intersects(a, b) !== expIntersects) throw new Error(`intersects(${a}, ${b})`)
        if (set.covers(a, b) !== expCovers) throw new Error(`covers(${a}, ${b})`)
        if (set.bytesWithin(a, b) !== expWithin) throw new Error(`bytesWithin(${a}, ${b})`)
        const firstIdx = model.findIndex((v, i) => i >= a && v)
        const first = set.firstFrom(a)
        if (firstIdx === -1) {
          if (first !== undefined) throw new Error(`firstFrom(${a}) should be undefined`)
        } else {
          let end = firstIdx
          while (end < UNIVERSE && model[end]) end++
          if (!first || first[0] !== firstIdx || first[1] !== end) throw new Error(`firstFrom(${a}) = ${JSON.stringify(first)}, model [${firstIdx}, ${end})`)
        }
      }
      // truncate agrees too
      const cut = queries[0][0]
      const truncated = set.clone()
      truncated.truncate(cut)
      const modelCut = model.map((v, i) => v && i < cut)
      if (JSON.stringify([...truncated]) !== JSON.stringify(modelIntervals(modelCut))) throw new Error(`truncate(${cut})`)
    }),
    { numRuns: 500, seed: 20241124 },
  )
  t.equal(runs >= 500, true, 'ran every generated case')
})

t.test('add then remove of the same range restores the set', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: UNIVERSE }), fc.integer({ min: 0, max: UNIVERSE })), { maxLength: 20 }), fc.integer({ min: 0, max: UNIVERSE }), fc.integer({ min: 0, max: UNIVERSE }), (base, a, b) => {
      const [s, e] = a <= b ? [a, b] : [b, a]
      const set = new RangeSet()
      for (const [x, y] of base) set.add(Math.min(x, y), Math.max(x, y))
      set.remove(s, e) // make [s, e) absent
      const before = JSON.stringify([...set])
      set.add(s, e)
      if (!set.covers(s, e)) throw new Error('add did not cover its range')
      set.remove(s, e)
      if (JSON.stringify([...set]) !== before) throw new Error('add+remove was not a round trip')
      if (set.intersects(s, e)) throw new Error('remove left bytes behind')
    }),
    { numRuns: 300, seed: 7 },
  )
  t.pass('round trip held for every case')
})
