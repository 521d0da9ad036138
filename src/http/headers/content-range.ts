// The `Content-Range` header of a partial PUT (RFC 9110 §14.4, §14.5).

export type ContentRange = { first: number; last: number; completeLength: number | null } // completeLength null for '/*'
export type ContentRangeResult = { ok: true; value: ContentRange } | { ok: false; reason: string }

// range-unit SP incl-range "/" ( complete-length / "*" ) (RFC 9110 §14.4); nothing else is tolerated.
const RANGE_RESP = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\d+)-(\d+)\/(\d+|\*)$/
const UNSATISFIED = /^bytes \*\/\d+$/i

const fail = (reason: string): ContentRangeResult => ({ ok: false, reason })

export function parseContentRange(header: string): ContentRangeResult {
  if (header === '') return fail('Content-Range is empty.')
  if (UNSATISFIED.test(header)) return fail('Content-Range "*/length" only describes a 416 reply, not a partial PUT.')
  const m = RANGE_RESP.exec(header)
  if (m === null) return fail('Content-Range must look like "bytes first-last/length" or "bytes first-last/*".')
  const [, unit, firstText, lastText, lengthText] = m
  if (unit.toLowerCase() !== 'bytes') return fail(`Content-Range unit "${unit}" is not supported; use "bytes".`)

  const first = toSafe(firstText)
  const last = toSafe(lastText)
  const completeLength = lengthText === '*' ? null : toSafe(lengthText)
  if (first === undefined || last === undefined || completeLength === undefined) {
    return fail('Content-Range positions must not exceed 9007199254740991.')
  }
  // RFC 9110 §14.4: an invalid incl-range, or one not inside the complete length, is unusable.
  if (last < first) return fail('Content-Range last-pos is before first-pos.')
  if (completeLength !== null && last >= completeLength) return fail('Content-Range last-pos is not inside the complete length.')
  return { ok: true, value: { first, last, completeLength } }
}

// Digits only reach here; anything past 2^53-1 cannot be represented exactly.
function toSafe(digits: string): number | undefined {
  const n = Number(digits)
  return Number.isSafeInteger(n) ? n : undefined
}
