import t from 'tap'
import fc from 'fast-check'
import {
  formatEntityTag,
  ifMatchPasses,
  ifNoneMatchPasses,
  ifRangePasses,
  parseEntityTagList,
  type EntityTag,
} from '../../../src/http/headers/entity-tag.js'

const NUM_RUNS = 500

// Runs a property and turns a counterexample into one failing tap assertion.
function holds(tt: Pick<typeof t, 'notOk'>, name: string, property: fc.IProperty<any>): void {
  const out = fc.check(property, { numRuns: NUM_RUNS })
  tt.notOk(out.failed, out.failed ? `${name}\n${fc.defaultReportMessage(out)}` : name)
}

const strong = (opaque: string): EntityTag => ({ weak: false, opaque })
const weak = (opaque: string): EntityTag => ({ weak: true, opaque })

t.test('formatEntityTag (RFC 9110 §8.8.3)', async (tt) => {
  tt.equal(formatEntityTag('v1-abc'), '"v1-abc"')
  tt.equal(formatEntityTag(''), '""', 'an empty opaque-tag is valid')
  tt.equal(formatEntityTag('a,b/W'), '"a,b/W"', 'commas and slashes are etagc')
  tt.throws(() => formatEntityTag('a"b'), RangeError, 'DQUOTE is not etagc')
  tt.throws(() => formatEntityTag('a b'), RangeError, 'SP is not etagc')
  tt.throws(() => formatEntityTag('a\r\nX: y'), RangeError, 'no header injection')
  tt.throws(() => formatEntityTag('caf\xe9'), RangeError, 'we only generate visible ASCII')
})

t.test('parseEntityTagList: RFC 9110 §8.8.3 syntax', async (tt) => {
  tt.same(parseEntityTagList('"xyzzy"'), [strong('xyzzy')], '§8.8.3 strong example')
  tt.same(parseEntityTagList('W/"xyzzy"'), [weak('xyzzy')], '§8.8.3 weak example')
  tt.same(parseEntityTagList('""'), [strong('')], '§8.8.3 empty opaque-tag')
  tt.same(parseEntityTagList('"xyzzy", "r2d2xxxx", "c3piozzzz"'), [strong('xyzzy'), strong('r2d2xxxx'), strong('c3piozzzz')], '§13.1.1 If-Match list example')
  tt.same(parseEntityTagList('W/"xyzzy", W/"r2d2xxxx", W/"c3piozzzz"'), [weak('xyzzy'), weak('r2d2xxxx'), weak('c3piozzzz')], '§13.1.2 If-None-Match weak list example')
  tt.equal(parseEntityTagList('*'), '*', '§13.1.1 "*"')
  tt.equal(parseEntityTagList(' * '), '*', '"*" with OWS')
  tt.same(parseEntityTagList('"a","b"'), [strong('a'), strong('b')], 'no OWS needed')
  tt.same(parseEntityTagList(' "a" ,\tW/"b" '), [strong('a'), weak('b')], 'OWS around commas')
  tt.same(parseEntityTagList(',,"a",, ,'), [strong('a')], '§5.6.1 empty elements are skipped')
  tt.same(parseEntityTagList('"a,b"'), [strong('a,b')], 'a comma inside the quotes belongs to the tag')
  tt.same(parseEntityTagList('"caf\xe9"'), [strong('caf\xe9')], 'obs-text is etagc')
  tt.same(parseEntityTagList(''), [], 'an empty list')
  tt.same(parseEntityTagList(' , '), [], 'a list of empty elements')
})

t.test('parseEntityTagList: malformed values are null', async (tt) => {
  for (const [value, why] of [
    ['xyzzy', 'unquoted'],
    ['w/"x"', '§8.8.3: "W/" is case-sensitive'],
    ['W/ "x"', 'space after W/'],
    ['W "x"', 'missing slash'],
    ['"x', 'unterminated'],
    ['x"', 'no opening quote'],
    ['"x"y', 'junk after the tag'],
    ['"x" "y"', 'missing comma'],
    ['"a"b"', 'quote inside opaque'],
    ['"x\x01"', 'control character'],
    ['"a b"', 'space inside opaque'],
    ['"\u20ac"', 'not latin1'],
    ['*, "x"', '"*" cannot share the list'],
    ['"x", *', '"*" cannot share the list (last)'],
    ['**', 'double star'],
    ['W/*', 'weak star'],
    ['"x";q=1', 'parameters'],
  ] as const) {
    tt.equal(parseEntityTagList(value), null, `${why}: ${JSON.stringify(value)}`)
  }
})

