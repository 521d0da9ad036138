import t from 'tap'
import fc from 'fast-check'
import { parsePrefer, preferredWaitSeconds, type Preference } from '../../../src/http/headers/prefer.js'

const NUM_RUNS = 500

// Runs a property and turns a counterexample into one failing tap assertion.
function holds(tt: Pick<typeof t, 'notOk'>, name: string, property: fc.IProperty<any>): void {
  const out = fc.check(property, { numRuns: NUM_RUNS })
  tt.notOk(out.failed, out.failed ? `${name}\n${fc.defaultReportMessage(out)}` : name)
}

// Plain-object view of the result so tap compares it structurally.
function view(header: string | string[] | undefined): Record<string, { value: string | undefined; params: Record<string, string | undefined> }> {
  return Object.fromEntries([...parsePrefer(header)].map(([k, p]) => [k, { value: p.value, params: { ...p.params } }]))
}
const pref = (value?: string, params: Record<string, string | undefined> = {}) => ({ value, params })

t.test('RFC 7240 examples', async (tt) => {
  tt.same(view('respond-async, wait=100'), { 'respond-async': pref(), wait: pref('100') }, '§2 / §4.1 respond-async with wait')
  tt.same(view('return=minimal'), { return: pref('minimal') }, '§4.2 return=minimal')
  tt.same(view('return=representation'), { return: pref('representation') }, '§4.2 return=representation')
  tt.same(view('handling=lenient'), { handling: pref('lenient') }, '§4.4 handling=lenient')
  tt.same(view('foo; bar'), { foo: pref(undefined, { bar: undefined }) }, '§2 parameter without value')
  tt.same(view('foo; bar=""'), { foo: pref(undefined, { bar: undefined }) }, '§2 empty quoted parameter value is no value')
  tt.same(view('foo=""; bar'), { foo: pref(undefined, { bar: undefined }) }, '§2 empty quoted preference value is no value')
})

t.test('names, values and occurrences (RFC 7240 §2)', async (tt) => {
  tt.same(view('RESPOND-ASYNC, Wait=5'), { 'respond-async': pref(), wait: pref('5') }, 'names are lower-cased')
  tt.same(view('return=Minimal'), { return: pref('Minimal') }, 'values keep their case')
  tt.same(view('wait=5, wait=10'), { wait: pref('5') }, 'first occurrence wins')
  tt.same(view('Wait=5, WAIT=10'), { wait: pref('5') }, 'first occurrence wins across case')
  tt.same(view(['wait=5', 'wait=10']), { wait: pref('5') }, 'first occurrence wins across field lines')
  tt.same(view(['respond-async', 'return=minimal']), { 'respond-async': pref(), return: pref('minimal') }, 'field lines combine like a list (RFC 9110 §5.3)')
  tt.same(view('foo; A=1; a=2; B'), { foo: pref(undefined, { a: '1', b: undefined }) }, 'parameter names lower-cased, first wins')
  tt.same(view('foo=bar=baz'), {}, '"=" is not a tchar')
})

t.test('whitespace and list syntax (RFC 9110 §5.6.1, §5.6.3)', async (tt) => {
  tt.same(view('wait = 10'), { wait: pref('10') }, 'BWS around "="')
  tt.same(view('wait\t=\t10'), { wait: pref('10') }, 'HTAB BWS')
  tt.same(view(' foo ; a=1 ;b="2" , bar '), { foo: pref(undefined, { a: '1', b: '2' }), bar: pref() }, 'OWS around ";" and ","')
  tt.same(view(', ,foo,,'), { foo: pref() }, 'empty list elements are ignored')
  tt.same(view('foo;;a=1;'), { foo: pref(undefined, { a: '1' }) }, 'empty parameters are ignored')
  tt.same(view('foo=1;'), { foo: pref('1') }, 'trailing ";"')
  tt.same(view('wait='), { wait: pref() }, 'a bare "=" is treated as an empty value')
})

t.test('quoted-string values (RFC 9110 §5.6.4)', async (tt) => {
  tt.same(view('foo="a,b;c", bar'), { foo: pref('a,b;c'), bar: pref() }, 'separators inside quotes')
  tt.same(view('foo="say \\"hi\\""'), { foo: pref('say "hi"') }, 'quoted-pair unescaped')
  tt.same(view('foo="back\\\\slash"'), { foo: pref('back\\slash') }, 'escaped backslash')
  tt.same(view('foo; p="x, y"; q=z'), { foo: pref(undefined, { p: 'x, y', q: 'z' }) }, 'quoted parameter value')
  tt.same(view('foo="caf\xe9"'), { foo: pref('caf\xe9') }, 'obs-text allowed inside quotes')
  tt.same(view('foo="10"'), { foo: pref('10') }, 'quoted and token forms are equivalent')
})

