// Request ids: an incoming X-Request-Id is taken when it is safe, else one is made; it comes back in
// the reply's X-Request-Id, in every log line of the request and in problem bodies.
import { Writable } from 'node:stream'
import t from 'tap'
import { requestIdOf } from '../../src/app.js'
import { assertProblem, createVolume, makeApp, putData } from '../helpers/app.js'
import { FaultInjector } from '../helpers/fault-injecting-file.js'
import { pattern } from '../helpers/pattern.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

/** A pino destination that keeps each log line parsed. */
function logCapture(): { stream: Writable; lines: any[] } {
  const lines: any[] = []
  let partial = ''
  const stream = new Writable({
    write(chunk, _encoding, done) {
      partial += chunk.toString()
      const complete = partial.split('\n')
      partial = complete.pop()!
      for (const line of complete) if (line.trim()) lines.push(JSON.parse(line))
      done()
    },
  })
  return { stream, lines }
}

t.test('an incoming X-Request-Id is echoed; without one, a UUID is made', async (t) => {
  const { app } = await makeApp(t)
  const echoed = await app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'client-id-42' } })
  t.equal(echoed.headers['x-request-id'], 'client-id-42', 'echoed as sent')

  const a = await app.inject({ method: 'GET', url: '/healthz' })
  const b = await app.inject({ method: 'GET', url: '/healthz' })
  t.match(a.headers['x-request-id'], UUID, 'a UUID when absent')
  t.not(a.headers['x-request-id'], b.headers['x-request-id'], 'a new one per request')

  const longest = 'a'.repeat(200)
  t.equal((await app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': longest } })).headers['x-request-id'], longest, '200 characters are kept')
  for (const [bad, why] of [
    ['a'.repeat(201), 'longer than 200 characters'],
    ['with space', 'a space'],
    ['caf\u00e9', 'non-ASCII'],
    ['', 'empty'],
  ]) {
    const res = await app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': bad } })
    t.match(res.headers['x-request-id'], UUID, `replaced when ${why}`)
  }
})

t.test('requestIdOf validates what it takes', async (t) => {
  const of = (value: string | string[] | undefined) => requestIdOf({ headers: { 'x-request-id': value } } as any)
  t.equal(of('abc'), 'abc')
  t.equal(of('A-z_0.9:/+=~!'), 'A-z_0.9:/+=~!', 'any visible ASCII')
  t.match(of('tab\there'), UUID, 'control characters are refused')
  t.match(of(['one', 'two']), UUID, 'a repeated header is refused')
  t.match(of(undefined), UUID)
})

t.test('problem bodies carry the request id', async (t) => {
  const faults = new FaultInjector()
  const { app, dataDir } = await makeApp(t, {}, { openFile: faults.opener })
  await createVolume(t, app, 'v', [{ id: 'only', path: 'only.bin' }])
  await putData(app, 'v', pattern(100))

  const notFound = await app.inject({ method: 'GET', url: '/no/such/route', headers: { 'x-request-id': 'r-404' } })
  t.equal(assertProblem(t, notFound, 404, 'no route').requestId, 'r-404', 'not-found handler')
  t.equal(notFound.headers['x-request-id'], 'r-404', 'and the header')

  const notAllowed = await app.inject({ method: 'PATCH', url: '/volumes/v', headers: { 'x-request-id': 'r-405' } })
  t.equal(assertProblem(t, notAllowed, 405, 'method').requestId, 'r-405', '405 from the not-found handler')

  const noVolume = await app.inject({ method: 'GET', url: '/volumes/nope', headers: { 'x-request-id': 'r-vol' } })
  t.equal(assertProblem(t, noVolume, 404, 'no volume').requestId, 'r-vol', 'a problem thrown by a route')

  const invalid = await app.inject({ method: 'PUT', url: '/volumes/w', payload: { replicas: [] } })
  const body = assertProblem(t, invalid, 400, 'invalid body')
  t.match(body.requestId, UUID, 'a generated id when none was sent')
  t.equal(body.requestId, invalid.headers['x-request-id'], 'the same id as the header')

  faults.set(`${dataDir}/only.bin`, { failReads: 'EIO' })
  const failed = await app.inject({ method: 'GET', url: '/volumes/v/data', headers: { 'x-request-id': 'r-500' } })
  t.equal(assertProblem(t, failed, 500, 'read failed').requestId, 'r-500', 'a 5xx problem')
})

t.test('a 401 from the auth hook carries it too', async (t) => {
  const { app } = await makeApp(t, { AUTH_TOKEN: 'a-token-of-sixteen-chars' })
  const res = await app.inject({ method: 'GET', url: '/volumes', headers: { 'x-request-id': 'r-401' } })
  t.equal(assertProblem(t, res, 401, 'unauthorized').requestId, 'r-401')
  t.equal(res.headers['x-request-id'], 'r-401')
})

t.test('every log line of a request carries its id', async (t) => {
  const faults = new FaultInjector()
  const logs = logCapture()
  const { app, dataDir } = await makeApp(t, { LOG_LEVEL: 'info' }, { logStream: logs.stream, openFile: faults.opener })
  await createVolume(t, app, 'v', [{ id: 'only', path: 'only.bin' }])
  await putData(app, 'v', pattern(100), { 'x-request-id': 'write-1' })
  faults.set(`${dataDir}/only.bin`, { failReads: 'EIO' })
  await app.inject({ method: 'GET', url: '/volumes/v/data', headers: { 'x-request-id': 'read-1' } })
  await new Promise((r) => setImmediate(r))

  for (const id of ['write-1', 'read-1']) {
    const mine = logs.lines.filter((l) => l.requestId === id)
    t.ok(mine.some((l) => l.msg === 'request completed' && typeof l.statusCode === 'number' && typeof l.url === 'string'), `${id}: one request line with method, url, status and time`)
  }
  const failure = logs.lines.find((l) => l.msg === 'request failed')
  t.ok(failure, 'the 5xx is logged')
  t.equal(failure?.requestId, 'read-1', "the route's own log line carries the id")
  const requestLines = logs.lines.filter((l) => l.msg === 'request completed' || l.msg === 'request failed')
  t.ok(requestLines.length >= 3, `request log lines found (${requestLines.length})`)
  t.ok(
    requestLines.every((l) => typeof l.requestId === 'string' && l.requestId.length > 0),
    'no request log line lacks requestId',
  )
  t.notOk(logs.lines.some((l) => 'reqId' in l), 'one name for it: requestId')
})
