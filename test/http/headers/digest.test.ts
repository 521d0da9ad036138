import { createHash } from 'node:crypto'
import t from 'tap'
import fc from 'fast-check'
import {
  chooseDigestAlgorithm,
  DIGEST_ALGORITHMS,
  DIGEST_SPECS,
  parseDictionary,
  parseDigestField,
  parseWantDigestField,
  serializeDigestField,
  type BareItem,
  type DigestAlgorithm,
  type Member,
} from '../../../src/http/headers/digest.js'

const NUM_RUNS = 500

// Runs a property and turns a counterexample into one failing tap assertion.
function holds(tt: Pick<typeof t, 'notOk'>, name: string, property: fc.IProperty<any>): void {
  const out = fc.check(property, { numRuns: NUM_RUNS })
  tt.notOk(out.failed, out.failed ? `${name}\n${fc.defaultReportMessage(out)}` : name)
}

/** The supported digests of a field as { algorithm: base64 }, or the string 'malformed'. */
function digests(field: string | string[]): Record<string, string> | 'malformed' {
  const parsed = parseDigestField(field)
  return parsed.ok ? Object.fromEntries([...parsed.value].map(([k, v]) => [k, v.toString('base64')])) : 'malformed'
}
function wants(field: string | string[]): Record<string, number> | 'malformed' {
  const parsed = parseWantDigestField(field)
  return parsed.ok ? Object.fromEntries(parsed.value) : 'malformed'
}

// RFC 9530 Appendix D: the sample content {"hello": "world"} and its digests.
const HELLO = Buffer.from('{"hello": "world"}')
const HELLO_256 = 'X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE='
const HELLO_512 = 'WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew=='
const ZERO_256 = Buffer.alloc(32).toString('base64')

t.test('RFC 9530 examples', async (tt) => {
  tt.equal(createHash('sha256').update(HELLO).digest('base64'), HELLO_256, 'Appendix D: the sha-256 sample is what node:crypto computes')
  tt.equal(createHash('sha512').update(HELLO).digest('base64'), HELLO_512, 'Appendix D: the sha-512 sample is what node:crypto computes')
  tt.same(digests(`sha-256=:${HELLO_256}:`), { 'sha-256': HELLO_256 }, '§2 Content-Digest with sha-256')
  tt.same(digests(`sha-512=:${HELLO_512}:`), { 'sha-512': HELLO_512 }, '§3 Repr-Digest with sha-512')
  tt.same(digests(`sha-256=:${HELLO_256}:, sha-512=:${HELLO_512}:`), { 'sha-256': HELLO_256, 'sha-512': HELLO_512 }, '§2 several digests in one field')
  tt.same(wants('sha-256=1'), { 'sha-256': 1 }, '§4 Want-Content-Digest: sha-256=1')
  tt.same(wants('sha-512=3, sha-256=10, unixsum=0'), { 'sha-512': 3, 'sha-256': 10 }, '§4 example: unixsum ignored')
  tt.equal(chooseDigestAlgorithm(new Map([['sha-512', 3], ['sha-256', 10]])), 'sha-256', '§4: the higher preference wins')
})

t.test('algorithms the service does not support are ignored (RFC 9530 §2, §5)', async (tt) => {
  for (const deprecated of ['md5', 'sha', 'unixsum', 'unixcksum', 'adler', 'crc32c']) {
    tt.same(digests(`${deprecated}=:AAAA:`), {}, `${deprecated} (deprecated in §5) is ignored`)
  }
  tt.same(digests(`md5=:AAAA:, sha-256=:${HELLO_256}:, id-sha-256=:AAAA:`), { 'sha-256': HELLO_256 }, 'only the supported member remains')
  tt.same(digests('sha-384=:AAAA:'), {}, 'an unregistered algorithm')
  tt.same(wants('md5=10, crc32c=9'), {}, 'Want-* naming only unsupported algorithms')
  tt.equal(chooseDigestAlgorithm(new Map()), null, 'nothing to choose from')
})