t.test('malformed preferences are dropped, the rest kept', async (tt) => {
  tt.same(view('foo bar, wait=3'), { wait: pref('3') }, 'two tokens')
  tt.same(view('=1, wait=3'), { wait: pref('3') }, 'missing name')
  tt.same(view('foo=a b, wait=3'), { wait: pref('3') }, 'space inside a token value')
  tt.same(view('foo=(x), wait=3'), { wait: pref('3') }, 'non-tchar value')
  tt.same(view('foo; a b, wait=3'), { wait: pref('3') }, 'bad parameter drops its preference')
  tt.same(view('foo="x"y, wait=3'), { wait: pref('3') }, 'junk after a quoted-string')
  tt.same(view('foo="ctl\x01", wait=3'), { wait: pref('3') }, 'control character in quotes')
  tt.same(view('foo=caf\xe9, wait=3'), { wait: pref('3') }, 'obs-text is not a token')
  tt.same(view('foo=\u20ac, wait=3'), { wait: pref('3') }, 'non-latin1 text')
  tt.same(view('foo="unterminated, wait=3'), {}, 'an unterminated quote swallows the rest')
  tt.same(view('wait=1 , wait=2'), { wait: pref('1') }, 'OWS before a comma is fine')
})

t.test('absent and hostile input', async (tt) => {
  tt.equal(parsePrefer(undefined).size, 0, 'undefined')
  tt.equal(parsePrefer('').size, 0, 'empty string')
  tt.equal(parsePrefer([]).size, 0, 'no field lines')
  const m = parsePrefer('__proto__=x; constructor=y; __proto__=z, toString')
  tt.equal(m.get('__proto__')?.value, 'x', '__proto__ is an ordinary name')
  tt.equal(m.get('__proto__')?.params.constructor, 'y', 'constructor is an ordinary parameter')
  tt.equal(m.get('__proto__')?.params.__proto__, 'z', '__proto__ is an ordinary parameter')
  tt.equal(m.get('toString')?.value, undefined, 'no inherited toString')
  tt.ok(m.has('tostring'), 'toString lower-cased')
  tt.equal(({} as Record<string, unknown>).x, undefined, 'no prototype pollution')
  tt.equal(parsePrefer(`${'a'.repeat(20000)}=1`).get('a'.repeat(20000))?.value, '1', 'long names are fine')
  tt.doesNotThrow(() => parsePrefer([1, null] as unknown as string[]), 'non-string lines are skipped')
})

t.test('preferredWaitSeconds (RFC 7240 §4.3)', async (tt) => {
  tt.equal(preferredWaitSeconds('wait=10', 60), 10, 'within the limit')
  tt.equal(preferredWaitSeconds('wait=100', 60), 60, 'clamped to the limit')
  tt.equal(preferredWaitSeconds('wait=60', 60), 60, 'at the limit')
  tt.equal(preferredWaitSeconds('wait=0', 60), 0, 'zero is a valid delta-seconds')
  tt.equal(preferredWaitSeconds('wait=007', 60), 7, 'leading zeros')
  tt.equal(preferredWaitSeconds(`wait=${'9'.repeat(400)}`, 60), 60, 'huge values clamp (RFC 9111 §1.2.2 spirit)')
  tt.equal(preferredWaitSeconds('respond-async, wait=5', 60), 5, 'alongside respond-async')
  tt.equal(preferredWaitSeconds(['respond-async', 'Wait=7'], 60), 7, 'across field lines, any case')
  tt.equal(preferredWaitSeconds('wait="10"', 60), 10, 'quoted delta-seconds')
  tt.equal(preferredWaitSeconds('wait=5, wait=100', 60), 5, 'first occurrence wins')
  tt.equal(preferredWaitSeconds('wait=x, wait=5', 60), undefined, 'an invalid first occurrence still wins')
  tt.equal(preferredWaitSeconds('wait=abc', 60), undefined, 'not digits')
  tt.equal(preferredWaitSeconds('wait=-5', 60), undefined, 'negative')
  tt.equal(preferredWaitSeconds('wait=1.5', 60), undefined, 'fractional')
  tt.equal(preferredWaitSeconds('wait=1e3', 60), undefined, 'exponent')
  tt.equal(preferredWaitSeconds('wait', 60), undefined, 'no value')
  tt.equal(preferredWaitSeconds('wait=""', 60), undefined, 'empty value')
  tt.equal(preferredWaitSeconds('respond-async', 60), undefined, 'no wait preference')
  tt.equal(preferredWaitSeconds(undefined, 60), undefined, 'no header')
  tt.equal(preferredWaitSeconds('foo; wait=5', 60), undefined, 'a wait parameter is not the wait preference')
})

