import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { bearerMatches, SESSION_PATH, sessionCookie, tokenMatches, wantsHtml } from '../src/http/auth.js'
import { problems } from '../src/http/problem.js'

/** The page's files, by URL path: public/ sits one level above routes/, two above dist/routes/. */
const FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'status.html', type: 'text/html; charset=utf-8' },
  '/status.js': { file: 'status.js', type: 'text/javascript; charset=utf-8' },
  /** Lag and ETA figures, a module status.js imports (and the CLI computes alike). */
  '/eta.js': { file: 'eta.js', type: 'text/javascript; charset=utf-8' },
  '/status.css': { file: 'status.css', type: 'text/css; charset=utf-8' },
}

/** Same-origin only: the page fetches the API and the event stream and nothing else. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

async function readPublic(file: string): Promise<Buffer> {
  for (const candidate of [`../public/${file}`, `../../public/${file}`]) {
    try {
      return await readFile(fileURLToPath(new URL(candidate, import.meta.url)))
    } catch {
      // try the next layout
    }
  }
  throw problems.notFound(`${file} is not installed`)
}

/** The sign-in page and its CSP: its own inline style and script only (by hash), its form posts to this origin only. */
interface LoginPage {
  html: string
  csp: string
}

let login: Promise<LoginPage> | undefined

function loginPage(): Promise<LoginPage> {
  login ??= readPublic('login.html').then((buffer) => {
    const html = buffer.toString('utf8')
    const hashOf = (tag: string) => {
      const inline = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(html)
      return inline ? `'sha256-${createHash('sha256').update(inline[1]).digest('base64')}'` : "'none'"
    }
    const csp = `default-src 'none'; script-src ${hashOf('script')}; style-src ${hashOf('style')}; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'`
    return { html, csp }
  })
  return login.catch((err: unknown) => {
    login = undefined
    throw err
  })
}

/** Shown above the form when a token was refused: fixed text, nothing of the request in it. */
const REFUSED = '<p class="error" role="alert" data-error>That token was not accepted.</p>'

/**
 * Answers a browser that is not signed in: 401 (with WWW-Authenticate, as any 401 here) whose body
 * is the sign-in form; `refused` adds that the token just posted was wrong.
 */
export async function sendLoginPage(_request: FastifyRequest, reply: FastifyReply, refused = false): Promise<FastifyReply> {
  const page = await loginPage().catch(() => {
    throw problems.unauthorized()
  })
  return reply
    .code(401)
    .type('text/html; charset=utf-8')
    .header('www-authenticate', 'Bearer')
    .header('cache-control', 'no-store')
    .header('vary', 'accept')
    .header('content-security-policy', page.csp)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .send(refused ? page.html.replace('<!--error-->', REFUSED) : page.html)
}

/** A body the sign-in route does not read (neither a form nor JSON). */
const UNSUPPORTED = Symbol('unsupported body')

/** The token a sign-in body carries: the form field or JSON member `token`. */
function tokenInBody(body: unknown): string | undefined {
  if (body instanceof URLSearchParams) return body.get('token') ?? undefined
  if (typeof body === 'object' && body !== null && typeof (body as { token?: unknown }).token === 'string') return (body as { token: string }).token
  return undefined
}

/** The live status page at `/`, its script and style, and POST /session, its sign-in when AUTH_TOKEN is set. */
export default async function statusPageRoutes(app: FastifyInstance): Promise<void> {
  const cache = new Map<string, Buffer>()
  for (const [path, { file, type }] of Object.entries(FILES)) {
    app.get(path, async (_request, reply) => {
      let body = cache.get(file)
      if (!body) {
        body = await readPublic(file)
        cache.set(file, body)
      }
      return reply.type(type).header('cache-control', 'no-cache').header('content-security-policy', CSP).header('x-content-type-options', 'nosniff').send(body)
    })
  }

  // Its own context, so that its body parsers (a form, anything else refused here) stay with it.
  await app.register(async (session) => {
    session.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_request, body, done) => done(null, new URLSearchParams(String(body))))
    session.addContentTypeParser('*', (_request, _payload, done) => done(null, UNSUPPORTED))
    session.post(SESSION_PATH, { bodyLimit: 4096 }, async (request, reply) => {
      reply.header('cache-control', 'no-store')
      if (request.body === UNSUPPORTED) {
        throw problems.unsupportedMediaType('send the token as a form field (application/x-www-form-urlencoded: token=...), as JSON ({"token": "..."}), or in Authorization: Bearer')
      }
      // A browser (the form) goes on to the page; a script gets 204.
      const done = () => (wantsHtml(request) ? reply.redirect('/', 303) : reply.code(204).send())
      const token = app.config.authToken
      // Nothing to sign in to: the page is open.
      if (!token) return done()
      const presented = tokenInBody(request.body)
      const accepted = presented !== undefined ? tokenMatches(presented, token) : bearerMatches(request.headers.authorization, token)
      if (!accepted) {
        request.log.warn({ from: request.ip }, 'sign-in refused: wrong token')
        if (wantsHtml(request)) return sendLoginPage(request, reply, true)
        throw problems.unauthorized()
      }
      reply.header('set-cookie', sessionCookie(token))
      return done()
    })
  })
}
