import t from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { bearerMatches, cookieOf, SESSION_COOKIE, SESSION_TTL_SECONDS, sessionCookie, sessionMatches, sessionValue, tokenMatches } from '../../src/http/auth.js'
import { loadConfig } from '../../src/config.js'
import { assertProblem, makeApp } from '../helpers/app.js'

const TOKEN = 'correct-horse-battery-staple-42'

t.test('bearerMatches', async (t) => {
  t.ok(bearerMatches(`Bearer ${TOKEN}`, TOKEN))
  t.ok(bearerMatches(`bearer ${TOKEN}`, TOKEN), 'the scheme is case-insensitive (RFC 9110 §11.1)')
  t.notOk(bearerMatches(`Bearer ${TOKEN}x`, TOKEN))
  t.notOk(bearerMatches(`Bearer ${TOKEN.slice(0, -1)}`, TOKEN), 'a prefix is not the token')
  t.notOk(bearerMatches(`Basic ${TOKEN}`, TOKEN))
  t.notOk(bearerMatches(TOKEN, TOKEN), 'the scheme is required')
  t.notOk(bearerMatches(undefined, TOKEN))
  t.notOk(bearerMatches('', TOKEN))
  t.notOk(bearerMatches('Bearer ', TOKEN))
})

t.test('with AUTH_TOKEN every route but /healthz and /readyz needs the bearer token', async (t) => {
  const { app } = await makeApp(t, { AUTH_TOKEN: TOKEN })
  for (const url of ['/healthz', '/readyz']) t.equal((await app.inject({ url })).statusCode, 200, `${url} is open`)
  for (const [method, url] of [
    ['GET', '/volumes'],
    ['PUT', '/volumes/v'],
    ['GET', '/volumes/v/data'],
    ['GET', '/operations/x'],
    ['GET', '/openapi.yaml'],
    ['GET', '/no/such/route'],
  ] as const) {
    const res = await app.inject({ method, url, payload: method === 'PUT' ? { replicas: [{ id: 'a', path: 'a.img' }] } : undefined })
    assertProblem(t, res, 401, `${method} ${url} without a token`)
    t.equal(res.headers['www-authenticate'], 'Bearer')
  }
  const wrong = await app.inject({ url: '/volumes', headers: { authorization: 'Bearer not-the-token-at-all' } })
  assertProblem(t, wrong, 401, 'a wrong token')
  t.notMatch(wrong.body, TOKEN, 'the token never appears in a reply')
  const ok = await app.inject({ url: '/volumes', headers: { authorization: `Bearer ${TOKEN}` } })
  t.equal(ok.statusCode, 200)
  const created = await app.inject({ method: 'PUT', url: '/volumes/v', headers: { authorization: `Bearer ${TOKEN}` }, payload: { replicas: [{ id: 'a', path: 'a.img' }] } })
  t.equal(created.statusCode, 201)
  const refused = await app.inject({ method: 'PUT', url: '/volumes/w', payload: { replicas: [{ id: 'a', path: 'w.img' }] } })
  t.equal(refused.statusCode, 401)
  t.equal((await app.inject({ url: '/volumes/w', headers: { authorization: `Bearer ${TOKEN}` } })).statusCode, 404, 'an unauthorised request changes nothing')
})

t.test('without AUTH_TOKEN no token is needed', async (t) => {
  const { app } = await makeApp(t)
  t.equal((await app.inject({ url: '/volumes' })).statusCode, 200)
})

t.test('a too-short AUTH_TOKEN is refused at start', async (t) => {
  t.throws(() => loadConfig({ AUTH_TOKEN: 'short' }), { message: /AUTH_TOKEN: must be at least 16 characters/ })
})

// ------------------------------------------------------------------ the status page's session

const HTML = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'
const FORM = { 'content-type': 'application/x-www-form-urlencoded' }

/** The `name=value` of a reply's Set-Cookie, as a browser would send it back. */
function cookieFrom(res: LightMyRequestResponse): string {
  const header = res.headers['set-cookie']
  return String(Array.isArray(header) ? header[0] : (header ?? '')).split(';')[0]
}

