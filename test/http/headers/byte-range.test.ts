import t from 'tap'
import fc from 'fast-check'
import { parseRange, rangeLength, type ByteRange, type RangeRequest } from '../../../src/http/headers/byte-range.js'

const NUM_RUNS = 500

// Runs a property and turns a counterexample into one failing tap assertion.
function holds(tt: Pick<typeof t, 'notOk'>, name: string, property: fc.IProperty<any>): void {
  const out = fc.check(property, { numRuns: NUM_RUNS })
  tt.notOk(out.failed, out.failed ? `${name}\n${fc.defaultReportMessage(out)}` : name)
}

const ranges = (...pairs: [number, number][]): RangeRequest => ({
  kind: 'ranges',
  ranges: pairs.map(([start, end]) => ({ start, end })),
})
const none: RangeRequest = { kind: 'none' }
const unsatisfiable: RangeRequest = { kind: 'unsatisfiable' }

t.test('rangeLength counts an inclusive range', async (tt) => {
  tt.equal(rangeLength({ start: 0, end: 0 }), 1)
  tt.equal(rangeLength({ start: 5, end: 9 }), 5)
  tt.equal(rangeLength({ start: 0, end: 9999 }), 10000)
})

t.test('RFC 9110 §14.1.2 examples on a 10000-byte representation', async (tt) => {
  tt.same(parseRange('bytes=0-499', 10000), ranges([0, 499]), 'first 500 bytes')
  tt.same(parseRange('bytes=500-999', 10000), ranges([500, 999]), 'second 500 bytes')
  tt.same(parseRange('bytes=-500', 10000), ranges([9500, 9999]), 'final 500 bytes (suffix)')
  tt.same(parseRange('bytes=9500-', 10000), ranges([9500, 9999]), 'final 500 bytes (open-ended)')
  tt.same(parseRange('bytes=0-0,-1', 10000), ranges([0, 0], [9999, 9999]), 'first and last bytes')
  tt.same(parseRange('bytes=0-999, 4500-5499, -1000', 10000), ranges([0, 999], [4500, 5499], [9000, 9999]), 'three disjoint ranges keep request order')
  tt.same(parseRange('bytes=500-600,601-999', 10000), ranges([500, 999]), 'adjacent ranges are coalesced (§14.2)')
  tt.same(parseRange('bytes=500-700,601-999', 10000), ranges([500, 999]), 'overlapping ranges are coalesced (§14.2)')
})

t.test('range unit and header shape (RFC 9110 §14.1, §14.2)', async (tt) => {
  tt.same(parseRange(undefined, 100), none, 'no header')
  tt.same(parseRange('', 100), none, 'empty header')
  tt.same(parseRange('BYTES=0-1', 100), ranges([0, 1]), '§14.1: unit is case-insensitive (upper)')
  tt.same(parseRange('ByTeS=0-1', 100), ranges([0, 1]), '§14.1: unit is case-insensitive (mixed)')
  tt.same(parseRange('items=0-1', 100), none, '§14.2: an unknown unit is ignored')
  tt.same(parseRange('byte=0-1', 100), none, 'near-miss unit is ignored')
  tt.same(parseRange('0-1', 100), none, 'missing unit and "="')
  tt.same(parseRange('bytes 0-1', 100), none, 'missing "="')
  tt.same(parseRange('bytes =0-1', 100), none, 'no whitespace allowed before "="')
  tt.same(parseRange('bytes=', 100), none, '§14.1.1: range-set needs at least one range-spec')
  tt.same(parseRange(' bytes=0-1\t', 100), ranges([0, 1]), '§5.5: leading and trailing whitespace of the field value is not part of it')
})

t.test('list syntax (RFC 9110 §5.6.1)', async (tt) => {
  tt.same(parseRange('bytes=0-1 , 5-6', 100), ranges([0, 1], [5, 6]), 'SP around comma')
  tt.same(parseRange('bytes=0-1\t,\t5-6', 100), ranges([0, 1], [5, 6]), 'HTAB around comma')
  tt.same(parseRange('bytes=,,0-1,,', 100), ranges([0, 1]), 'empty elements are skipped')
  tt.same(parseRange('bytes=, ,\t,', 100), none, 'only empty elements is not a range-set')
  tt.same(parseRange('bytes=0-1 ,, , 5-6', 100), ranges([0, 1], [5, 6]), 'empty elements between real ones')
})

