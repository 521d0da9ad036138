// Body framing of a `multipart/byteranges` 206 reply (RFC 9110 §14.6, RFC 2046 §5.1.1).
import { randomBytes } from 'node:crypto'
import { rangeLength, type ByteRange } from './byte-range.js'

export interface MultipartPlan { contentType: string; parts: { head: Buffer; range: ByteRange }[]; tail: Buffer; contentLength: number }

// Boundary characters that are both RFC 2046 bchars and RFC 9110 tchars, so the parameter needs no quoting.
const BOUNDARY = /^[0-9A-Za-z'+_.-]{1,70}$/
// A part's Content-Type is a header line: control characters would inject headers.
const HEADER_VALUE = /^[\x20-\x7e]+$/

export function makeBoundary(): string {
  return 'filemirror-' + randomBytes(12).toString('hex')
}

// Every head starts with CRLF, the first included (as Apache httpd does), so all parts frame alike.
export function planMultipartByteranges(ranges: ByteRange[], size: number, partContentType: string, boundary: string): MultipartPlan {
  if (!BOUNDARY.test(boundary)) throw new RangeError(`invalid multipart boundary: ${JSON.stringify(boundary)}`)
  if (!HEADER_VALUE.test(partContentType)) throw new RangeError('invalid part Content-Type')
  if (ranges.length === 0) throw new RangeError('multipart/byteranges needs at least one range')
  for (const r of ranges) {
    const valid = Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end) && r.start >= 0 && r.start <= r.end && r.end < size
    if (!valid) throw new RangeError(`range ${r.start}-${r.end} is outside a ${size}-byte representation`)
  }

  const parts = ranges.map((range) => ({
    head: Buffer.from(
      `\r\n--${boundary}\r\nContent-Type: ${partContentType}\r\nContent-Range: bytes ${range.start}-${range.end}/${size}\r\n\r\n`,
      'latin1',
    ),
    range: { start: range.start, end: range.end },
  }))
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1')
  const contentLength = parts.reduce((sum, p) => sum + p.head.length + rangeLength(p.range), tail.length)
  return { contentType: `multipart/byteranges; boundary=${boundary}`, parts, tail, contentLength }
}
