import t from 'tap'
import fc from 'fast-check'
import { parseContentRange, type ContentRange } from '../../../src/http/headers/content-range.js'

const NUM_RUNS = 500

// Runs a property and turns a counterexample into one failing tap assertion.
function holds(tt: Pick<typeof t, 'notOk'>, name: string, property: fc.IProperty<any>): void {
  const out = fc.check(property, { numRuns: NUM_RUNS })
  tt.notOk(out.failed, out.failed ? `${name}\n${fc.defaultReportMessage(out)}` : name)
}

const ok = (first: number, last: number, completeLength: number | null) => ({ ok: true, value: { first, last, completeLength } })

function refused(tt: Pick<typeof t, 'equal' | 'match'>, header: string, why: string, reason?: RegExp): void {
  const r = parseContentRange(header)
  tt.equal(r.ok, false, `${why}: ${JSON.stringify(header)}`)
  if (!r.ok) tt.match(r.reason, reason ?? /^Content-Range .+\.$/, `${why}: reason is a sentence`)
}

t.test('accepted forms (RFC 9110 §14.4)', async (tt) => {
  tt.same(parseContentRange('bytes 42-1233/1234'), ok(42, 1233, 1234), '§14.4 example with a known length')
  tt.same(parseContentRange('bytes 42-1233/*'), ok(42, 1233, null), '§14.4 example with an unknown length')
  tt.same(parseContentRange('bytes 0-0/1'), ok(0, 0, 1), 'one byte of one')
  tt.same(parseContentRange('bytes 0-499/500'), ok(0, 499, 500), 'the whole representation')
  tt.same(parseContentRange('BYTES 0-0/1'), ok(0, 0, 1), '§14.1: range unit is case-insensitive')
  tt.same(parseContentRange('Bytes 5-9/*'), ok(5, 9, null), '§14.1: range unit is case-insensitive (mixed)')
  tt.same(parseContentRange('bytes 007-010/020'), ok(7, 10, 20), 'leading zeros are still 1*DIGIT')
  tt.same(parseContentRange('bytes 0-9007199254740990/9007199254740991'), ok(0, 9007199254740990, 9007199254740991), 'largest safe length')
  tt.same(parseContentRange('bytes 9007199254740991-9007199254740991/*'), ok(9007199254740991, 9007199254740991, null), 'largest safe position')
  tt.same(parseContentRange(`bytes ${'0'.repeat(300)}1-2/3`), ok(1, 2, 3), 'many leading zeros keep the value')
})

t.test('invalid ranges (RFC 9110 §14.4)', async (tt) => {
  refused(tt, 'bytes 5-4/10', 'last-pos before first-pos', /first-pos/)
  refused(tt, 'bytes 5-4/*', 'last-pos before first-pos with unknown length', /first-pos/)
  refused(tt, 'bytes 0-10/10', 'last-pos equal to the complete length', /complete length/)
  refused(tt, 'bytes 0-20/10', 'last-pos past the complete length', /complete length/)
  refused(tt, 'bytes 0-0/0', 'nothing fits in a zero length', /complete length/)
  refused(tt, 'bytes */1234', '§14.4 unsatisfied-range is for 416 replies', /416/)
  refused(tt, 'BYTES */0', 'unsatisfied-range with upper-case unit', /416/)
})

t.test('anything outside the grammar is refused (RFC 9110 §14.4)', async (tt) => {
  refused(tt, '', 'empty', /empty/)
  refused(tt, 'items 0-1/2', 'other unit', /unit "items"/)
  refused(tt, 'none 0-1/2', 'other unit', /unit "none"/)
  refused(tt, '0-1/2', 'no unit')
  refused(tt, 'bytes=0-1/2', 'Range-style "="')
  refused(tt, 'bytes0-1/2', 'no SP after the unit')
  refused(tt, 'bytes  0-1/2', 'two spaces after the unit')
  refused(tt, 'bytes\t0-1/2', 'HTAB instead of SP')
  refused(tt, ' bytes 0-1/2', 'leading space')
  refused(tt, 'bytes 0-1/2 ', 'trailing space')
  refused(tt, 'bytes 0-1/2\n', 'trailing newline')
  refused(tt, 'bytes 0 - 1/2', 'spaces around "-"')
  refused(tt, 'bytes 0-1 /2', 'space before "/"')
  refused(tt, 'bytes 0-1/ 2', 'space after "/"')
  refused(tt, 'bytes -1/2', 'suffix form is a Range construct')
  refused(tt, 'bytes 0-/2', 'open-ended form is a Range construct')
  refused(tt, 'bytes 0-1', 'missing complete-length')
  refused(tt, 'bytes 0-1/', 'empty complete-length')
  refused(tt, 'bytes 0-1/2/3', 'two slashes')
  refused(tt, 'bytes 0-1,3-4/5', 'a list of ranges')
  refused(tt, 'bytes 0x1-2/3', 'hex')
  refused(tt, 'bytes +1-2/3', 'sign')
  refused(tt, 'bytes 1.0-2/3', 'decimal point')
  refused(tt, 'bytes 1e2-200/300', 'exponent')
  refused(tt, 'bytes \u0661-2/3', 'non-ASCII digit')
  refused(tt, 'bytes 0-1/**', 'double star')
  refused(tt, 'bytes *', 'bare star')
})

