// The digest fields of RFC 9530: `Content-Digest` and `Repr-Digest` (§2, §3) and the integrity preference
// fields `Want-Content-Digest` and `Want-Repr-Digest` (§4). All four are Structured Field Dictionaries
// (RFC 8941, now RFC 9651, §3.2), parsed here by the algorithm of RFC 9651 §4.2: a field that fails it is
// malformed as a whole.

/** The hashing algorithms of the RFC 9530 §5 registry the service computes ("Active" there; the rest are deprecated). */
export type DigestAlgorithm = 'sha-256' | 'sha-512'
export const DIGEST_ALGORITHMS: readonly DigestAlgorithm[] = ['sha-256', 'sha-512']
/** The node:crypto name and the digest size of each. */
export const DIGEST_SPECS: Record<DigestAlgorithm, { hash: string; bytes: number }> = {
  'sha-256': { hash: 'sha256', bytes: 32 },
  'sha-512': { hash: 'sha512', bytes: 64 },
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; reason: string }

// ------------------------------------------------------------------ Structured Field Dictionaries

/** A Bare Item (RFC 9651 §3.3): what a member or a parameter carries. */
export type BareItem =
  | { type: 'integer' | 'decimal' | 'date'; value: number }
  | { type: 'string' | 'token' | 'display'; value: string }
  | { type: 'bytes'; value: Buffer }
  | { type: 'boolean'; value: boolean }
export type Parameters = Map<string, BareItem>
export type Item = { value: BareItem; params: Parameters }
/** A dictionary member: an Item or an Inner List (RFC 9651 §3.2). */
export type Member = ({ kind: 'item' } & Item) | { kind: 'inner'; items: Item[]; params: Parameters }

class SyntaxFailure extends Error {}
const fail = (reason: string): never => {
  throw new SyntaxFailure(reason)
}