t.test('RFC 9110 §8.8.3.2 weak and strong comparison table', async (tt) => {
  // Strong comparison is observable through If-Match, weak comparison through If-None-Match.
  const rows: [string, string, boolean, boolean][] = [
    ['W/"1"', 'W/"1"', false, true],
    ['W/"1"', 'W/"2"', false, false],
    ['W/"1"', '"1"', false, true],
    ['"1"', '"1"', true, true],
  ]
  for (const [a, b, strongMatch, weakMatch] of rows) {
    tt.equal(ifMatchPasses(a, b), strongMatch, `strong ${a} vs ${b}`)
    tt.equal(ifMatchPasses(b, a), strongMatch, `strong ${b} vs ${a}`)
    tt.equal(ifNoneMatchPasses(a, b), !weakMatch, `weak ${a} vs ${b}`)
    tt.equal(ifNoneMatchPasses(b, a), !weakMatch, `weak ${b} vs ${a}`)
  }
})

t.test('If-Match (RFC 9110 §13.1.1)', async (tt) => {
  tt.equal(ifMatchPasses(undefined, '"v1"'), true, 'absent header passes')
  tt.equal(ifMatchPasses(undefined, undefined), true, 'absent header passes with no representation')
  tt.equal(ifMatchPasses('*', '"v1"'), true, '"*" passes when a representation exists')
  tt.equal(ifMatchPasses('*', undefined), false, '"*" fails when none exists')
  tt.equal(ifMatchPasses('"v1"', '"v1"'), true, 'same strong tag')
  tt.equal(ifMatchPasses('"v1"', '"v2"'), false, 'different tag')
  tt.equal(ifMatchPasses('"v0", "v1"', '"v1"'), true, 'any listed tag')
  tt.equal(ifMatchPasses('"v1"', undefined), false, 'no representation to match')
  tt.equal(ifMatchPasses('W/"v1"', '"v1"'), false, 'weak request tag never matches strongly')
  tt.equal(ifMatchPasses('"v1"', 'W/"v1"'), false, 'weak current tag never matches strongly')
  tt.equal(ifMatchPasses('"V1"', '"v1"'), false, 'opaque-tags are case-sensitive')
  tt.equal(ifMatchPasses('v1', '"v1"'), false, 'malformed fails')
  tt.equal(ifMatchPasses('', '"v1"'), false, 'an empty list matches nothing')
})

t.test('If-None-Match (RFC 9110 §13.1.2)', async (tt) => {
  tt.equal(ifNoneMatchPasses(undefined, '"v1"'), true, 'absent header passes')
  tt.equal(ifNoneMatchPasses('*', '"v1"'), false, '"*" fails when a representation exists')
  tt.equal(ifNoneMatchPasses('*', undefined), true, '"*" passes when none exists (create-only PUT)')
  tt.equal(ifNoneMatchPasses('"v1"', '"v1"'), false, 'same tag')
  tt.equal(ifNoneMatchPasses('W/"v1"', '"v1"'), false, 'weak comparison ignores W/')
  tt.equal(ifNoneMatchPasses('"v0", W/"v1"', '"v1"'), false, 'any listed tag')
  tt.equal(ifNoneMatchPasses('"v2"', '"v1"'), true, 'different tag')
  tt.equal(ifNoneMatchPasses('"v1"', undefined), true, 'nothing to match')
  tt.equal(ifNoneMatchPasses('"v1', '"v1"'), false, 'malformed fails closed')
  tt.equal(ifNoneMatchPasses('', '"v1"'), true, 'an empty list matches nothing')
})

