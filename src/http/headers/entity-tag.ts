// Entity tags and the preconditions that compare them (RFC 9110 §8.8.3, §13.1.1-§13.1.5, §13.2.2).

export interface EntityTag { weak: boolean; opaque: string } // opaque without the quotes

// entity-tag = [ %s"W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text (RFC 9110 §8.8.3)
const ENTITY_TAG = /(W\/)?"([\x21\x23-\x7e\x80-\xff]*)"/y
const ONE_TAG = /^[ \t]*(W\/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*$/
// What we generate stays visible ASCII, the conservative half of etagc.
const OPAQUE_OUT = /^[\x21\x23-\x7e]*$/

export function formatEntityTag(opaque: string): string {
  if (!OPAQUE_OUT.test(opaque)) throw new RangeError(`entity-tag opaque part has a forbidden character: ${JSON.stringify(opaque)}`)
  return `"${opaque}"`
}

// Commas are legal inside an opaque-tag, so the list is scanned tag by tag rather than split.
export function parseEntityTagList(header: string): '*' | EntityTag[] | null {
  if (/^[ \t]*\*[ \t]*$/.test(header)) return '*'
  const tags: EntityTag[] = []
  let i = 0
  let needComma = false
  while (true) {
    while (header[i] === ' ' || header[i] === '\t') i++
    if (i >= header.length) return tags
    if (header[i] === ',') {
      i++
      needComma = false // RFC 9110 §5.6.1: empty list elements are allowed
      continue
    }
    if (needComma) return null
    ENTITY_TAG.lastIndex = i
    const m = ENTITY_TAG.exec(header)
    if (m === null) return null
    tags.push({ weak: m[1] !== undefined, opaque: m[2] })
    i = ENTITY_TAG.lastIndex
    needComma = true
  }
}

// RFC 9110 §13.1.1: a malformed If-Match fails, so a write never proceeds on a misread condition.
export function ifMatchPasses(header: string | undefined, currentEtag: string | undefined): boolean {
  if (header === undefined) return true
  const list = parseEntityTagList(header)
  if (list === null) return false
  const current = parseOne(currentEtag)
  if (list === '*') return current !== null
  return current !== null && list.some((tag) => strongMatch(tag, current))
}

// RFC 9110 §13.1.2; a malformed If-None-Match also fails, so `If-None-Match: *` typos never overwrite.
export function ifNoneMatchPasses(header: string | undefined, currentEtag: string | undefined): boolean {
  if (header === undefined) return true
  const list = parseEntityTagList(header)
  if (list === null) return false
  const current = parseOne(currentEtag)
  if (list === '*') return current === null
  return current === null || !list.some((tag) => tag.opaque === current.opaque) // weak comparison (§8.8.3.2)
}

// RFC 9110 §13.1.5: an HTTP-date never validates because we send no Last-Modified, and weak tags never match.
export function ifRangePasses(header: string | undefined, currentEtag: string | undefined): boolean {
  if (header === undefined) return true
  const tag = parseOne(header)
  const current = parseOne(currentEtag)
  return tag !== null && current !== null && strongMatch(tag, current)
}

function parseOne(value: string | undefined): EntityTag | null {
  const m = value === undefined ? null : ONE_TAG.exec(value)
  return m === null ? null : { weak: m[1] !== undefined, opaque: m[2] }
}

// RFC 9110 §8.8.3.2: strong comparison needs both tags strong and identical.
function strongMatch(a: EntityTag, b: EntityTag): boolean {
  return !a.weak && !b.weak && a.opaque === b.opaque
}