const LCALPHA = /[a-z]/
const DIGIT = /[0-9]/
const KEY_REST = /[a-z0-9_.*-]/
const TOKEN_FIRST = /[A-Za-z*]/
// tchar (RFC 9110 §5.6.2), ":" and "/" (RFC 9651 §3.3.4).
const TOKEN_REST = /[!#$%&'*+.^_`|~0-9A-Za-z:/-]/
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

class Input {
  at = 0
  constructor(readonly text: string) {}
  get done(): boolean {
    return this.at >= this.text.length
  }
  peek(): string {
    return this.text[this.at] ?? ''
  }
  take(): string {
    return this.text[this.at++] ?? ''
  }
  skipSP(): void {
    while (this.peek() === ' ') this.at++
  }
  skipOWS(): void {
    while (this.peek() === ' ' || this.peek() === '\t') this.at++
  }
}

/**
 * Parses a Dictionary field value (RFC 9651 §4.2, §4.2.2), several field lines combined with commas
 * (§4.2: "combine them with a comma"). Later members with a key already seen overwrite its value in place.
 */
export function parseDictionary(field: string | string[]): ParseResult<Map<string, Member>> {
  const text = Array.isArray(field) ? field.join(',') : field
  try {
    // §4.2 step 1: a field value that is not ASCII fails.
    if (!/^[\x00-\x7f]*$/.test(text)) fail('it is not ASCII')
    const input = new Input(text)
    input.skipSP()
    const dict = new Map<string, Member>()
    while (!input.done) {
      const key = parseKey(input)
      let member: Member
      if (input.peek() === '=') {
        input.take()
        member = parseItemOrInnerList(input)
      } else member = { kind: 'item', value: { type: 'boolean', value: true }, params: parseParameters(input) }
      dict.set(key, member)
      input.skipOWS()
      if (input.done) break
      if (input.take() !== ',') fail(`a "," must separate the members (at ${input.at - 1})`)
      input.skipOWS()
      if (input.done) fail('a trailing ","')
    }
    input.skipSP()
    if (!input.done) fail(`unexpected ${JSON.stringify(input.peek())} at ${input.at}`)
    return { ok: true, value: dict }
  } catch (err) {
    if (err instanceof SyntaxFailure) return { ok: false, reason: `not a Structured Field Dictionary (RFC 9651 §4.2): ${err.message}` }
    throw err
  }
}

function parseItemOrInnerList(input: Input): Member {
  if (input.peek() !== '(') return { kind: 'item', ...parseItem(input) }
  input.take()
  const items: Item[] = []
  for (;;) {
    input.skipSP()
    if (input.done) fail('an inner list that does not end')
    if (input.peek() === ')') {
      input.take()
      return { kind: 'inner', items, params: parseParameters(input) }
    }
    items.push(parseItem(input))
    if (input.peek() !== ' ' && input.peek() !== ')') fail(`an inner list item followed by ${JSON.stringify(input.peek())}`)
  }
}

function parseItem(input: Input): Item {
  return { value: parseBareItem(input), params: parseParameters(input) }
}

// §4.2.3.2
function parseParameters(input: Input): Parameters {
  const params: Parameters = new Map()
  while (input.peek() === ';') {
    input.take()
    input.skipSP()
    const key = parseKey(input)
    let value: BareItem = { type: 'boolean', value: true }
    if (input.peek() === '=') {
      input.take()
      value = parseBareItem(input)
    }
    params.set(key, value)
  }
  return params
}

// §4.2.3.3: key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )
function parseKey(input: Input): string {
  const first = input.peek()
  if (!(LCALPHA.test(first) || first === '*')) fail(`a key cannot start with ${JSON.stringify(first)} (keys are lower case)`)
  const start = input.at
  while (!input.done && KEY_REST.test(input.peek())) input.at++
  return input.text.slice(start, input.at)
}

// §4.2.3.1
function parseBareItem(input: Input): BareItem {
  const c = input.peek()
  if (c === '-' || DIGIT.test(c)) return parseNumber(input)
  if (c === '"') return { type: 'string', value: parseString(input) }
  if (TOKEN_FIRST.test(c)) return { type: 'token', value: parseToken(input) }
  if (c === ':') return { type: 'bytes', value: parseByteSequence(input) }
  if (c === '?') return { type: 'boolean', value: parseBoolean(input) }
  if (c === '@') {
    input.take()
    const n = parseNumber(input)
    if (n.type !== 'integer') fail('a date must be an integer (RFC 9651 §4.2.9)')
    return { type: 'date', value: n.value }
  }
  if (c === '%') return { type: 'display', value: parseDisplayString(input) }
  return fail(c === '' ? 'a value is missing' : `no value starts with ${JSON.stringify(c)}`)
}

// §4.2.4: at most 15 integer digits; a decimal has at most 12 before and 3 after the point.
function parseNumber(input: Input): { type: 'integer' | 'decimal'; value: number } {
  let sign = 1
  if (input.peek() === '-') {
    input.take()
    sign = -1
  }
  if (!DIGIT.test(input.peek())) fail('a number needs a digit')
  let digits = ''
  let decimal = false
  while (!input.done) {
    const c = input.peek()
    if (DIGIT.test(c)) digits += input.take()
    else if (!decimal && c === '.') {
      if (digits.length > 12) fail('a decimal has more than 12 integer digits')
      digits += input.take()
      decimal = true
    } else break
    if (!decimal && digits.length > 15) fail('an integer has more than 15 digits')
    if (decimal && digits.length > 16) fail('a decimal has more than 16 characters')
  }
  if (!decimal) return { type: 'integer', value: sign * Number(digits) }
  if (digits.endsWith('.')) fail('a decimal ends with "."')
  if (digits.length - digits.indexOf('.') - 1 > 3) fail('a decimal has more than 3 fractional digits')
  return { type: 'decimal', value: sign * Number(digits) }
}

// §4.2.5: printable ASCII, with \" and \\ only.
function parseString(input: Input): string {
  input.take()
  let out = ''
  for (;;) {
    if (input.done) fail('a string that does not end')
    const c = input.take()
    if (c === '\\') {
      const next = input.take()
      if (next !== '"' && next !== '\\') fail('only \\" and \\\\ may be escaped in a string')
      out += next
    } else if (c === '"') return out
    else if (c < ' ' || c > '~') fail('a control character in a string')
    else out += c
  }
}

// §4.2.6
function parseToken(input: Input): string {
  const start = input.at
  input.take()
  while (!input.done && TOKEN_REST.test(input.peek())) input.at++
  return input.text.slice(start, input.at)
}

// §4.2.7: base64 (RFC 4648 §4) between colons; missing "=" padding is tolerated, as the section asks.
function parseByteSequence(input: Input): Buffer {
  input.take()
  const end = input.text.indexOf(':', input.at)
  if (end < 0) fail('a byte sequence that does not end with ":"')
  const b64 = input.text.slice(input.at, end)
  input.at = end + 1
  if (!BASE64.test(b64) || b64.replace(/=+$/, '').length % 4 === 1 || (b64.includes('=') && b64.length % 4 !== 0)) {
    fail('a byte sequence that is not base64')
  }
  return Buffer.from(b64, 'base64')
}

// §4.2.8
function parseBoolean(input: Input): boolean {
  input.take()
  const c = input.take()
  if (c !== '0' && c !== '1') fail('a boolean is ?0 or ?1')
  return c === '1'
}

// RFC 9651 §4.2.10: %"…" with lower-case %xx escapes of UTF-8.
function parseDisplayString(input: Input): string {
  input.take()
  if (input.take() !== '"') fail('a display string starts with %"')
  const bytes: number[] = []
  for (;;) {
    if (input.done) fail('a display string that does not end')
    const c = input.take()
    if (c < ' ' || c > '~') fail('a control character in a display string')
    if (c === '%') {
      const hex = input.take() + input.take()
      if (!/^[0-9a-f]{2}$/.test(hex)) fail('a display string escape is % and two lower-case hex digits')
      bytes.push(parseInt(hex, 16))
    } else if (c === '"') {
      try {
        return new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes))
      } catch {
        return fail('a display string that is not UTF-8')
      }
    } else bytes.push(c.charCodeAt(0))
  }
}