// ---------- properties ----------

interface Item { name: string; value: string | undefined; quote: boolean; params: { name: string; value: string | undefined; quote: boolean }[] }

const tokenArb = fc.oneof(
  fc.constantFrom('wait', 'Wait', 'WAIT', 'return', 'respond-async', 'handling', 'a', 'A'),
  fc.string({ unit: fc.constantFrom(...'abcXYZ09!#$%&\'*+.^_`|~-'), minLength: 1, maxLength: 6 }),
)
const quotedContent = fc.string({ unit: fc.constantFrom(...'ab ,;="\\\t\xe9'), maxLength: 8 })
const pairArb = fc.oneof(
  fc.record({ name: tokenArb, value: fc.constant(undefined), quote: fc.constant(false) }),
  fc.record({ name: tokenArb, value: tokenArb, quote: fc.constant(false) }),
  fc.record({ name: tokenArb, value: quotedContent, quote: fc.constant(true) }),
)
const itemArb: fc.Arbitrary<Item> = fc.tuple(pairArb, fc.array(pairArb, { maxLength: 3 })).map(([p, params]) => ({ ...p, params }))
const ows = fc.constantFrom('', '', ' ', '\t ')

function renderPair(p: { name: string; value: string | undefined; quote: boolean }, bws: string): string {
  if (p.value === undefined) return p.name
  const word = p.quote ? '"' + p.value.replace(/["\\]/g, (c) => '\\' + c) + '"' : p.value
  return `${p.name}${bws}=${bws}${word}`
}

function model(items: Item[]): Record<string, Preference> {
  const out: Record<string, Preference> = {}
  const norm = (v: string | undefined) => (v === '' ? undefined : v)
  for (const item of items) {
    const key = item.name.toLowerCase()
    if (Object.hasOwn(out, key)) continue
    const params: Record<string, string | undefined> = {}
    for (const p of item.params) if (!Object.hasOwn(params, p.name.toLowerCase())) params[p.name.toLowerCase()] = norm(p.value)
    out[key] = { value: norm(item.value), params }
  }
  return out
}

t.test('properties', async (tt) => {
  const listArb = fc.array(fc.tuple(itemArb, ows, ows), { maxLength: 6 })
  const render = (items: [Item, string, string][]) =>
    items.map(([item, a, b]) => a + [renderPair(item, b), ...item.params.map((p) => renderPair(p, b))].join(`${b};${a}`) + b)

  holds(tt, 'agrees with a first-occurrence model', fc.property(listArb, (items) => {
    const got = JSON.stringify(view(render(items).join(',')))
    const want = JSON.stringify(model(items.map(([i]) => i)))
    if (got !== want) throw new Error(`got ${got} want ${want}`)
  }))

  holds(tt, 'splitting the list across field lines changes nothing', fc.property(listArb, fc.nat(), (items, at) => {
    const elements = render(items)
    const cut = at % (elements.length + 1)
    const lines = [elements.slice(0, cut).join(','), elements.slice(cut).join(',')]
    if (JSON.stringify(view(lines)) !== JSON.stringify(view(elements.join(',')))) throw new Error('differs')
  }))

  holds(tt, 'never throws; names are non-empty lower-case tokens', fc.property(
    fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: fc.constantFrom(...'aW=;," \\\t1'), maxLength: 30 })),
    (header) => {
      for (const [name, p] of parsePrefer(header)) {
        if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name)) throw new Error(`bad name ${name}`)
        for (const k of Object.keys(p.params)) if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(k)) throw new Error(`bad param ${k}`)
      }
    },
  ))

  holds(tt, 'wait is clamped to the maximum', fc.property(
    fc.oneof(fc.nat({ max: 1000 }).map(String), fc.string({ unit: fc.constantFrom(...'0123456789'), minLength: 1, maxLength: 40 })),
    fc.nat({ max: 600 }),
    fc.array(fc.constantFrom('respond-async', 'return=minimal', 'handling=strict'), { maxLength: 2 }),
    (digits, max, others) => {
      const got = preferredWaitSeconds([...others, `wait=${digits}`].join(', '), max)
      const want = BigInt(digits) < BigInt(max) ? Number(digits) : max
      if (got !== want) throw new Error(`got ${got} want ${want}`)
    },
  ))
})