t.test('digest values (RFC 9530 §2, RFC 9651 §4.2.7)', async (tt) => {
  tt.same(digests(`sha-256=:${HELLO_256.replace(/=+$/, '')}:`), { 'sha-256': HELLO_256 }, 'missing "=" padding is tolerated (§4.2.7)')
  tt.equal(digests(`sha-256=:${HELLO_512}:`), 'malformed', 'a sha-256 digest of 64 bytes')
  tt.equal(digests('sha-256=:AAAA:'), 'malformed', 'a sha-256 digest of 3 bytes')
  tt.equal(digests('sha-512=::'), 'malformed', 'an empty digest')
  tt.equal(digests(`sha-256=${HELLO_256}`), 'malformed', 'base64 without colons is a token, not a Byte Sequence')
  tt.equal(digests(`sha-256="${HELLO_256}"`), 'malformed', 'a String is not a Byte Sequence')
  tt.equal(digests(`sha-256=:${HELLO_256}`), 'malformed', 'no closing colon')
  tt.equal(digests(`sha-256=:${HELLO_256.replace('E', '-')}:`), 'malformed', 'base64url is not base64')
  tt.equal(digests(`sha-256=:${HELLO_256.slice(0, 10)}=${HELLO_256.slice(10)}:`), 'malformed', '"=" inside the value')
  tt.equal(digests('sha-256=:A:'), 'malformed', 'one base64 character is no byte')
  tt.equal(digests(`sha-256=(:${HELLO_256}:)`), 'malformed', 'an Inner List is not a Byte Sequence')
  tt.equal(digests('sha-256'), 'malformed', 'a bare key is Boolean true')
  tt.equal(digests('md5=1'), 'malformed', 'every member must be a Byte Sequence, the ignored ones too')
  tt.same(digests(`sha-256=:${HELLO_256}:;keyid=x;n=1`), { 'sha-256': HELLO_256 }, 'parameters are allowed and ignored')
  tt.same(digests(`sha-256=:${ZERO_256}:, sha-256=:${HELLO_256}:`), { 'sha-256': HELLO_256 }, 'a repeated key: the last value wins (RFC 9651 §4.2.2)')
})

