// A small Server-Sent Events client over node:http for the tests: it parses the stream as the
// EventSource algorithm does (id, event, data, retry; comment lines kept apart) and lets a test
// wait for the events it expects.
import http from 'node:http'

export interface SseEvent {
  id: string | undefined
  event: string
  data: string
  /** `data` parsed as JSON (undefined when it is not JSON). */
  json: any
}

export interface SseStream {
  status: number
  headers: http.IncomingHttpHeaders
  events: SseEvent[]
  comments: string[]
  retry: number | undefined
  /** Resolves with the events once `predicate` holds for the ones received so far. */
  until(predicate: (events: SseEvent[]) => boolean, timeoutMs?: number, what?: string): Promise<SseEvent[]>
  /** Resolves once the server has ended or cut the stream. */
  ended: Promise<void>
  response: http.IncomingMessage
  close(): void
}

/** Opens `url` and resolves once the response head has arrived; non-200 replies are read whole into `events[0].data`. */
export function openSse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { headers: { accept: 'text/event-stream', ...headers } }, (response) => {
      const stream: SseStream = {
        status: response.statusCode ?? 0,
        headers: response.headers,
        events: [],
        comments: [],
        retry: undefined,
        response,
        ended: new Promise<void>((done) => {
          response.on('close', () => done())
          response.on('error', () => done())
        }),
        until: (predicate, timeoutMs = 10_000, what = 'expected events') => {
          if (predicate(stream.events)) return Promise.resolve(stream.events)
          return new Promise((ok, fail) => {
            const timer = setTimeout(() => {
              waiters.delete(check)
              fail(new Error(`${what} did not arrive within ${timeoutMs} ms; got ${stream.events.map((e) => e.event).join(', ')}`))
            }, timeoutMs)
            const check = () => {
              if (!predicate(stream.events)) return
              clearTimeout(timer)
              waiters.delete(check)
              ok(stream.events)
            }
            waiters.add(check)
          })
        },
        close: () => request.destroy(),
      }
      const waiters = new Set<() => void>()
      let buffer = ''
      let id: string | undefined
      let event = ''
      let data: string[] = []
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => {
        buffer += chunk
        let newline: number
        while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
          const line = buffer.slice(0, newline)
          buffer = buffer.slice(newline + (buffer.startsWith('\r\n', newline) ? 2 : 1))
          if (line === '') {
            if (data.length > 0) {
              const text = data.join('\n')
              let json: any
              try {
                json = JSON.parse(text)
              } catch {
                json = undefined
              }
              stream.events.push({ id, event: event || 'message', data: text, json })
            }
            event = ''
            data = []
            continue
          }
          if (line.startsWith(':')) {
            stream.comments.push(line.slice(1).trim())
            continue
          }
          const colon = line.indexOf(':')
          const field = colon < 0 ? line : line.slice(0, colon)
          let value = colon < 0 ? '' : line.slice(colon + 1)
          if (value.startsWith(' ')) value = value.slice(1)
          if (field === 'id') id = value
          else if (field === 'event') event = value
          else if (field === 'data') data.push(value)
          else if (field === 'retry' && /^\d+$/.test(value)) stream.retry = Number(value)
        }
        for (const check of [...waiters]) check()
      })
      if (stream.status !== 200) {
        let body = ''
        response.on('data', (chunk: string) => (body += chunk))
        response.on('end', () => {
          stream.events.push({ id: undefined, event: 'body', data: body, json: safeJson(body) })
          resolve(stream)
        })
        return
      }
      resolve(stream)
    })
    request.on('error', reject)
  })
}

function safeJson(text: string): any {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/** The sequence number in an event id "<epoch>-<seq>". */
export function seqOf(id: string | undefined): number {
  const m = /-(\d+)$/.exec(id ?? '')
  if (!m) throw new Error(`not an event id: ${id}`)
  return Number(m[1])
}