t.test('tokenMatches, sessionValue and sessionMatches', async (t) => {
  t.ok(tokenMatches(TOKEN, TOKEN))
  t.notOk(tokenMatches(`${TOKEN} `, TOKEN))
  t.notOk(tokenMatches(TOKEN.slice(1), TOKEN))
  t.notOk(tokenMatches('', TOKEN))
  t.notOk(tokenMatches(undefined, TOKEN))

  const now = Date.UTC(2026, 11, 1)
  const cookie = sessionCookie(TOKEN, now)
  t.match(cookie, new RegExp(`^${SESSION_COOKIE}=v1\\.\\d+\\.[A-Za-z0-9_-]{43}; `), 'name=v1.<expiry>.<mac>')
  for (const attribute of ['Path=/', 'HttpOnly', 'SameSite=Strict', `Max-Age=${SESSION_TTL_SECONDS}`]) t.match(cookie, `; ${attribute}`, attribute)
  t.notMatch(cookie, TOKEN, 'the token is not in the cookie')
  const header = cookie.split(';')[0]
  t.ok(sessionMatches(header, TOKEN, now), 'the cookie it sets is honoured')
  t.ok(sessionMatches(`theme=dark; ${header}; other=1`, TOKEN, now), 'among other cookies')
  t.ok(sessionMatches(header, TOKEN, now + (SESSION_TTL_SECONDS - 1) * 1000), 'until just before it expires')
  t.notOk(sessionMatches(header, TOKEN, now + SESSION_TTL_SECONDS * 1000), 'not once it has expired')
  t.notOk(sessionMatches(header, 'another-token-of-some-length', now), 'nor with another token (every session ends when AUTH_TOKEN changes)')
  const [, expiry, mac] = cookieOf(header, SESSION_COOKIE)!.split('.')
  const later = Number(expiry) + 3600
  t.notOk(sessionMatches(`${SESSION_COOKIE}=v1.${later}.${mac}`, TOKEN, now), 'an expiry moved later breaks the MAC')
  const flipped = mac.slice(0, -1) + (mac.endsWith('A') ? 'B' : 'A')
  t.notOk(sessionMatches(`${SESSION_COOKIE}=v1.${expiry}.${flipped}`, TOKEN, now), 'a changed MAC is refused')
  t.ok(sessionMatches(`${SESSION_COOKIE}=${sessionValue(TOKEN, later)}`, TOKEN, now), 'a value made with the token for any unexpired time is honoured')
  for (const bad of [undefined, '', `${SESSION_COOKIE}=`, `${SESSION_COOKIE}=${TOKEN}`, `other=${sessionValue(TOKEN, later)}`, `${SESSION_COOKIE}=v2.${expiry}.${mac}`]) {
    t.notOk(sessionMatches(bad, TOKEN, now), `refused: ${JSON.stringify(bad)}`)
  }
})

t.test('with AUTH_TOKEN, a browser opening / without credentials gets the sign-in form, still a 401', async (t) => {
  const { app } = await makeApp(t, { AUTH_TOKEN: TOKEN })
  const page = await app.inject({ url: '/', headers: { accept: HTML } })
  t.equal(page.statusCode, 401)
  t.match(page.headers['content-type'], /^text\/html/)
  t.equal(page.headers['www-authenticate'], 'Bearer')
  t.equal(page.headers['cache-control'], 'no-store')
  t.match(page.headers.vary, /accept/i, 'Vary: Accept (the same URL answers a problem to API clients)')
  const csp = String(page.headers['content-security-policy'])
  t.match(csp, /default-src 'none'/)
  t.match(csp, /script-src 'sha256-[A-Za-z0-9+/]+=*'/, 'its one inline script by hash')
  t.match(csp, /style-src 'sha256-[A-Za-z0-9+/]+=*'/, 'its inline style by hash')
  t.match(csp, /form-action 'self'/, 'the form posts to this origin only')
  t.match(page.body, /<form id="login" method="post" action="\/session">/)
  t.match(page.body, /<input id="token" name="token" type="password"/)
  t.notMatch(page.body, /data-error/, 'no error before a try')
  for (const [headers, what] of [
    [{}, 'no Accept'],
    [{ accept: 'application/json' }, 'Accept: application/json'],
    [{ accept: '*/*' }, 'Accept: */* (curl)'],
  ] as const) {
    assertProblem(t, await app.inject({ url: '/', headers }), 401, `GET / with ${what} is a problem`)
  }
  assertProblem(t, await app.inject({ url: '/volumes', headers: { accept: HTML } }), 401, 'another route opened by a browser is a problem')
  const head = await app.inject({ method: 'HEAD', url: '/', headers: { accept: HTML } })
  t.equal(head.statusCode, 401, 'HEAD / is a 401')
  t.match(head.headers['content-type'], /^application\/problem\+json/, 'the head of a problem')
  assertProblem(t, await app.inject({ url: '/status.js', headers: { accept: HTML } }), 401, 'the script needs a session')
})

