// The `Range` request header for the `bytes` unit (RFC 9110 §14.1, §14.2).

export interface ByteRange { start: number; end: number } // inclusive end, both within [0, size-1]

export type RangeRequest =
  | { kind: 'none' }                        // no header, unknown unit, or invalid syntax (RFC: ignore it, serve 200 whole)
  | { kind: 'unsatisfiable' }               // valid syntax but no range-spec is satisfiable for this size: 416
  | { kind: 'ranges'; ranges: ByteRange[] } // >= 1 satisfiable ranges, clamped to the size

export interface RangeOptions { maxRanges?: number } // default 100

const MAX_HEADER_LENGTH = 8192
const DEFAULT_MAX_RANGES = 100
const NONE: RangeRequest = { kind: 'none' }
const UNSATISFIABLE: RangeRequest = { kind: 'unsatisfiable' }

// int-range = first-pos "-" [ last-pos ] / suffix-range = "-" suffix-length (RFC 9110 §14.1.1)
const RANGE_SPEC = /^(\d*)-(\d*)$/
// OWS is SP / HTAB (RFC 9110 §5.6.3)
const OWS_EDGES = /^[ \t]+|[ \t]+$/g

export function rangeLength(r: ByteRange): number {
  return r.end - r.start + 1
}

export function parseRange(header: string | undefined, size: number, options: RangeOptions = {}): RangeRequest {
  if (header === undefined || header.length > MAX_HEADER_LENGTH) return NONE
  // A size we cannot index into cannot be ranged; serve it whole.
  if (!Number.isSafeInteger(size) || size < 0) return NONE
  const maxRanges = options.maxRanges ?? DEFAULT_MAX_RANGES

  const value = header.replace(OWS_EDGES, '')
  const eq = value.indexOf('=')
  if (eq < 0 || value.slice(0, eq).toLowerCase() !== 'bytes') return NONE // RFC 9110 §14.1: range units are case-insensitive

  const elements = value.slice(eq + 1).split(',').map((e) => e.replace(OWS_EDGES, ''))
  const specs = elements.filter((e) => e !== '') // RFC 9110 §5.6.1: empty list elements are skipped
  if (specs.length === 0) return NONE // range-set = 1#range-spec

  const satisfiable: ByteRange[] = []
  for (const spec of specs) {
    const m = RANGE_SPEC.exec(spec)
    if (m === null) return NONE
    const [, first, last] = m
    const range = first === '' ? suffixRange(last, size) : intRange(first, last, size)
    if (range === 'invalid') return NONE
    if (range !== null) satisfiable.push(range)
  }
  if (satisfiable.length === 0) return UNSATISFIABLE

  const ranges = coalesce(satisfiable)
  // Like nginx's max_ranges: too many ranges is served as a plain 200 rather than refused.
  if (ranges.length > maxRanges) return NONE
  return { kind: 'ranges', ranges }
}

// Returns null when unsatisfiable (RFC 9110 §14.1.3); BigInt keeps arbitrarily long digit strings exact.
function intRange(first: string, last: string, size: number): ByteRange | null | 'invalid' {
  const firstPos = BigInt(first)
  if (last !== '' && BigInt(last) < firstPos) return 'invalid' // RFC 9110 §14.1.1
  if (firstPos >= BigInt(size)) return null
  const end = last === '' ? size - 1 : Number(minBig(BigInt(last), BigInt(size - 1)))
  return { start: Number(firstPos), end }
}

function suffixRange(suffix: string, size: number): ByteRange | null | 'invalid' {
  if (suffix === '') return 'invalid' // a bare "-"
  const length = BigInt(suffix)
  if (length === 0n || size === 0) return null // RFC 9110 §14.1.3: a zero suffix selects nothing
  const start = length >= BigInt(size) ? 0 : size - Number(length)
  return { start, end: size - 1 }
}

function minBig(a: bigint, b: bigint): bigint {
  return a < b ? a : b
}

// RFC 9110 §14.2 lets a server coalesce overlapping or adjacent ranges; doing so bounds the reply to `size` bytes.
function coalesce(ranges: ByteRange[]): ByteRange[] {
  const sorted = [...ranges].sort((a, b) => a.start - b.start)
  const touching = sorted.some((r, i) => i > 0 && r.start <= sorted[i - 1].end + 1)
  if (!touching) return ranges
  const merged: ByteRange[] = [{ ...sorted[0] }]
  for (const r of sorted.slice(1)) {
    const top = merged[merged.length - 1]
    if (r.start <= top.end + 1) top.end = Math.max(top.end, r.end)
    else merged.push({ ...r })
  }
  return merged
}