t.test('Structured Field Dictionary syntax (RFC 9651 §3.2, §4.2)', async (tt) => {
  const one = { 'sha-256': HELLO_256 }
  tt.same(digests(''), {}, 'an empty field is an empty dictionary')
  tt.same(digests('   '), {}, 'spaces only')
  tt.same(digests(`   sha-256=:${HELLO_256}:   `), one, 'leading and trailing spaces')
  tt.same(digests(`md5=:AAAA:\t,\t sha-256=:${HELLO_256}:`), one, 'OWS around the comma')
  tt.same(digests(['md5=:AAAA:', `sha-256=:${HELLO_256}:`]), one, 'field lines are combined with commas (§4.2)')
  tt.equal(digests(`\tsha-256=:${HELLO_256}:`), 'malformed', 'a leading tab (only SP is discarded)')
  tt.equal(digests(`sha-256=:${HELLO_256}:,`), 'malformed', 'a trailing comma')
  tt.equal(digests(`,sha-256=:${HELLO_256}:`), 'malformed', 'a leading comma')
  tt.equal(digests(`md5=:AAAA:,,sha-256=:${HELLO_256}:`), 'malformed', 'an empty member')
  tt.equal(digests(`md5=:AAAA: sha-256=:${HELLO_256}:`), 'malformed', 'members without a comma')
  tt.equal(digests(`SHA-256=:${HELLO_256}:`), 'malformed', 'keys are lower case (§3.1.2): SHA-256 is not a key')
  tt.equal(digests(`sha-256 =:${HELLO_256}:`), 'malformed', 'no space before "="')
  tt.equal(digests(`sha-256= :${HELLO_256}:`), 'malformed', 'no space after "="')
  tt.equal(digests(`1sha=:${HELLO_256}:`), 'malformed', 'a key starting with a digit')
  tt.same(digests(`*x=:AAAA:, sha-256=:${HELLO_256}:`), one, 'a key may start with "*"')
  tt.equal(digests(`sha-256=:${HELLO_256}:, caf\u00e9=:AAAA:`), 'malformed', 'a field that is not ASCII')
  tt.equal(digests('md5=:AAAA:;'), 'malformed', 'a parameter without a key')

  const dict = parseDictionary('a=1, b=-2.5, c="q\\"s", d=tok/x:y, e=:AQI=:, f=?0, g, h=(1 "two" three);p=?1, i=@1659578233, j=%"f%c3%bc", k=1;q=0.1;r')
  tt.ok(dict.ok, 'every kind of member parses')
  if (!dict.ok) return
  const items = Object.fromEntries([...dict.value].map(([k, m]) => [k, m.kind === 'item' ? m.value : m.kind]))
  tt.same(items, {
    a: { type: 'integer', value: 1 },
    b: { type: 'decimal', value: -2.5 },
    c: { type: 'string', value: 'q"s' },
    d: { type: 'token', value: 'tok/x:y' },
    e: { type: 'bytes', value: Buffer.from([1, 2]) },
    f: { type: 'boolean', value: false },
    g: { type: 'boolean', value: true },
    h: 'inner',
    i: { type: 'date', value: 1659578233 },
    j: { type: 'display', value: 'f\u00fc' },
    k: { type: 'integer', value: 1 },
  }, 'each bare item type (§3.3, RFC 9651 §3.3.7, §3.3.8)')
  const h = dict.value.get('h')!
  tt.same(h.kind === 'inner' && h.items.map((i) => i.value.value), [1, 'two', 'three'], 'the inner list items')
  tt.same(h.kind === 'inner' && [...h.params], [['p', { type: 'boolean', value: true }]], 'the inner list parameter')
  tt.same([...dict.value.get('k')!.params], [['q', { type: 'decimal', value: 0.1 }], ['r', { type: 'boolean', value: true }]], 'item parameters')

  for (const [field, why] of [
    ['a=1234567890123456', 'an integer of 16 digits (§4.2.4)'],
    ['a=1234567890123.1', 'a decimal with 13 integer digits'],
    ['a=1.1234', 'a decimal with 4 fractional digits'],
    ['a=1.', 'a decimal ending with "."'],
    ['a=-', 'a lone minus'],
    ['a="unterminated', 'an unterminated string'],
    ['a="bad \\n escape"', 'an escape other than \\" and \\\\ (§4.2.5)'],
    ['a="tab\there"', 'a control character in a string'],
    ['a=?2', 'a boolean other than ?0 and ?1'],
    ['a=@1.5', 'a decimal date (RFC 9651 §4.2.9)'],
    ['a=%"%C3%BC"', 'upper-case hex in a display string (RFC 9651 §4.2.10)'],
    ['a=%"%ff"', 'a display string that is not UTF-8'],
    ['a=(1 2', 'an unterminated inner list'],
    ['a=(1,2)', 'commas inside an inner list'],
    ['a=#x', 'no bare item starts with "#"'],
    ['a=', 'a missing value'],
  ] as const) {
    tt.notOk(parseDictionary(field).ok, why)
  }
  tt.ok(parseDictionary(`a=${'9'.repeat(15)}`).ok, 'an integer of 15 digits')
  tt.ok(parseDictionary('a=123456789012.123').ok, 'a decimal of 12.3 digits')
  tt.notOk(parseDictionary('__proto__=1').ok, '"_" cannot start a key')
  const proto = parseDictionary('constructor=1, hasownproperty=2')
  tt.same(proto.ok && [...proto.value.keys()], ['constructor', 'hasownproperty'], 'keys are plain map keys, whatever their name')
})