t.test('POST /session trades the token for a session cookie that reads, and never writes', async (t) => {
  const { app } = await makeApp(t, { AUTH_TOKEN: TOKEN })
  const form = await app.inject({ method: 'POST', url: '/session', headers: { ...FORM, accept: HTML }, payload: `token=${encodeURIComponent(TOKEN)}` })
  t.equal(form.statusCode, 303, 'the form, from a browser: 303 See Other')
  t.equal(form.headers.location, '/', 'to the status page')
  t.equal(form.headers['cache-control'], 'no-store')
  t.equal(form.rawPayload.length, 0, 'no body')
  const setCookie = String(form.headers['set-cookie'])
  for (const attribute of ['HttpOnly', 'SameSite=Strict', 'Path=/', `Max-Age=${SESSION_TTL_SECONDS}`]) t.match(setCookie, attribute, `Set-Cookie: ${attribute}`)
  t.notMatch(setCookie, TOKEN, 'the cookie does not hold the token')
  const cookie = cookieFrom(form)

  const json = await app.inject({ method: 'POST', url: '/session', payload: { token: TOKEN } })
  t.equal(json.statusCode, 204, 'JSON {"token": ...} works too, and a script gets 204')
  t.equal(json.headers['cache-control'], 'no-store')
  t.match(String(json.headers['set-cookie']), `${SESSION_COOKIE}=`)
  const bearer = await app.inject({ method: 'POST', url: '/session', headers: { authorization: `Bearer ${TOKEN}` } })
  t.equal(bearer.statusCode, 204, 'and so does the Authorization header')
  const plainForm = await app.inject({ method: 'POST', url: '/session', headers: FORM, payload: `token=${encodeURIComponent(TOKEN)}` })
  t.equal(plainForm.statusCode, 204, 'a form from a non-browser: 204')
  t.match(String(plainForm.headers['set-cookie']), `${SESSION_COOKIE}=`)
  t.match(String(bearer.headers['set-cookie']), `${SESSION_COOKIE}=`)

  // What the page reads.
  for (const url of ['/', '/status.js', '/status.css', '/volumes', '/openapi.yaml', '/metrics']) {
    t.equal((await app.inject({ url, headers: { cookie } })).statusCode, 200, `GET ${url} with the cookie`)
  }
  t.equal((await app.inject({ method: 'HEAD', url: '/volumes', headers: { cookie } })).statusCode, 200, 'HEAD with the cookie')
  const page = await app.inject({ url: '/', headers: { cookie, accept: HTML } })
  t.match(page.body, /<script src="\/status\.js" defer>/, 'the status page itself')

  // Writes need the bearer token, the cookie or not.
  const create = { replicas: [{ id: 'a', path: 'a.img' }] }
  assertProblem(t, await app.inject({ method: 'PUT', url: '/volumes/v', headers: { cookie }, payload: create }), 401, 'PUT with only the cookie')
  t.equal((await app.inject({ method: 'PUT', url: '/volumes/v', headers: { authorization: `Bearer ${TOKEN}` }, payload: create })).statusCode, 201, 'PUT with the token')
  assertProblem(t, await app.inject({ method: 'PUT', url: '/volumes/v/data', headers: { cookie }, payload: 'x' }), 401, 'a data PUT with only the cookie')
  assertProblem(t, await app.inject({ method: 'POST', url: '/volumes/v/scrub', headers: { cookie } }), 401, 'a POST with only the cookie')
  assertProblem(t, await app.inject({ method: 'DELETE', url: '/volumes/v', headers: { cookie } }), 401, 'DELETE with only the cookie')
  t.equal((await app.inject({ url: '/volumes/v', headers: { cookie } })).statusCode, 200, 'the volume is still there')

  // A cookie that is not one.
  for (const [bad, what] of [
    [`${SESSION_COOKIE}=${TOKEN}`, 'the token itself as the cookie'],
    [`${SESSION_COOKIE}=${sessionValue(TOKEN, Math.floor(Date.now() / 1000) - 1)}`, 'an expired session'],
    [`${SESSION_COOKIE}=${sessionValue('some-other-token-0123', Math.floor(Date.now() / 1000) + 60)}`, "another token's session"],
    [cookie.slice(0, -2), 'a truncated cookie'],
  ] as const) {
    assertProblem(t, await app.inject({ url: '/volumes', headers: { cookie: bad } }), 401, what)
  }
})