// ------------------------------------------------------------------ RFC 9530

const isSupported = (key: string): key is DigestAlgorithm => (DIGEST_ALGORITHMS as readonly string[]).includes(key)

/**
 * `Content-Digest` or `Repr-Digest` (RFC 9530 §2, §3): a Dictionary whose every member value is a Byte
 * Sequence. Returns the digests of the supported algorithms (§5), in field order; members naming any other
 * algorithm are ignored (§2: "a recipient MAY ignore any or all digests"), an empty map when none is
 * supported. A supported digest of the wrong size is malformed (it can match no content).
 */
export function parseDigestField(field: string | string[]): ParseResult<Map<DigestAlgorithm, Buffer>> {
  const dict = parseDictionary(field)
  if (!dict.ok) return dict
  const digests = new Map<DigestAlgorithm, Buffer>()
  for (const [key, member] of dict.value) {
    if (member.kind !== 'item' || member.value.type !== 'bytes') return { ok: false, reason: `the ${key} member is not a Byte Sequence (RFC 9530 §2: ${key}=:<base64>:)` }
    if (!isSupported(key)) continue
    const bytes = DIGEST_SPECS[key].bytes
    if (member.value.value.length !== bytes) return { ok: false, reason: `the ${key} digest is ${member.value.value.length} bytes, not ${bytes}` }
    digests.set(key, member.value.value)
  }
  return { ok: true, value: digests }
}

/**
 * `Want-Content-Digest` or `Want-Repr-Digest` (RFC 9530 §4): a Dictionary whose member values are Integers
 * from 0 to 10, 0 meaning "not acceptable" and a higher one more preferred. Returns the preferences of the
 * supported algorithms (0 included); unsupported ones are ignored.
 */
export function parseWantDigestField(field: string | string[]): ParseResult<Map<DigestAlgorithm, number>> {
  const dict = parseDictionary(field)
  if (!dict.ok) return dict
  const prefs = new Map<DigestAlgorithm, number>()
  for (const [key, member] of dict.value) {
    if (member.kind !== 'item' || member.value.type !== 'integer' || member.value.value < 0 || member.value.value > 10) {
      return { ok: false, reason: `the ${key} member is not an Integer from 0 to 10 (RFC 9530 §4)` }
    }
    if (isSupported(key)) prefs.set(key, member.value.value)
  }
  return { ok: true, value: prefs }
}

/**
 * The algorithm to answer a preference field with: the most preferred supported one, never one marked 0
 * ("not acceptable", RFC 9530 §4); sha-256 on a tie. null when none is acceptable.
 */
export function chooseDigestAlgorithm(prefs: Map<DigestAlgorithm, number>): DigestAlgorithm | null {
  let best: DigestAlgorithm | null = null
  for (const algorithm of DIGEST_ALGORITHMS) {
    const weight = prefs.get(algorithm) ?? 0
    if (weight > 0 && (best === null || weight > prefs.get(best)!)) best = algorithm
  }
  return best
}

/** A `Content-Digest` / `Repr-Digest` field value (RFC 9530 §2; Byte Sequences as RFC 9651 §4.1.8 serializes them). */
export function serializeDigestField(digests: Iterable<readonly [DigestAlgorithm, Buffer]>): string {
  return [...digests].map(([algorithm, digest]) => `${algorithm}=:${digest.toString('base64')}:`).join(', ')
}