t.test('numbers above Number.MAX_SAFE_INTEGER are refused', async (tt) => {
  refused(tt, 'bytes 0-9007199254740992/*', 'last-pos 2^53', /9007199254740991/)
  refused(tt, 'bytes 0-1/9007199254740992', 'complete-length 2^53', /9007199254740991/)
  refused(tt, 'bytes 9007199254740992-9007199254740993/*', 'both past 2^53', /9007199254740991/)
  refused(tt, `bytes 0-${'9'.repeat(400)}/*`, '400 digits', /9007199254740991/)
})

// ---------- properties ----------

const MAX = BigInt(Number.MAX_SAFE_INTEGER)
const num = fc.oneof(
  { weight: 6, arbitrary: fc.bigInt({ min: 0n, max: 50n }) },
  { weight: 2, arbitrary: fc.bigInt({ min: MAX - 3n, max: MAX + 3n }) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 10n ** 25n }) },
)
const unit = fc.constantFrom('bytes', 'BYTES', 'bYtes')

function model(first: bigint, last: bigint, length: bigint | null): ContentRange | null {
  if (first > MAX || last > MAX || (length !== null && length > MAX)) return null
  if (last < first || (length !== null && last >= length)) return null
  return { first: Number(first), last: Number(last), completeLength: length === null ? null : Number(length) }
}

t.test('properties', async (tt) => {
  holds(tt, 'agrees with a BigInt model', fc.property(unit, num, num, fc.option(num), (u, first, last, length) => {
    const got = parseContentRange(`${u} ${first}-${last}/${length ?? '*'}`)
    const want = model(first, last, length)
    if (want === null ? got.ok : !got.ok || JSON.stringify(got.value) !== JSON.stringify(want)) {
      throw new Error(`got ${JSON.stringify(got)} want ${JSON.stringify(want)}`)
    }
  }))

  holds(tt, 'never throws; accepted values are safe and ordered; refusals carry a reason', fc.property(
    fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: fc.constantFrom(...'0123456789-/* '), maxLength: 30 }).map((s) => 'bytes ' + s)),
    (header) => {
      const r = parseContentRange(header)
      if (!r.ok) {
        if (r.reason.length === 0) throw new Error('empty reason')
        return
      }
      const { first, last, completeLength } = r.value
      if (![first, last].every(Number.isSafeInteger) || first > last) throw new Error(JSON.stringify(r))
      if (completeLength !== null && (!Number.isSafeInteger(completeLength) || last >= completeLength)) throw new Error(JSON.stringify(r))
    },
  ))

  const junk = fc.constantFrom(' ', '\t', ',', ';', '=', '\r', '\n', 'x', '"')
  holds(tt, 'inserting a foreign character anywhere into a valid header refuses it', fc.property(fc.nat({ max: 50 }), fc.nat({ max: 50 }), junk, fc.nat(), (a, b, ch, at) => {
    const header = `bytes ${Math.min(a, b)}-${Math.max(a, b)}/${Math.max(a, b) + 1}`
    const i = at % (header.length + 1)
    const r = parseContentRange(header.slice(0, i) + ch + header.slice(i))
    if (r.ok) throw new Error(JSON.stringify(r))
  }))

  holds(tt, 'deleting any non-digit character from a valid header refuses it', fc.property(fc.nat({ max: 50 }), fc.nat({ max: 50 }), fc.boolean(), fc.nat(), (a, b, star, at) => {
    const header = `bytes ${Math.min(a, b)}-${Math.max(a, b)}/${star ? '*' : Math.max(a, b) + 1}`
    const nonDigits = [...header].flatMap((c, i) => (/\d/.test(c) ? [] : [i]))
    const i = nonDigits[at % nonDigits.length]!
    const r = parseContentRange(header.slice(0, i) + header.slice(i + 1))
    if (r.ok) throw new Error(JSON.stringify(r))
  }))
})