t.test('Want-Content-Digest and Want-Repr-Digest (RFC 9530 §4)', async (tt) => {
  tt.same(wants('sha-256=0'), { 'sha-256': 0 }, '0 is kept: "not acceptable"')
  tt.equal(chooseDigestAlgorithm(new Map([['sha-256', 0]])), null, '0 is never chosen')
  tt.equal(chooseDigestAlgorithm(new Map([['sha-256', 0], ['sha-512', 1]])), 'sha-512', 'the acceptable one')
  tt.equal(chooseDigestAlgorithm(new Map([['sha-256', 5], ['sha-512', 5]])), 'sha-256', 'a tie goes to sha-256')
  tt.equal(chooseDigestAlgorithm(new Map([['sha-256', 5], ['sha-512', 6]])), 'sha-512', 'a higher preference for sha-512')
  tt.same(wants('sha-256=10'), { 'sha-256': 10 }, '10 is the most preferred')
  tt.equal(wants('sha-256=11'), 'malformed', '11 is out of range')
  tt.equal(wants('sha-256=-1'), 'malformed', 'negative')
  tt.equal(wants('sha-256=1.0'), 'malformed', 'a decimal is not an Integer')
  tt.equal(wants('sha-256="1"'), 'malformed', 'a String is not an Integer')
  tt.equal(wants('sha-256'), 'malformed', 'a bare key is Boolean true, not an Integer')
  tt.equal(wants('md5=20, sha-256=1'), 'malformed', 'every member is an Integer from 0 to 10, the ignored ones too')
  tt.same(wants('sha-256=3;q=1'), { 'sha-256': 3 }, 'parameters ignored')
  tt.same(wants(['sha-256=1', 'sha-512=2']), { 'sha-256': 1, 'sha-512': 2 }, 'several field lines')
  tt.same(wants('sha-256=1, sha-256=7'), { 'sha-256': 7 }, 'a repeated key: the last value wins')
  tt.same(wants(''), {}, 'empty')
  tt.equal(wants('sha-256=1,'), 'malformed', 'a trailing comma')
})

t.test('serializeDigestField (RFC 9530 §2, RFC 9651 §4.1.8)', async (tt) => {
  tt.equal(serializeDigestField([['sha-256', createHash('sha256').update(HELLO).digest()]]), `sha-256=:${HELLO_256}:`, 'one digest')
  tt.equal(
    serializeDigestField([['sha-512', Buffer.from(HELLO_512, 'base64')], ['sha-256', Buffer.from(HELLO_256, 'base64')]]),
    `sha-512=:${HELLO_512}:, sha-256=:${HELLO_256}:`,
    'several, in order, with padding',
  )
  tt.equal(serializeDigestField([]), '', 'none')
})

// ---------- properties ----------

const algorithmArb = fc.constantFrom<DigestAlgorithm>(...DIGEST_ALGORITHMS)
const digestArb = algorithmArb.chain((algorithm) => fc.uint8Array({ minLength: DIGEST_SPECS[algorithm].bytes, maxLength: DIGEST_SPECS[algorithm].bytes }).map((b) => [algorithm, Buffer.from(b)] as const))
const unsupportedArb = fc.constantFrom('md5', 'sha', 'unixsum', 'unixcksum', 'adler', 'crc32c', 'sha-384', 'blake3', 'x')
const ows = fc.constantFrom('', ' ', '\t', ' \t ')

