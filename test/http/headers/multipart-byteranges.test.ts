import t from 'tap'
import fc from 'fast-check'
import type { ByteRange } from '../../../src/http/headers/byte-range.js'
import { makeBoundary, planMultipartByteranges, type MultipartPlan } from '../../../src/http/headers/multipart-byteranges.js'

const NUM_RUNS = 500

// Runs a property and turns a counterexample into one failing tap assertion.
function holds(tt: Pick<typeof t, 'notOk'>, name: string, property: fc.IProperty<any>): void {
  const out = fc.check(property, { numRuns: NUM_RUNS })
  tt.notOk(out.failed, out.failed ? `${name}\n${fc.defaultReportMessage(out)}` : name)
}

function assemble(plan: MultipartPlan, data: Buffer): Buffer {
  const chunks: Buffer[] = []
  for (const p of plan.parts) chunks.push(p.head, data.subarray(p.range.start, p.range.end + 1))
  chunks.push(plan.tail)
  return Buffer.concat(chunks)
}

interface ParsedPart { headers: Map<string, string>; body: Buffer }

// A deliberately naive RFC 2046 §5.1.1 reader, independent of the planner.
function parseMultipart(body: Buffer, contentType: string): ParsedPart[] {
  const m = /^multipart\/byteranges; boundary=([^;\s]+)$/.exec(contentType)
  if (m === null) throw new Error(`bad content type ${contentType}`)
  const text = body.toString('latin1')
  const delimiter = `\r\n--${m[1]}`
  const segments = text.split(delimiter)
  if (segments[0] !== '') throw new Error('unexpected preamble')
  if (segments[segments.length - 1] !== '--\r\n') throw new Error('missing close delimiter')
  return segments.slice(1, -1).map((segment) => {
    if (!segment.startsWith('\r\n')) throw new Error('delimiter not followed by CRLF')
    const split = segment.indexOf('\r\n\r\n')
    if (split < 0) throw new Error('part without header/body separator')
    const headers = new Map<string, string>()
    for (const line of segment.slice(2, split).split('\r\n')) {
      const colon = line.indexOf(':')
      headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim())
    }
    return { headers, body: Buffer.from(segment.slice(split + 4), 'latin1') }
  })
}

t.test('RFC 9110 §14.6: exact framing of a two-part reply', async (tt) => {
  const plan = planMultipartByteranges([{ start: 0, end: 4 }, { start: 10, end: 14 }], 20, 'text/plain', 'THIS_STRING_SEPARATES')
  tt.equal(plan.contentType, 'multipart/byteranges; boundary=THIS_STRING_SEPARATES')
  tt.equal(plan.parts.length, 2)
  tt.equal(plan.parts[0]!.head.toString('latin1'), '\r\n--THIS_STRING_SEPARATES\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-4/20\r\n\r\n', 'first head')
  tt.equal(plan.parts[1]!.head.toString('latin1'), '\r\n--THIS_STRING_SEPARATES\r\nContent-Type: text/plain\r\nContent-Range: bytes 10-14/20\r\n\r\n', 'second head')
  tt.same(plan.parts.map((p) => p.range), [{ start: 0, end: 4 }, { start: 10, end: 14 }], 'ranges in order')
  tt.equal(plan.tail.toString('latin1'), '\r\n--THIS_STRING_SEPARATES--\r\n', 'close delimiter')
  const data = Buffer.from('abcdefghijklmnopqrst')
  const body = assemble(plan, data)
  tt.equal(plan.contentLength, body.length, 'contentLength is the assembled length')
  tt.equal(
    body.toString('latin1'),
    '\r\n--THIS_STRING_SEPARATES\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-4/20\r\n\r\nabcde' +
      '\r\n--THIS_STRING_SEPARATES\r\nContent-Type: text/plain\r\nContent-Range: bytes 10-14/20\r\n\r\nklmno' +
      '\r\n--THIS_STRING_SEPARATES--\r\n',
    'whole body',
  )
})

t.test('parts parse back to the requested bytes', async (tt) => {
  const data = Buffer.from(Array.from({ length: 256 }, (_, i) => i)) // every byte value, CR and LF included
  const ranges: ByteRange[] = [{ start: 250, end: 255 }, { start: 0, end: 0 }, { start: 10, end: 13 }]
  const plan = planMultipartByteranges(ranges, 256, 'application/octet-stream', makeBoundary())
  const parts = parseMultipart(assemble(plan, data), plan.contentType)
  tt.equal(parts.length, 3)
  parts.forEach((p, i) => {
    const r = ranges[i]!
    tt.equal(p.headers.get('content-range'), `bytes ${r.start}-${r.end}/256`, `part ${i} Content-Range`)
    tt.equal(p.headers.get('content-type'), 'application/octet-stream', `part ${i} Content-Type`)
    tt.same(p.body, data.subarray(r.start, r.end + 1), `part ${i} body`)
  })
})