t.test('malformed range-specs invalidate the whole header (RFC 9110 §14.2)', async (tt) => {
  tt.same(parseRange('bytes=5-4', 100), none, '§14.1.1: last-pos below first-pos is invalid')
  tt.same(parseRange('bytes=0-1,5-4', 100), none, 'one invalid int-range poisons the set')
  tt.same(parseRange('bytes=-', 100), none, 'bare "-"')
  tt.same(parseRange('bytes=abc', 100), none, 'other-range')
  tt.same(parseRange('bytes=0-1,abc', 100), none, 'other-range among valid specs')
  tt.same(parseRange('bytes=1-2-3', 100), none, 'two dashes')
  tt.same(parseRange('bytes=--1', 100), none, 'double dash suffix')
  tt.same(parseRange('bytes=+1-2', 100), none, 'sign is not a DIGIT')
  tt.same(parseRange('bytes=0x10-20', 100), none, 'hex is not a DIGIT')
  tt.same(parseRange('bytes=1.5-2', 100), none, 'decimal point')
  tt.same(parseRange('bytes=1e2-', 100), none, 'exponent')
  tt.same(parseRange('bytes=1 -2', 100), none, 'no whitespace inside a range-spec')
  tt.same(parseRange('bytes=1- 2', 100), none, 'no whitespace inside a range-spec (after dash)')
  tt.same(parseRange('bytes=\u0663-4', 100), none, 'non-ASCII digits are not DIGIT')
  tt.same(parseRange('bytes=0-1;x=y', 100), none, 'parameters are not range-specs')
  tt.same(parseRange('bytes==0-1', 100), none, 'double "="')
  tt.same(parseRange('bytes=0-1,9-8', 100), none, 'invalid spec after an unsatisfiable-free set')
})

t.test('satisfiability and clamping (RFC 9110 §14.1.3)', async (tt) => {
  tt.same(parseRange('bytes=-0', 100), unsatisfiable, 'a zero suffix-length is unsatisfiable')
  tt.same(parseRange('bytes=-0,0-1', 100), ranges([0, 1]), 'unsatisfiable specs are dropped')
  tt.same(parseRange('bytes=100-', 100), unsatisfiable, 'first-pos equal to the length')
  tt.same(parseRange('bytes=100-200', 100), unsatisfiable, 'first-pos beyond the length')
  tt.same(parseRange('bytes=200-300,100-', 100), unsatisfiable, 'every spec unsatisfiable')
  tt.same(parseRange('bytes=200-300,99-', 100), ranges([99, 99]), 'one satisfiable spec survives')
  tt.same(parseRange('bytes=99-200', 100), ranges([99, 99]), 'last-pos past the end is clamped')
  tt.same(parseRange('bytes=-200', 100), ranges([0, 99]), 'suffix longer than the representation selects all of it')
  tt.same(parseRange('bytes=-100', 100), ranges([0, 99]), 'suffix exactly the length')
  tt.same(parseRange('bytes=0-', 1), ranges([0, 0]), 'one-byte representation')
})

t.test('zero-length representation: every range is unsatisfiable', async (tt) => {
  tt.same(parseRange('bytes=0-', 0), unsatisfiable)
  tt.same(parseRange('bytes=0-0', 0), unsatisfiable)
  tt.same(parseRange('bytes=-1', 0), unsatisfiable, 'no byte can be named, so no ByteRange exists')
  tt.same(parseRange('bytes=x', 0), none, 'invalid syntax is still ignored')
})

t.test('huge numbers stay exact and never throw', async (tt) => {
  const huge = '9'.repeat(400)
  tt.same(parseRange(`bytes=${huge}-`, 100), unsatisfiable, 'huge first-pos is unsatisfiable')
  tt.same(parseRange(`bytes=0-${huge}`, 100), ranges([0, 99]), 'huge last-pos is clamped')
  tt.same(parseRange(`bytes=-${huge}`, 100), ranges([0, 99]), 'huge suffix selects everything')
  tt.same(parseRange(`bytes=${huge}-${huge}8`, 100), unsatisfiable, 'huge but ordered')
  tt.same(parseRange(`bytes=${huge}8-${huge}`, 100), none, 'huge and reversed is invalid')
  tt.same(parseRange('bytes=9007199254740993-9007199254740992', 2 ** 60), none, 'reversal past 2^53 is detected exactly')
  tt.same(parseRange('bytes=00000000000000000000000000005-0000000000000000000000000009', 100), ranges([5, 9]), 'leading zeros')
  const max = Number.MAX_SAFE_INTEGER
  tt.same(parseRange('bytes=9007199254740990-', max), ranges([max - 1, max - 1]), 'largest safe size')
  tt.same(parseRange('bytes=-1', max), ranges([max - 1, max - 1]), 'suffix at the largest safe size')
})

