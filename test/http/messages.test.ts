// Error messages that say what to do: invalid JSON says where, a 415 on a JSON route names
// application/json, a replica path outside the storage roots names them, a missing root is named.
import t from 'tap'
import fc from 'fast-check'
import { existsSync } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { locateJsonError } from '../../src/http/json-body.js'
import { assertProblem, makeApp } from '../helpers/app.js'
import { scratch } from '../helpers/scratch.js'

const JSON_TYPE = { 'content-type': 'application/json' }

t.test('locateJsonError: where JSON.parse fails, and only there', async (t) => {
  const cases: Array<[string, number, number, number, RegExp]> = [
    ['{"replicas": [', 14, 1, 15, /ends too early/],
    ['{\n"replicas": [\n  {"id": "a",, }\n]}', 29, 3, 14, /expected a double-quoted property name, found ","/],
    ['{"a": 1}x', 8, 1, 9, /unexpected "x" after the JSON value/],
    ['{"a": tru}', 6, 1, 7, /expected a JSON value, found "t"/],
    ['[1,]', 3, 1, 4, /expected a JSON value, found "]"/],
    ['{"a": "\u0001"}', 7, 1, 8, /control character/],
    ['{a: 1}', 1, 1, 2, /double-quoted property name/],
    ['{"a" 1}', 5, 1, 6, /expected ':'/],
    ['{"a": 1 "b": 2}', 8, 1, 9, /expected ',' or '}'/],
    ['[1 2]', 3, 1, 4, /expected ',' or '\]'/],
    ['{"a": "\\q"}', 8, 1, 9, /bad escape/],
    ['{"a": "\\u12G4"}', 7, 1, 8, /bad \\u escape/],
    ['-', 1, 1, 2, /ends too early/],
    ['', 0, 1, 1, /ends too early/],
  ]
  for (const [text, position, line, column, reason] of cases) {
    const at = locateJsonError(text)
    t.match(at, { position, line, column }, `${JSON.stringify(text)}: line ${line}, column ${column} (character ${position})`)
    t.match(at?.reason, reason, `${JSON.stringify(text)}: ${at?.reason}`)
  }
  for (const text of ['{}', '[]', '0', '-1.5e+3', '"\\u00e9\\n"', ' {"a": [1, {"b": null}], "c": true, "d": false} ', '"\u00e9"']) {
    t.equal(locateJsonError(text), undefined, `${text} is JSON`)
  }
  // Any JSON text, cut short or with a character put in or taken out: an error is found exactly when JSON.parse throws.
  fc.assert(
    fc.property(fc.json(), fc.nat(), fc.constantFrom('', ',', '}', ']', '"', ':', 'x', '\\', '0', ' '), fc.boolean(), (json, at, insert, cut) => {
      const i = at % (json.length + 1)
      const text = cut ? json.slice(0, i) : json.slice(0, i) + insert + json.slice(i + (insert === '' ? 1 : 0))
      let valid = true
      try {
        JSON.parse(text)
      } catch {
        valid = false
      }
      const found = locateJsonError(text)
      return valid ? found === undefined : found !== undefined && found.position <= text.length
    }),
    { numRuns: 2000 },
  )
})

t.test('invalid JSON bodies say where, a 415 names application/json', async (t) => {
  const { app } = await makeApp(t)
  const put = (payload: string, headers: Record<string, string> = JSON_TYPE) => app.inject({ method: 'PUT', url: '/volumes/bad', payload, headers })
  const cut = assertProblem(t, await put('{"replicas": ['), 400, 'a cut body')
  t.equal(cut.detail, 'the body is not valid JSON at line 1, column 15 (character 14): it ends too early')
  const comma = assertProblem(t, await put('{\n  "replicas": [\n    {"id": "a",, "path": "a.img"}\n  ]\n}'), 400, 'a stray comma')
  t.equal(comma.detail, 'the body is not valid JSON at line 3, column 16 (character 33): expected a double-quoted property name, found ","')
  const replica = assertProblem(t, await app.inject({ method: 'PUT', url: '/volumes/v/replicas/r', payload: '{"path": "r.img",}', headers: JSON_TYPE }), 400, 'the replica route too')
  t.match(replica.detail, /^the body is not valid JSON at line 1, column 18 \(character 17\): expected a double-quoted property name, found "}"$/)
  t.equal(assertProblem(t, await put(''), 400, 'an empty body').detail, 'the body is empty, but Content-Type says application/json')
  const proto = assertProblem(t, await put('{"__proto__": {"polluted": true}, "replicas": []}'), 400, 'a __proto__ key')
  t.match(proto.detail, /__proto__/, 'prototype poisoning is still refused, and said so')
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'nothing polluted')
  const charset = await put('{"replicas": [{"id": "a", "path": "a.img"}]}', { 'content-type': 'application/json; charset=utf-8' })
  t.equal(charset.statusCode, 201, 'valid JSON (with a charset) still parses')

  for (const type of ['application/xml', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
    const res = await put('<volume/>', { 'content-type': type })
    const problem = assertProblem(t, res, 415, `Content-Type: ${type}`)
    t.match(problem.detail, /application\/json/, `the 415 names application/json (${problem.detail})`)
    t.equal(problem.type, 'https://filemirror.dev/problems/unsupported-media-type')
  }
  const replica415 = await app.inject({ method: 'PUT', url: '/volumes/v/replicas/r', payload: 'path=r.img', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
  t.match(assertProblem(t, replica415, 415, 'the replica route').detail, /application\/json/)
})

t.test('a replica path outside the storage roots names them; a root that is gone is named and not recreated', async (t) => {
  const base = await scratch(t)
  const dataDir = join(base, 'data')
  const slow = join(base, 'slow')
  await mkdir(dataDir)
  await mkdir(slow)
  const { app } = await makeApp(t, { DATA_DIR: dataDir, STORAGE_ROOTS: `${dataDir},${slow}` })
  const outside = await app.inject({ method: 'PUT', url: '/volumes/v', payload: { replicas: [{ id: 'a', path: '/etc/filemirror.img' }] } })
  t.equal(assertProblem(t, outside, 400, 'outside').detail, `path /etc/filemirror.img is outside the storage roots (${dataDir}, ${slow})`)

  const created = await app.inject({ method: 'PUT', url: '/volumes/v', payload: { replicas: [{ id: 'a', path: 'v/a.img' }] } })
  t.equal(created.statusCode, 201)
  await rm(slow, { recursive: true })
  const gone = await app.inject({ method: 'PUT', url: '/volumes/v/replicas/b', payload: { path: join(slow, 'v', 'b.img') } })
  t.match(assertProblem(t, gone, 400, 'a replica in a root that is gone').detail, `is in the storage root ${slow}, which does not exist now (is it mounted?)`)
  const fresh = await app.inject({ method: 'PUT', url: '/volumes/w', payload: { replicas: [{ id: 'a', path: join(slow, 'w.img') }] } })
  assertProblem(t, fresh, 400, 'a new volume there too')
  t.notOk(existsSync(slow), 'the missing root was not recreated')
})
