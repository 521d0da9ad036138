import t from 'tap'
import { bearerMatches } from '../src/auth.js'
import { loadConfig } from '../src/config.js'
import { assertProblem, makeApp } from './helpers/app.js'

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