t.test('invalid sizes are served whole', async (tt) => {
  tt.same(parseRange('bytes=0-1', -1), none)
  tt.same(parseRange('bytes=0-1', 1.5), none)
  tt.same(parseRange('bytes=0-1', Number.NaN), none)
  tt.same(parseRange('bytes=0-1', Infinity), none)
})

t.test('abusive range sets are never amplified', async (tt) => {
  tt.same(parseRange('bytes=50-59,0-9', 100), ranges([50, 59], [0, 9]), 'disjoint ranges keep request order')
  tt.same(parseRange('bytes=50-59,0-9,10-19', 100), ranges([0, 19], [50, 59]), 'one touching pair sorts and merges the whole set')
  tt.same(parseRange('bytes=0-9,0-9,0-9', 100), ranges([0, 9]), 'duplicates collapse')
  tt.same(parseRange('bytes=0-,0-,0-,0-', 100), ranges([0, 99]), 'repeated whole ranges collapse')
  tt.same(parseRange('bytes=-1,-2,-3,0-', 100), ranges([0, 99]), 'nested suffixes collapse')
  tt.same(parseRange('bytes=90-99,0-5,3-8', 100), ranges([0, 8], [90, 99]), 'overlap anywhere in the set sorts')
  tt.same(parseRange('bytes=0-1,3-4', 100), ranges([0, 1], [3, 4]), 'a one-byte gap is not touching')
  tt.same(parseRange('bytes=3-4,0-2', 100), ranges([0, 4]), 'reverse-order adjacency is touching')
})

t.test('maxRanges and header length limit', async (tt) => {
  const disjoint = (n: number) => 'bytes=' + Array.from({ length: n }, (_, i) => `${i * 3}-${i * 3}`).join(',')
  tt.equal((parseRange(disjoint(100), 1000) as { ranges: ByteRange[] }).ranges.length, 100, 'default allows 100')
  tt.same(parseRange(disjoint(101), 1000), none, 'default refuses 101 by serving whole')
  tt.same(parseRange('bytes=0-0,2-2,4-4', 10, { maxRanges: 2 }), none, 'over a custom limit')
  tt.same(parseRange('bytes=0-0,2-2', 10, { maxRanges: 2 }), ranges([0, 0], [2, 2]), 'at a custom limit')
  tt.same(parseRange('bytes=0-1,1-2,2-3', 10, { maxRanges: 1 }), ranges([0, 3]), 'the limit applies after merging')
  tt.same(parseRange('bytes=20-30', 10, { maxRanges: 0 }), unsatisfiable, 'unsatisfiable wins over the limit')

  const exact = 'bytes=0-1' + ','.repeat(8192 - 'bytes=0-1'.length)
  tt.equal(exact.length, 8192)
  tt.same(parseRange(exact, 10), ranges([0, 1]), 'an 8 KiB header is parsed')
  tt.same(parseRange(exact + ',', 10), none, 'a header over 8 KiB is ignored')
})

// ---------- property tests against a byte-set reference model ----------

type Spec =
  | { kind: 'int'; first: bigint; last: bigint }
  | { kind: 'open'; first: bigint }
  | { kind: 'suffix'; length: bigint }
  | { kind: 'empty' }

const position = fc.oneof(
  { weight: 8, arbitrary: fc.bigInt({ min: 0n, max: 120n }) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 10n ** 30n }) },
)
const specArb: fc.Arbitrary<Spec> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('int' as const), first: position, last: position }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('open' as const), first: position }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('suffix' as const), length: position }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'empty' as const }) },
)
const ows = fc.constantFrom('', '', ' ', '\t', '  ')
const zeros = fc.constantFrom('', '', '', '0', '000')
const unit = fc.constantFrom('bytes', 'BYTES', 'Bytes', 'bYtEs')

function render(spec: Spec, pad: string): string {
  switch (spec.kind) {
    case 'int': return `${pad}${spec.first}-${pad}${spec.last}`
    case 'open': return `${pad}${spec.first}-`
    case 'suffix': return `-${pad}${spec.length}`
    case 'empty': return ''
  }
}

const headerArb = fc
  .tuple(unit, fc.array(fc.tuple(specArb, ows, ows, zeros), { minLength: 1, maxLength: 8 }))
  .map(([u, items]) => ({
    specs: items.map(([s]) => s),
    header: `${u}=` + items.map(([s, before, after, pad]) => before + render(s, pad) + after).join(','),
  }))

