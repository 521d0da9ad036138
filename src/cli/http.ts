// The CLI's view of the service: URLs, the bearer token, errors. Only the HTTP API, nothing of the engine.
import { request as httpRequest, type IncomingMessage } from 'node:http'
import { request as httpsRequest } from 'node:https'

/** An error the CLI reports and exits on: 1 for a failure, 2 for a usage error. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 = 1,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message)
  }
}

export class UsageError extends CliError {
  constructor(message: string) {
    super(message, 2)
  }
}

export interface VolumeTarget {
  /** The server's base URL, without a trailing slash: http://host:port (or a path prefix behind a proxy). */
  base: string
  volume: string
  /** `${base}/volumes/${volume}` */
  url: string
}

function parseHttpUrl(text: string, what: string): URL {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new UsageError(`${what} ${JSON.stringify(text)} is not a URL (expected http://host:port…)`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`${what} ${JSON.stringify(text)}: only http and https URLs are served`)
  if (url.search || url.hash) throw new UsageError(`${what} ${JSON.stringify(text)}: no query or fragment expected`)
  return url
}

/** The server URL of `status` and `wait`: http://host:port (a trailing slash is dropped). */
export function parseServerUrl(text: string): string {
  const url = parseHttpUrl(text, 'server URL')
  return url.href.replace(/\/+$/, '')
}

/** URL/volumes/NAME (a trailing /data or slash is accepted too). */
export function parseVolumeUrl(text: string): VolumeTarget {
  const url = parseHttpUrl(text, 'volume URL')
  const match = /^(.*)\/volumes\/([^/]+)(?:\/data)?\/?$/.exec(url.pathname)
  if (!match) throw new UsageError(`volume URL ${JSON.stringify(text)} must end in /volumes/NAME, e.g. http://127.0.0.1:8080/volumes/demo`)
  const base = `${url.origin}${match[1]}`
  const volume = decodeURIComponent(match[2])
  return { base, volume, url: `${base}/volumes/${encodeURIComponent(volume)}` }
}

/** The Authorization header from FILEMIRROR_TOKEN, when set. */
export function authHeaders(): Record<string, string> {
  const token = process.env.FILEMIRROR_TOKEN
  return token ? { authorization: `Bearer ${token}` } : {}
}

/** fetch with the token; a network failure becomes a CliError naming the server. */
export async function request(url: string, init: RequestInit = {}): Promise<Response> {
  const headers = { ...authHeaders(), ...(init.headers as Record<string, string> | undefined) }
  try {
    return await fetch(url, { ...init, headers })
  } catch (err) {
    if ((err as Error).name === 'AbortError') throw err
    throw new CliError(`cannot reach ${new URL(url).origin}: ${describeCause(err)}`, 1, { code: 'EUNREACHABLE' })
  }
}

/** The innermost cause of a fetch failure: "connect ECONNREFUSED 127.0.0.1:8080" rather than "fetch failed". */
export function describeCause(err: unknown): string {
  let e = err as { cause?: unknown; message?: string; code?: string } | undefined
  while (e && e.cause && typeof e.cause === 'object') e = e.cause as typeof e
  return e?.message || e?.code || String(err)
}

/** A failed reply as one line: the problem's detail (RFC 9457) when there is one. */
export async function failure(res: Response, doing: string): Promise<CliError> {
  let detail = ''
  try {
    const text = await res.text()
    try {
      const problem = JSON.parse(text) as { detail?: string; title?: string }
      detail = problem.detail ?? problem.title ?? text
    } catch {
      detail = text
    }
  } catch {
    // the body could not be read: the status says enough
  }
  detail = detail.trim().slice(0, 500)
  let hint = ''
  if (res.status === 401) hint = process.env.FILEMIRROR_TOKEN ? ' (FILEMIRROR_TOKEN was not accepted)' : ' (set FILEMIRROR_TOKEN to the server\'s AUTH_TOKEN)'
  return new CliError(`${doing}: HTTP ${res.status}${detail ? `: ${detail}` : ''}${hint}`, 1, { status: res.status })
}

/** GET a JSON document, or fail with the problem's detail. */
export async function getJson<T>(url: string, doing: string, signal?: AbortSignal): Promise<T> {
  const res = await request(url, { headers: { accept: 'application/json' }, signal })
  if (!res.ok) throw await failure(res, doing)
  return (await res.json()) as T
}

/**
 * A GET through node:http, for bulk data: its body streams about twice as fast as fetch's here. Resolves with the
 * reply once its head is in; a network failure becomes a CliError naming the server.
 */
export function streamGet(url: string, headers: Record<string, string> = {}): Promise<IncomingMessage> {
  const target = new URL(url)
  const send = target.protocol === 'https:' ? httpsRequest : httpRequest
  return new Promise((resolve, reject) => {
    const req = send(target, { method: 'GET', headers: { ...authHeaders(), ...headers } }, resolve)
    req.on('error', (err) => reject(new CliError(`cannot reach ${target.origin}: ${describeCause(err)}`, 1, { code: 'EUNREACHABLE' })))
    req.end()
  })
}

/** A failed node:http reply as one line, as failure() does for fetch. */
export async function streamFailure(res: IncomingMessage, doing: string): Promise<CliError> {
  const chunks: Buffer[] = []
  try {
    for await (const chunk of res) {
      chunks.push(chunk as Buffer)
      if (chunks.length > 16) break
    }
  } catch {
    // the status says enough
  }
  const body = Buffer.concat(chunks).toString('utf8')
  return failure(new Response(body, { status: res.statusCode ?? 500 }), doing)
}