t.test('POST /session refuses a wrong or missing token, and bodies it does not read', async (t) => {
  const { app } = await makeApp(t, { AUTH_TOKEN: TOKEN })
  const wrong = await app.inject({ method: 'POST', url: '/session', headers: FORM, payload: 'token=not-the-token-at-all' })
  assertProblem(t, wrong, 401, 'a wrong token')
  t.notOk(wrong.headers['set-cookie'], 'no cookie')
  const browser = await app.inject({ method: 'POST', url: '/session', headers: { ...FORM, accept: HTML }, payload: 'token=not-the-token-at-all' })
  t.equal(browser.statusCode, 401, 'a browser posting a wrong token: 401')
  t.match(browser.headers['content-type'], /^text\/html/, 'with the form again')
  t.match(browser.body, /<p class="error" role="alert" data-error>That token was not accepted\.<\/p>/, 'saying the token was refused')
  t.notMatch(browser.body, /not-the-token-at-all/, 'without echoing what was sent')
  t.notOk(browser.headers['set-cookie'])
  assertProblem(t, await app.inject({ method: 'POST', url: '/session' }), 401, 'no token at all')
  assertProblem(t, await app.inject({ method: 'POST', url: '/session', headers: FORM, payload: 'user=me' }), 401, 'a form without the field')
  assertProblem(t, await app.inject({ method: 'POST', url: '/session', payload: { token: 42 } }), 401, 'a token that is not a string')
  assertProblem(t, await app.inject({ method: 'POST', url: '/session', headers: { authorization: 'Bearer wrong-wrong-wrong-wrong' } }), 401, 'a wrong bearer token')
  const xml = await app.inject({ method: 'POST', url: '/session', headers: { 'content-type': 'application/xml' }, payload: `<token>${TOKEN}</token>` })
  const body = assertProblem(t, xml, 415, 'an XML body')
  t.match(body.detail, /application\/x-www-form-urlencoded.*JSON.*Authorization: Bearer/, 'the 415 says what it takes')
  assertProblem(t, await app.inject({ method: 'POST', url: '/session', headers: FORM, payload: `token=${'x'.repeat(5000)}` }), 413, 'a body over 4 KiB')
  assertProblem(t, await app.inject({ method: 'POST', url: '/session', headers: { 'content-type': 'application/json' }, payload: '{"token": ' }), 400, 'malformed JSON')
  assertProblem(t, await app.inject({ method: 'GET', url: '/session' }), 401, 'GET /session needs credentials like any route')
})

t.test('without AUTH_TOKEN, POST /session sends the browser to the page and sets nothing', async (t) => {
  const { app } = await makeApp(t)
  const res = await app.inject({ method: 'POST', url: '/session', headers: { ...FORM, accept: HTML }, payload: 'token=anything' })
  t.equal(res.statusCode, 303)
  t.equal(res.headers.location, '/')
  t.notOk(res.headers['set-cookie'], 'no cookie')
  const script = await app.inject({ method: 'POST', url: '/session' })
  t.equal(script.statusCode, 204, 'a script: 204')
  t.notOk(script.headers['set-cookie'], 'no cookie')
  const page = await app.inject({ url: '/', headers: { accept: HTML } })
  t.equal(page.statusCode, 200, 'the page is open')
  t.match(page.body, /<script src="\/status\.js" defer>/)
})