// RFC 9651 §4.1 serialization of bare items, the model the parser must invert.
const keyArb = fc.tuple(fc.constantFrom(...'abcxyz*'), fc.string({ unit: fc.constantFrom(...'az09_-.*'), maxLength: 6 })).map(([a, b]) => a + b)
const bareItemArb: fc.Arbitrary<BareItem> = fc.oneof(
  fc.integer({ min: -999_999_999_999_999, max: 999_999_999_999_999 }).map((value) => ({ type: 'integer' as const, value })),
  fc.integer({ min: -999_999_999, max: 999_999_999 }).map((n) => ({ type: 'decimal' as const, value: n / 1000 })),
  fc.string({ unit: fc.constantFrom(...' az"\\~!'), maxLength: 8 }).map((value) => ({ type: 'string' as const, value })),
  fc.tuple(fc.constantFrom(...'aZ*'), fc.string({ unit: fc.constantFrom(...'az09:/!#$%&\'*+.^_`|~-'), maxLength: 6 })).map(([a, b]) => ({ type: 'token' as const, value: a + b })),
  fc.uint8Array({ maxLength: 20 }).map((b) => ({ type: 'bytes' as const, value: Buffer.from(b) })),
  fc.boolean().map((value) => ({ type: 'boolean' as const, value })),
  fc.integer({ min: 0, max: 2 ** 40 }).map((value) => ({ type: 'date' as const, value })),
  fc.string({ unit: fc.constantFrom('a', ' ', '%', '"', '\u00fc', '\u20ac'), maxLength: 6 }).map((value) => ({ type: 'display' as const, value })),
)
function serializeBare(item: BareItem): string {
  switch (item.type) {
    case 'integer':
      return String(item.value)
    case 'decimal': {
      const s = item.value.toFixed(3).replace(/0+$/, '')
      return s.endsWith('.') ? s + '0' : s
    }
    case 'string':
      return `"${item.value.replace(/["\\]/g, (c) => '\\' + c)}"`
    case 'token':
      return item.value
    case 'bytes':
      return `:${item.value.toString('base64')}:`
    case 'boolean':
      return item.value ? '?1' : '?0'
    case 'date':
      return `@${item.value}`
    case 'display':
      return `%"${[...Buffer.from(item.value, 'utf8')].map((b) => (b === 0x25 || b === 0x22 || b < 0x20 || b > 0x7e ? '%' + b.toString(16).padStart(2, '0') : String.fromCharCode(b))).join('')}"`
  }
}
const paramsArb = fc.array(fc.tuple(keyArb, bareItemArb), { maxLength: 2 })
const serializeParams = (params: Array<[string, BareItem]>) => params.map(([k, v]) => (v.type === 'boolean' && v.value ? `;${k}` : `;${k}=${serializeBare(v)}`)).join('')
type ModelItem = { value: BareItem; params: Array<[string, BareItem]> }
type ModelMember = ({ kind: 'item' } & ModelItem) | { kind: 'inner'; items: ModelItem[]; params: Array<[string, BareItem]> }
const memberArb: fc.Arbitrary<ModelMember> = fc.oneof(
  fc.record({ kind: fc.constant('item' as const), value: bareItemArb, params: paramsArb }),
  fc.record({ kind: fc.constant('inner' as const), items: fc.array(fc.record({ value: bareItemArb, params: paramsArb }), { maxLength: 3 }), params: paramsArb }),
)
function serializeMember(key: string, m: ModelMember): string {
  if (m.kind === 'inner') return `${key}=(${m.items.map((i) => serializeBare(i.value) + serializeParams(i.params)).join(' ')})${serializeParams(m.params)}`
  if (m.value.type === 'boolean' && m.value.value) return key + serializeParams(m.params)
  return `${key}=${serializeBare(m.value)}${serializeParams(m.params)}`
}
/** A plain view of parsed members, to compare with the model (last key wins, its first position kept). */
const viewParams = (params: Map<string, BareItem>) => [...params]
const viewMember = (m: Member) => (m.kind === 'item' ? { kind: m.kind, value: m.value, params: viewParams(m.params) } : { kind: m.kind, items: m.items.map((i) => ({ value: i.value, params: viewParams(i.params) })), params: viewParams(m.params) })
const modelParams = (params: Array<[string, BareItem]>) => [...new Map(params)]
function modelMember(m: ModelMember) {
  return m.kind === 'item'
    ? { kind: m.kind, value: m.value, params: modelParams(m.params) }
    : { kind: m.kind, items: m.items.map((i) => ({ value: i.value, params: modelParams(i.params) })), params: modelParams(m.params) }
}

