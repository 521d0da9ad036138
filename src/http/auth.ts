import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { problems } from './problem.js'

/** Routes a load balancer or orchestrator probes without credentials. */
export const OPEN_PATHS = new Set(['/healthz', '/readyz'])

/** POST here with the token to get the session cookie (the status page's sign-in); it checks the token itself. */
export const SESSION_PATH = '/session'
/** The status page's session cookie: HttpOnly, SameSite=Strict, good for GET and HEAD only. */
export const SESSION_COOKIE = 'filemirror-session'
/** How long a session cookie is honoured. */
export const SESSION_TTL_SECONDS = 12 * 60 * 60

const digest = (s: string) => createHash('sha256').update(s).digest()

/** Whether `presented` is the token; constant time (hashes equalise lengths). */
export function tokenMatches(presented: string | undefined, token: string): boolean {
  return timingSafeEqual(digest(presented ?? ''), digest(token)) && presented !== undefined
}

/** Whether an Authorization header carries the bearer token; compared in constant time (hashes equalise lengths). */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const match = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(header ?? '')
  return tokenMatches(match ? match[1] : '', token) && match !== null
}

/**
 * A session value: its expiry (seconds since the epoch) and an HMAC of it keyed by the token. It
 * carries nothing of the token, needs no server state, and every session ends when the token changes.
 */
export function sessionValue(token: string, expiresAt: number): string {
  const mac = createHmac('sha256', token).update(`filemirror-session.v1.${expiresAt}`).digest('base64url')
  return `v1.${expiresAt}.${mac}`
}

/** The Set-Cookie value that signs the browser in for SESSION_TTL_SECONDS. */
export function sessionCookie(token: string, now = Date.now()): string {
  const expiresAt = Math.floor(now / 1000) + SESSION_TTL_SECONDS
  return `${SESSION_COOKIE}=${sessionValue(token, expiresAt)}; Path=/; Max-Age=${SESSION_TTL_SECONDS}; HttpOnly; SameSite=Strict`
}

/** The value of cookie `name` in a Cookie header (the first one), if any. */
export function cookieOf(header: string | undefined, name: string): string | undefined {
  for (const pair of (header ?? '').split(';')) {
    const at = pair.indexOf('=')
    if (at > 0 && pair.slice(0, at).trim() === name) return pair.slice(at + 1).trim()
  }
  return undefined
}

/** Whether a Cookie header carries an unexpired session made with this token; the MAC is compared in constant time. */
export function sessionMatches(cookieHeader: string | undefined, token: string, now = Date.now()): boolean {
  const value = cookieOf(cookieHeader, SESSION_COOKIE)
  const match = /^v1\.(\d{1,12})\.[A-Za-z0-9_-]{43}$/.exec(value ?? '')
  const expiresAt = match ? Number(match[1]) : 0
  const expected = sessionValue(token, expiresAt)
  return timingSafeEqual(digest(value ?? ''), digest(expected)) && match !== null && expiresAt * 1000 > now
}

/** Whether a request is a browser asking for a page (its Accept names HTML). */
export function wantsHtml(request: FastifyRequest): boolean {
  return /\btext\/html\b/i.test(request.headers.accept ?? '')
}

/** Answers a browser that is not signed in (a 401 with the sign-in form). */
export type LoginPage = (request: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply>

/**
 * The onRequest hook with AUTH_TOKEN set. Every route but OPEN_PATHS needs `Authorization: Bearer
 * <token>`; GET and HEAD also take the session cookie (all the status page needs, and never a
 * write, even if SameSite were bypassed). POST /session checks the token itself. A browser opening
 * `/` without either gets the sign-in form (still a 401); everything else gets a 401 problem.
 */
export function authenticate(token: string, loginPage: LoginPage) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    const path = request.url.split('?')[0]
    if (OPEN_PATHS.has(path)) return undefined
    if (request.method === 'POST' && path === SESSION_PATH) return undefined
    if (bearerMatches(request.headers.authorization, token)) return undefined
    const reading = request.method === 'GET' || request.method === 'HEAD'
    if (reading && sessionMatches(request.headers.cookie, token)) return undefined
    if (request.method === 'GET' && path === '/' && wantsHtml(request)) return loginPage(request, reply)
    throw problems.unauthorized()
  }
}
