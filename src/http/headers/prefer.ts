// The `Prefer` request header (RFC 7240).

export interface Preference { value: string | undefined; params: Record<string, string | undefined> }

// token [ BWS "=" BWS word ], word = token / quoted-string (RFC 7240 §2, RFC 9110 §5.6.2, §5.6.4).
const PAIR = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:[ \t]*=[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"|))?$/
const OWS_EDGES = /^[ \t]+|[ \t]+$/g

export function parsePrefer(header: string | string[] | undefined): Map<string, Preference> {
  const prefs = new Map<string, Preference>()
  const lines = header === undefined ? [] : Array.isArray(header) ? header : [header]
  for (const line of lines) {
    if (typeof line !== 'string') continue
    for (const element of splitOutsideQuotes(line, ',')) {
      const parsed = parsePreference(element)
      // RFC 7240 §2: names compare case-insensitively and only the first instance counts.
      if (parsed !== null && !prefs.has(parsed.name)) prefs.set(parsed.name, parsed.pref)
    }
  }
  return prefs
}

export function preferredWaitSeconds(header: string | string[] | undefined, maxSeconds: number): number | undefined {
  const value = parsePrefer(header).get('wait')?.value
  if (value === undefined || !/^\d+$/.test(value)) return undefined // RFC 7240 §4.3: wait = delta-seconds
  return Math.min(Number(value), maxSeconds)
}

// A preference we cannot fully parse is dropped whole, like any preference the server does not understand (RFC 7240 §2).
function parsePreference(element: string): { name: string; pref: Preference } | null {
  const [head = '', ...rest] = splitOutsideQuotes(element, ';').map((s) => s.replace(OWS_EDGES, ''))
  if (head === '') return null // RFC 9110 §5.6.1: empty list elements are ignored
  const first = parsePair(head)
  if (first === null) return null
  const params: Record<string, string | undefined> = Object.create(null) // names come from the client: no prototype keys
  for (const segment of rest) {
    if (segment === '') continue // `*( OWS ";" [ OWS parameter ] )` allows empty parameters
    const param = parsePair(segment)
    if (param === null) return null
    if (!Object.hasOwn(params, param.name)) params[param.name] = param.value
  }
  return { name: first.name, pref: { value: first.value, params } }
}

function parsePair(text: string): { name: string; value: string | undefined } | null {
  const m = PAIR.exec(text)
  if (m === null) return null
  const raw = m[2]
  const value = raw?.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw
  // RFC 7240 §2: an empty value is the same as no value at all.
  return { name: m[1].toLowerCase(), value: value === '' ? undefined : value }
}

function splitOutsideQuotes(text: string, separator: string): string[] {
  const parts: string[] = []
  let start = 0
  let quoted = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (quoted && c === '\\') i++
    else if (c === '"') quoted = !quoted
    else if (c === separator && !quoted) {
      parts.push(text.slice(start, i))
      start = i + 1
    }
  }
  parts.push(text.slice(start))
  return parts
}