t.test('properties', async (tt) => {
  holds(tt, 'serialize, then parse, gives back the digests', fc.property(fc.array(digestArb, { maxLength: 4 }), (list) => {
    const parsed = parseDigestField(serializeDigestField(list))
    if (!parsed.ok) throw new Error(parsed.reason)
    const want = new Map(list)
    if (parsed.value.size !== want.size) throw new Error('size differs')
    for (const [k, v] of want) if (!parsed.value.get(k)?.equals(v)) throw new Error(`${k} differs`)
  }))

  holds(tt, 'unsupported members and whitespace around them change nothing', fc.property(
    fc.array(digestArb, { maxLength: 3 }),
    fc.array(fc.tuple(unsupportedArb, fc.uint8Array({ maxLength: 20 })), { maxLength: 3 }),
    fc.array(ows, { minLength: 8, maxLength: 8 }),
    fc.nat(),
    (supported, unsupported, spaces, seed) => {
      // The unsupported members go anywhere among the supported ones, which keep their order (the last repeated key wins).
      const mixed = supported.map(([k, v]) => `${k}=:${v.toString('base64')}:`)
      unsupported.forEach(([k, v], i) => mixed.splice((seed + i * 7) % (mixed.length + 1), 0, `${k}=:${Buffer.from(v).toString('base64')}:`))
      const field = ' '.repeat(seed % 3) + mixed.map((m, i) => (i === 0 ? m : spaces[i % 8] + ',' + spaces[(i + 3) % 8] + m)).join('') + (mixed.length ? spaces[7] : '')
      const got = digests(field)
      const want = digests(serializeDigestField(supported))
      if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`${field}: got ${JSON.stringify(got)} want ${JSON.stringify(want)}`)
    },
  ))

  holds(tt, 'any dictionary RFC 9651 §4.1 serializes parses back to its members', fc.property(fc.array(fc.tuple(keyArb, memberArb), { maxLength: 5 }), fc.constantFrom(',', ', ', ' ,\t'), (members, separator) => {
    const field = members.map(([k, m]) => serializeMember(k, m)).join(separator)
    const parsed = parseDictionary(field)
    if (!parsed.ok) throw new Error(`${field}: ${parsed.reason}`)
    const got = JSON.stringify([...parsed.value].map(([k, m]) => [k, viewMember(m)]))
    const want = JSON.stringify([...new Map(members)].map(([k, m]) => [k, modelMember(m)]))
    if (got !== want) throw new Error(`${field}: got ${got} want ${want}`)
  }))

  holds(tt, 'never throws, on any input; a failure says why', fc.property(
    fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: fc.constantFrom(...'sha-256=:;,()"?@%*1 \t\\AZ+/'), maxLength: 40 })),
    (field) => {
      for (const parsed of [parseDictionary(field), parseDigestField(field), parseWantDigestField(field)]) {
        if (!parsed.ok && !parsed.reason) throw new Error('no reason')
      }
    },
  ))

  holds(tt, 'a field cut anywhere inside a digest is malformed or names fewer digests', fc.property(digestArb, fc.nat(), ([algorithm, digest], at) => {
    const field = serializeDigestField([[algorithm, digest]])
    const cut = field.slice(0, 1 + (at % (field.length - 1)))
    const got = digests(cut)
    if (got !== 'malformed' && Object.keys(got).length !== 0) throw new Error(`${cut}: ${JSON.stringify(got)}`)
  }))

  holds(tt, 'the chosen algorithm is an acceptable one of the highest preference', fc.property(
    fc.array(fc.tuple(fc.oneof(algorithmArb, unsupportedArb), fc.integer({ min: 0, max: 10 })), { maxLength: 5 }),
    (prefs) => {
      const parsed = parseWantDigestField(prefs.map(([k, v]) => `${k}=${v}`).join(', '))
      if (!parsed.ok) throw new Error(parsed.reason)
      const last = new Map(prefs)
      const supported = DIGEST_ALGORITHMS.filter((a) => (last.get(a) ?? 0) > 0)
      const chosen = chooseDigestAlgorithm(parsed.value)
      if (supported.length === 0) {
        if (chosen !== null) throw new Error(`chose ${chosen} though none is acceptable`)
        return
      }
      const best = Math.max(...supported.map((a) => last.get(a)!))
      if (chosen === null || last.get(chosen) !== best) throw new Error(`chose ${chosen}, best preference ${best}`)
      if (chosen === 'sha-512' && last.get('sha-256') === best) throw new Error('a tie goes to sha-256')
    },
  ))

  holds(tt, 'preferences outside 0..10 are malformed', fc.property(fc.oneof(fc.integer({ min: 11, max: 10 ** 12 }), fc.integer({ min: -(10 ** 12), max: -1 })), algorithmArb, (n, algorithm) => {
    if (wants(`${algorithm}=${n}`) !== 'malformed') throw new Error(`${n} accepted`)
  }))
})