t.test('If-Range (RFC 9110 §13.1.5)', async (tt) => {
  tt.equal(ifRangePasses(undefined, '"v1"'), true, 'absent header: the Range applies')
  tt.equal(ifRangePasses('"v1"', '"v1"'), true, 'strong match')
  tt.equal(ifRangePasses(' "v1"\t', '"v1"'), true, 'OWS around the value')
  tt.equal(ifRangePasses('"v2"', '"v1"'), false, 'different tag')
  tt.equal(ifRangePasses('W/"v1"', '"v1"'), false, 'a weak tag never matches')
  tt.equal(ifRangePasses('"v1"', 'W/"v1"'), false, 'a weak current tag never matches')
  tt.equal(ifRangePasses('"v1"', undefined), false, 'no current tag')
  tt.equal(ifRangePasses('Sat, 29 Oct 1994 19:43:31 GMT', '"v1"'), false, 'an HTTP-date: we send no Last-Modified')
  tt.equal(ifRangePasses('"v1", "v2"', '"v1"'), false, 'If-Range carries one tag, not a list')
  tt.equal(ifRangePasses('*', '"v1"'), false, '"*" is not an If-Range validator')
  tt.equal(ifRangePasses('v1', '"v1"'), false, 'malformed')
  tt.equal(ifRangePasses('', '"v1"'), false, 'empty')
})

// ---------- properties ----------

const opaqueArb = fc.string({ unit: fc.constantFrom('a', 'b', ',', 'W', '/'), maxLength: 3 }) // small alphabet: collisions are frequent
const tagArb = fc.record({ weak: fc.boolean(), opaque: opaqueArb })
const ows = fc.constantFrom('', ' ', '\t', ' ,', ', ')
const render = (tag: EntityTag) => `${tag.weak ? 'W/' : ''}"${tag.opaque}"`

t.test('properties', async (tt) => {
  holds(tt, 'format then parse round-trips', fc.property(fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).filter((c) => c !== 0x22).map((c) => String.fromCharCode(c)) }), (opaque) => {
    const tag = formatEntityTag(opaque)
    const parsed = parseEntityTagList(tag)
    if (JSON.stringify(parsed) !== JSON.stringify([strong(opaque)])) throw new Error(JSON.stringify(parsed))
    if (!ifMatchPasses(tag, tag) || ifNoneMatchPasses(tag, tag) || !ifRangePasses(tag, tag)) throw new Error('self comparison')
  }))

  holds(tt, 'lists parse to their tags and preconditions agree with the comparison model', fc.property(
    fc.array(fc.tuple(tagArb, ows), { maxLength: 5 }),
    fc.option(tagArb),
    (items, current) => {
      const header = items.map(([tag, pad]) => pad + render(tag)).join(',')
      const tags = items.map(([tag]) => tag)
      if (JSON.stringify(parseEntityTagList(header)) !== JSON.stringify(tags)) throw new Error(`parse ${header}`)
      const cur = current === null ? undefined : render(current)
      const strongHit = current !== null && tags.some((x) => !x.weak && !current.weak && x.opaque === current.opaque)
      const weakHit = current !== null && tags.some((x) => x.opaque === current.opaque)
      if (ifMatchPasses(header, cur) !== strongHit) throw new Error('If-Match')
      if (ifNoneMatchPasses(header, cur) !== !weakHit) throw new Error('If-None-Match')
      const single = items.length === 1 && !items[0]![1].includes(',') // If-Range is one tag, not a list
      if (single && ifRangePasses(header, cur) !== strongHit) throw new Error('If-Range')
    },
  ))

  holds(tt, 'never throws; unparseable headers never pass If-Match or If-None-Match', fc.property(
    fc.oneof(fc.string({ maxLength: 20 }), fc.string({ unit: fc.constantFrom('"', 'W', '/', ',', ' ', '*', 'a'), maxLength: 12 })),
    fc.option(tagArb),
    (header, current) => {
      const cur = current === null ? undefined : render(current)
      const parsed = parseEntityTagList(header)
      const m = ifMatchPasses(header, cur)
      const n = ifNoneMatchPasses(header, cur)
      ifRangePasses(header, cur)
      if (parsed === null && (m || n)) throw new Error('malformed header passed')
    },
  ))
})
