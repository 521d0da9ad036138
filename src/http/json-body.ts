import type { FastifyInstance, FastifyRequest } from 'fastify'

/** A JSON body that does not parse: a 400 whose message says where. */
export class JsonBodyError extends Error {
  readonly statusCode = 400
  readonly code = 'FST_ERR_CTP_INVALID_JSON_BODY'
}

/**
 * Fastify's own JSON parser (with its prototype-poisoning checks), whose errors say where the body
 * stops being JSON: Fastify's say only "Body is not valid JSON", and V8's wording and positions vary.
 */
export function jsonBodyParser(app: FastifyInstance) {
  const parse = app.getDefaultJsonParser('error', 'error')
  return (request: FastifyRequest, body: string | Buffer, done: (err: Error | null, value?: unknown) => void): void => {
    const text = typeof body === 'string' ? body : body.toString('utf8')
    parse(request, text, (err: Error | null, value?: unknown) => {
      if (!err) return done(null, value)
      if ((err as { code?: string }).code === 'FST_ERR_CTP_EMPTY_JSON_BODY') return done(new JsonBodyError('the body is empty, but Content-Type says application/json'))
      const at = locateJsonError(text)
      done(
        new JsonBodyError(
          at
            ? `the body is not valid JSON at line ${at.line}, column ${at.column} (character ${at.position}): ${at.reason}`
            : 'the body is not accepted as JSON: "__proto__" and "constructor"."prototype" keys are refused',
        ),
      )
    })
  }
}

export interface JsonErrorLocation {
  /** 0-based offset in the text, in UTF-16 code units. */
  position: number
  /** 1-based. */
  line: number
  /** 1-based. */
  column: number
  reason: string
}

/** Where `text` first stops being JSON (RFC 8259), or undefined when it is JSON. */
export function locateJsonError(text: string): JsonErrorLocation | undefined {
  let i = 0
  class Stop extends Error {}
  const fail = (reason: string): never => {
    throw Object.assign(new Stop(), { at: i, reason: i >= text.length ? 'it ends too early' : reason })
  }
  const ws = () => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++
  }
  const shown = () => JSON.stringify(text[i])
  const string = () => {
    i++
    for (;;) {
      const c = text[i]
      if (c === undefined) fail('unterminated string')
      if (c === '"') return void i++
      if (c === '\\') {
        const e = text[i + 1]
        if (e === 'u') {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) fail('bad \\u escape')
          i += 6
        } else if (e !== undefined && '"\\/bfnrt'.includes(e)) {
          i += 2
        } else {
          i++
          fail(`bad escape \\${e ?? ''}`)
        }
      } else if (c < ' ') fail('control character in a string (escape it)')
      else i++
    }
  }
  const isDigit = (c: string | undefined) => c !== undefined && c >= '0' && c <= '9'
  const digits = (what: string) => {
    if (!isDigit(text[i])) fail(`expected a digit ${what}, found ${shown()}`)
    while (isDigit(text[i])) i++
  }
  const number = () => {
    if (text[i] === '-') i++
    if (text[i] === '0') i++
    else digits('in a number')
    if (text[i] === '.') {
      i++
      digits('after "."')
    }
    if (text[i] === 'e' || text[i] === 'E') {
      i++
      if (text[i] === '+' || text[i] === '-') i++
      digits('in the exponent')
    }
  }
  const value = (): void => {
    ws()
    const c = text[i]
    if (c === '{') {
      i++
      ws()
      if (text[i] === '}') return void i++
      for (;;) {
        ws()
        if (text[i] !== '"') fail(`expected a double-quoted property name, found ${shown()}`)
        string()
        ws()
        if (text[i] !== ':') fail(`expected ':' after a property name, found ${shown()}`)
        i++
        value()
        ws()
        if (text[i] === '}') return void i++
        if (text[i] !== ',') fail(`expected ',' or '}' in an object, found ${shown()}`)
        i++
      }
    }
    if (c === '[') {
      i++
      ws()
      if (text[i] === ']') return void i++
      for (;;) {
        value()
        ws()
        if (text[i] === ']') return void i++
        if (text[i] !== ',') fail(`expected ',' or ']' in an array, found ${shown()}`)
        i++
      }
    }
    if (c === '"') return string()
    if (c === '-' || isDigit(c)) return number()
    for (const word of ['true', 'false', 'null']) if (text.startsWith(word, i)) return void (i += word.length)
    fail(`expected a JSON value, found ${shown()}`)
  }
  try {
    value()
    ws()
    if (i < text.length) fail(`unexpected ${shown()} after the JSON value`)
    return undefined
  } catch (err) {
    if (!(err instanceof Stop)) throw err
    const { at, reason } = err as Stop & { at: number; reason: string }
    const before = text.slice(0, at)
    const line = before.split('\n').length
    return { position: at, line, column: at - (before.lastIndexOf('\n') + 1) + 1, reason }
  }
}