t.test('a single range still frames as one part', async (tt) => {
  const plan = planMultipartByteranges([{ start: 3, end: 3 }], 4, 'text/plain', 'b')
  tt.equal(plan.contentLength, assemble(plan, Buffer.from('wxyz')).length)
  tt.same(parseMultipart(assemble(plan, Buffer.from('wxyz')), plan.contentType).map((p) => p.body.toString()), ['z'])
})

t.test('invalid input is a programming error', async (tt) => {
  const ok = [{ start: 0, end: 1 }]
  tt.throws(() => planMultipartByteranges([], 10, 'text/plain', 'b'), RangeError, 'no ranges')
  tt.throws(() => planMultipartByteranges([{ start: 0, end: 10 }], 10, 'text/plain', 'b'), RangeError, 'end past the size')
  tt.throws(() => planMultipartByteranges([{ start: 5, end: 4 }], 10, 'text/plain', 'b'), RangeError, 'start after end')
  tt.throws(() => planMultipartByteranges([{ start: -1, end: 4 }], 10, 'text/plain', 'b'), RangeError, 'negative start')
  tt.throws(() => planMultipartByteranges([{ start: 0.5, end: 4 }], 10, 'text/plain', 'b'), RangeError, 'fractional start')
  tt.throws(() => planMultipartByteranges(ok, 10, 'text/plain', ''), RangeError, 'RFC 2046: empty boundary')
  tt.throws(() => planMultipartByteranges(ok, 10, 'text/plain', 'x'.repeat(71)), RangeError, 'RFC 2046: boundary over 70 chars')
  tt.doesNotThrow(() => planMultipartByteranges(ok, 10, 'text/plain', 'x'.repeat(70)), 'RFC 2046: 70-char boundary')
  tt.throws(() => planMultipartByteranges(ok, 10, 'text/plain', 'a b'), RangeError, 'space needs quoting')
  tt.throws(() => planMultipartByteranges(ok, 10, 'text/plain', 'a"b'), RangeError, 'quote in boundary')
  tt.throws(() => planMultipartByteranges(ok, 10, 'text/plain', 'a\r\nb'), RangeError, 'CRLF in boundary')
  tt.throws(() => planMultipartByteranges(ok, 10, 'text/plain\r\nX-Evil: 1', 'b'), RangeError, 'header injection in part type')
  tt.throws(() => planMultipartByteranges(ok, 10, '', 'b'), RangeError, 'empty part type')
})

t.test('makeBoundary', async (tt) => {
  const a = makeBoundary()
  const b = makeBoundary()
  tt.match(a, /^filemirror-[0-9a-f]{24}$/, 'prefix and 24 hex chars')
  tt.not(a, b, 'random each time')
  tt.doesNotThrow(() => planMultipartByteranges([{ start: 0, end: 0 }], 1, 'text/plain', a), 'accepted by the planner')
})

t.test('properties', async (tt) => {
  const input = fc
    .uint8Array({ minLength: 1, maxLength: 300 })
    .chain((bytes) =>
      fc.tuple(
        fc.constant(Buffer.from(bytes)),
        fc.array(
          fc.tuple(fc.nat({ max: bytes.length - 1 }), fc.nat({ max: bytes.length - 1 })).map(([a, b]) => ({ start: Math.min(a, b), end: Math.max(a, b) })),
          { minLength: 1, maxLength: 10 },
        ),
        fc.constantFrom('application/octet-stream', 'text/plain; charset=utf-8', 'image/png'),
      ),
    )

  holds(tt, 'contentLength equals the assembled body and parts parse back to the source bytes', fc.property(input, ([data, ranges, type]) => {
    const plan = planMultipartByteranges(ranges, data.length, type, makeBoundary())
    const body = assemble(plan, data)
    if (plan.contentLength !== body.length) throw new Error(`contentLength ${plan.contentLength} != ${body.length}`)
    const parts = parseMultipart(body, plan.contentType)
    if (parts.length !== ranges.length) throw new Error('part count')
    parts.forEach((p, i) => {
      const r = ranges[i]!
      if (p.headers.get('content-range') !== `bytes ${r.start}-${r.end}/${data.length}`) throw new Error('content-range')
      if (p.headers.get('content-type') !== type) throw new Error('content-type')
      if (!p.body.equals(data.subarray(r.start, r.end + 1))) throw new Error(`part ${i} body differs`)
    })
  }))

  holds(tt, 'ranges outside the representation always throw', fc.property(fc.nat({ max: 100 }), fc.integer({ min: -5, max: 200 }), fc.integer({ min: -5, max: 200 }), (size, start, end) => {
    const inside = start >= 0 && start <= end && end < size
    let threw = false
    try {
      planMultipartByteranges([{ start, end }], size, 'text/plain', 'b')
    } catch {
      threw = true
    }
    if (threw === inside) throw new Error(`size ${size} ${start}-${end}: threw=${threw}`)
  }))
})