// The model names bytes one at a time, so it shares no arithmetic with the implementation.
function selectedBytes(spec: Spec, size: number): Set<number> {
  const out = new Set<number>()
  for (let i = 0; i < size; i++) {
    const b = BigInt(i)
    const hit =
      spec.kind === 'int' ? b >= spec.first && b <= spec.last
        : spec.kind === 'open' ? b >= spec.first
          : spec.kind === 'suffix' ? BigInt(size) - b <= spec.length
            : false
    if (hit) out.add(i)
  }
  return out
}

function touches(a: Set<number>, b: Set<number>): boolean {
  for (const x of a) if (b.has(x) || b.has(x - 1) || b.has(x + 1)) return true
  return false
}

function runs(bytes: Set<number>): ByteRange[] {
  const sorted = [...bytes].sort((x, y) => x - y)
  const out: ByteRange[] = []
  for (const x of sorted) {
    const last = out[out.length - 1]
    if (last !== undefined && last.end === x - 1) last.end = x
    else out.push({ start: x, end: x })
  }
  return out
}

function model(specs: Spec[], size: number, maxRanges: number): RangeRequest {
  const real = specs.filter((s) => s.kind !== 'empty')
  if (real.length === 0) return none
  if (real.some((s) => s.kind === 'int' && s.last < s.first)) return none
  const sets = real.map((s) => selectedBytes(s, size)).filter((s) => s.size > 0)
  if (sets.length === 0) return unsatisfiable
  const anyTouch = sets.some((a, i) => sets.some((b, j) => i < j && touches(a, b)))
  const result = anyTouch ? runs(new Set(sets.flatMap((s) => [...s]))) : sets.map((s) => runs(s)[0]!)
  return result.length > maxRanges ? none : { kind: 'ranges', ranges: result }
}

t.test('properties', async (tt) => {
  const size = fc.nat({ max: 100 })
  const maxRanges = fc.integer({ min: 1, max: 6 })

  holds(tt, 'agrees with the byte-set model', fc.property(headerArb, size, maxRanges, ({ specs, header }, n, max) => {
    const got = parseRange(header, n, { maxRanges: max })
    const want = model(specs, n, max)
    if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`got ${JSON.stringify(got)} want ${JSON.stringify(want)}`)
  }))

  const anyHeader = fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: fc.constantFrom(...'0123456789-, \t='), maxLength: 40 }).map((s) => 'bytes=' + s),
    headerArb.map((h) => h.header),
  )
  const anySize = fc.oneof(fc.nat({ max: 1000 }), fc.constant(Number.MAX_SAFE_INTEGER), fc.nat())

  holds(tt, 'never throws and never returns bytes outside the representation', fc.property(anyHeader, anySize, (header, n) => {
    const got = parseRange(header, n)
    if (got.kind !== 'ranges') return
    if (got.ranges.length === 0) throw new Error('empty ranges')
    let total = 0
    for (const r of got.ranges) {
      if (!(Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end))) throw new Error('non-integer bound')
      if (r.start < 0 || r.start > r.end || r.end > n - 1) throw new Error(`out of bounds ${JSON.stringify(r)}`)
      total += rangeLength(r)
    }
    if (total > n) throw new Error(`amplified: ${total} bytes of ${n}`)
  }))

  const invalidSpec = fc.constantFrom('5-4', 'x', '-', '1-2-3', '1 -2', '+1-', 'a-b', '1-2;q', '100-99')
  holds(tt, 'one malformed element makes the whole header invalid', fc.property(headerArb, invalidSpec, fc.nat(), size, ({ header }, bad, at, n) => {
    const [u, set] = header.split('=') as [string, string]
    const items = set.split(',')
    items.splice(at % (items.length + 1), 0, bad)
    const got = parseRange(`${u}=${items.join(',')}`, n)
    if (got.kind !== 'none') throw new Error(JSON.stringify(got))
  }))

  holds(tt, 'returned ranges never overlap or touch one another', fc.property(headerArb, size, ({ header }, n) => {
    const got = parseRange(header, n, { maxRanges: Infinity })
    if (got.kind !== 'ranges') return
    const rs = got.ranges
    const sorted = [...rs].sort((a, b) => a.start - b.start)
    const disjoint = sorted.every((r, i) => i === 0 || r.start > sorted[i - 1]!.end + 1)
    if (!disjoint) throw new Error(`touching ranges returned ${JSON.stringify(rs)}`)
  }))
})
