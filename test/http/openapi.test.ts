// openapi.yaml against the service itself:
//  - the document is OpenAPI 3.1, its schemas compile (ajv, JSON Schema 2020-12) and its component
//    schemas are the zod schemas of src/schemas.ts, keyword for keyword;
//  - the routes Fastify serves and the operations the document lists are the same set;
//  - every reply of a broad tour of the API has a documented status, the documented required
//    headers (each matching its schema) and a body matching the documented schema; every 4xx/5xx
//    is application/problem+json.
import t, { type Test } from 'tap'
import { readFile } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import Ajv2020 from 'ajv/dist/2020.js'
import addFormats from 'ajv-formats'
import { parse as parseYaml } from 'yaml'
import { z } from 'zod'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { dataQuerySchema, groupListQuerySchema, groupQuerySchema } from '../../src/http/schemas.js'
import { ioErrorSchema, nameSchema, replicaFieldsSchema, replicaSpecSchema, volumeSpecSchema } from '../../src/engine/spec.js'
import { operationGroupSchema, replicaOperationSchema, replicaStatusSchema, volumeStatusSchema } from '../../src/engine/status.js'
import { FaultInjector } from '../helpers/fault-injecting-file.js'
import { scratch } from '../helpers/scratch.js'

type Json = any

// ------------------------------------------------------------------ the document

const docText = await readFile(new URL('../../openapi.yaml', import.meta.url), 'utf8')
const doc: Json = parseYaml(docText)
const DOC_ID = 'https://filemirror.dev/openapi.yaml'
const HTTP_METHODS = ['get', 'head', 'put', 'post', 'delete', 'patch', 'options'] as const

/** JSON pointer token escaping (RFC 6901). */
const esc = (token: string) => token.replace(/~/g, '~0').replace(/\//g, '~1')
const unesc = (token: string) => decodeURIComponent(token).replace(/~1/g, '/').replace(/~0/g, '~')

function at(root: Json, pointer: string): Json {
  let value = root
  for (const token of pointer.split('/').slice(1)) {
    if (value === undefined || value === null) return undefined
    value = value[unesc(token)]
  }
  return value
}

/** Follows OpenAPI Reference Objects inside the document; returns the target and where it sits. */
function deref(value: Json, pointer: string): { value: Json; pointer: string } {
  for (let hops = 0; value && typeof value.$ref === 'string'; hops++) {
    if (!value.$ref.startsWith('#/') || hops > 16) throw new Error(`unresolvable $ref ${value.$ref}`)
    pointer = value.$ref.slice(1)
    value = at(doc, pointer)
  }
  return { value, pointer }
}

/** Every operation of the document: path template, method, operation object. */
const operations: Array<{ path: string; method: (typeof HTTP_METHODS)[number]; op: Json; key: string }> = []
for (const [path, item] of Object.entries<Json>(doc.paths ?? {})) {
  for (const method of HTTP_METHODS) if (item[method]) operations.push({ path, method, op: item[method], key: `${method.toUpperCase()} ${path}` })
}

// ajv compiles any schema of the document by its JSON pointer, so `#/components/...` refs resolve.
const ajv = new Ajv2020.default({ strict: true, allErrors: true, allowUnionTypes: true })
addFormats.default(ajv)
// The document's own top-level members are not JSON Schema keywords: declare them so strict mode
// accepts the document as the root every pointer resolves against.
for (const member of Object.keys(doc)) ajv.addKeyword(member)
ajv.addSchema(doc, DOC_ID)
const validators = new Map<string, ReturnType<typeof ajv.compile>>()

function validatorAt(pointer: string) {
  let validate = validators.get(pointer)
  if (!validate) {
    const fragment = pointer.split('/').map(encodeURIComponent).join('/')
    validate = ajv.getSchema(`${DOC_ID}#${fragment}`)
    if (!validate) throw new Error(`no schema at ${pointer}`)
    validators.set(pointer, validate)
  }
  return validate
}

function validates(t: Test, pointer: string, value: unknown, message: string): boolean {
  const validate = validatorAt(pointer)
  const ok = validate(value) as boolean
  t.ok(ok, message, ok ? {} : { errors: validate.errors, found: value })
  return ok
}

// ------------------------------------------------------------------ checking replies

/** Statuses seen per operation, for the coverage summary at the end. */
const seen = new Map<string, Set<string>>()

/** What the checks read of a reply (an inject reply, or the head of a real one). */
type Reply = Pick<LightMyRequestResponse, 'statusCode' | 'headers' | 'body' | 'rawPayload'>

/** Asserts that `res` is what `response` (a Response Object at `pointer`) documents. */
function conformsTo(t: Test, label: string, response: Json, pointer: string, res: Reply, head: boolean): void {
  for (const [name, ref] of Object.entries<Json>(response.headers ?? {})) {
    const { value: header, pointer: headerAt } = deref(ref, `${pointer}/headers/${esc(name)}`)
    const found = res.headers[name.toLowerCase()]
    if (header.required) t.ok(found !== undefined, `${label}: has header ${name}`)
    if (found !== undefined) validates(t, `${headerAt}/schema`, String(found), `${label}: header ${name}: ${String(found)}`)
  }
  const type = String(res.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase()
  if (res.statusCode >= 400) t.equal(type, 'application/problem+json', `${label}: a problem`)
  if (head || !response.content) {
    t.equal(res.rawPayload.length, 0, `${label}: no body`)
    return
  }
  const media = response.content[type]
  if (!t.ok(media, `${label}: content type ${type} is documented`)) return
  if (!type.endsWith('json')) return
  let body: unknown
  try {
    body = JSON.parse(res.body)
  } catch {
    t.fail(`${label}: body is JSON`, { body: res.body.slice(0, 200) })
    return
  }
  validates(t, `${pointer}/content/${esc(type)}/schema`, body, `${label}: body matches the schema`)
  if (type === 'application/problem+json') t.equal((body as Json).status, res.statusCode, `${label}: problem status is the HTTP status`)
}

/** Asserts that a reply of `method template` has a documented status and matches that response. */
function conforms(t: Test, method: string, template: string, res: Reply): void {
  const m = method.toLowerCase()
  const key = `${method.toUpperCase()} ${template}`
  const label = `${key} → ${res.statusCode}`
  const op = doc.paths?.[template]?.[m]
  if (!t.ok(op, `${key} is documented`)) return
  let statuses = seen.get(key)
  if (!statuses) seen.set(key, (statuses = new Set()))
  statuses.add(String(res.statusCode))
  const entry = op.responses?.[String(res.statusCode)]
  if (!t.ok(entry, `${label}: status is documented`, entry ? {} : { body: res.body.slice(0, 300) })) return
  const { value: response, pointer } = deref(entry, `/paths/${esc(template)}/${m}/responses/${res.statusCode}`)
  conformsTo(t, label, response, pointer, res, m === 'head')
}

/** Injects a request and checks the reply against the operation `template` documents. */
async function call(t: Test, app: FastifyInstance, template: string, request: InjectOptions & { method: string; url: string }, expected?: number) {
  const res = await app.inject(request)
  if (expected !== undefined) t.equal(res.statusCode, expected, `${request.method} ${request.url} answers ${expected}`, res.statusCode === expected ? {} : { body: res.body.slice(0, 300) })
  conforms(t, request.method, template, res)
  return res
}

const json = (res: LightMyRequestResponse): Json => JSON.parse(res.body)

// ------------------------------------------------------------------ helpers for the app

/** A multipart/form-data body built by hand (RFC 7578). */
function formData(parts: Array<{ name: string; value: string } | { name: string; filename: string; data: Buffer }>) {
  const boundary = 'openapi-test-7f3a9c'
  const chunks: Buffer[] = []
  for (const part of parts) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"`
    if ('filename' in part) head += `; filename="${part.filename}"\r\nContent-Type: application/octet-stream`
    chunks.push(Buffer.from(`${head}\r\n\r\n`, 'latin1'), 'filename' in part ? part.data : Buffer.from(part.value), Buffer.from('\r\n'))
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`, 'latin1'))
  return { payload: Buffer.concat(chunks), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } }
}

/**
 * The routes in Fastify's radix tree. Fastify offers no list of its routes once they are registered
 * (an onRoute hook would have to be added before buildApp registers them), so this reads the tree
 * printRoutes({ commonPrefix: false }) draws: each line is "<drawing><segment> (METHOD, ...)", the
 * drawing 4 characters per level, a segment the path from its parent's. Every route read this way is
 * then confirmed with app.hasRoute, so a misread tree fails the test rather than passing it.
 */
function registeredRoutes(app: FastifyInstance): Array<{ method: string; path: string }> {
  const routes: Array<{ method: string; path: string }> = []
  const stack: string[] = []
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const column = line.search(/[^\s│├└─]/)
    if (column < 0) continue
    const m = /^(\S+)(?: \(([^)]*)\))?/.exec(line.slice(column))
    if (!m) continue
    const depth = Math.max(0, Math.round(column / 4) - 1)
    stack.length = depth
    stack.push(m[1])
    const path = ('/' + stack.join('/')).replace(/\/{2,}/g, '/')
    for (const method of (m[2] ?? '').split(',').map((s) => s.trim()).filter(Boolean)) routes.push({ method, path })
  }
  return routes
}

const toOpenApiPath = (fastifyPath: string) => fastifyPath.replace(/:([A-Za-z0-9_]+)/g, '{$1}')
const toFastifyPath = (template: string) => template.replace(/\{([A-Za-z0-9_]+)\}/g, ':$1')

// ------------------------------------------------------------------ the app, built as the service builds it

const dataDir = await scratch(t, 'filemirror-openapi-')
const app = await buildApp({ config: loadConfig({ DATA_DIR: dataDir, LOG_LEVEL: 'silent' }) })
t.teardown(() => app.close())
await app.volumesOpen

// ------------------------------------------------------------------ the document itself

t.test('openapi.yaml is a well-formed OpenAPI 3.1 document', async (t) => {
  t.equal(doc.openapi, '3.1.0', 'OpenAPI 3.1')
  t.ok(doc.info?.title && doc.info?.version, 'info has a title and a version')
  for (const name of Object.keys(doc.components?.schemas ?? {})) {
    t.doesNotThrow(() => validatorAt(`/components/schemas/${esc(name)}`), `schema ${name} compiles`)
  }
  const ids = operations.map((o) => o.op.operationId)
  t.equal(new Set(ids).size, ids.length, 'operationIds are unique')
  for (const { path, method, op, key } of operations) {
    t.ok(op.operationId && op.summary, `${key} has an operationId and a summary`)
    const statuses = Object.keys(op.responses ?? {})
    t.ok(statuses.some((s) => /^2\d\d$/.test(s)), `${key} documents a success`)
    t.notOk(statuses.includes('default'), `${key} lists its statuses (no default)`)
    // Path parameters: declared exactly for the template's {names}.
    const params = [...(doc.paths[path].parameters ?? []), ...(op.parameters ?? [])].map((p: Json, i: number) => deref(p, `/p/${i}`).value)
    const declared = params.filter((p: Json) => p.in === 'path').map((p: Json) => p.name).sort()
    const inTemplate = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort()
    t.strictSame(declared, inTemplate, `${key} declares its path parameters`)
    for (const status of statuses) {
      const { value: response, pointer } = deref(op.responses[status], `/paths/${esc(path)}/${method}/responses/${status}`)
      t.ok(response?.description, `${key} ${status} has a description`)
      for (const ref of Object.values<Json>(response.headers ?? {})) t.ok(deref(ref, pointer).value?.schema, `${key} ${status}: header has a schema`)
      if (Number(status) >= 400 && method !== 'head') {
        t.strictSame(
          Object.keys(response.content ?? {}),
          ['application/problem+json'],
          `${key} ${status} is application/problem+json`,
        )
        t.equal(response.content?.['application/problem+json']?.schema?.$ref, '#/components/schemas/Problem', `${key} ${status} uses the shared Problem`)
      }
    }
  }
})

// ------------------------------------------------------------------ the document against the zod schemas

/** Keywords that only annotate: ignored when comparing with zod. */
const ANNOTATIONS = new Set(['description', 'title', 'examples', '$schema', '$comment', '$id', '$defs', 'deprecated', 'readOnly', 'writeOnly'])
const SCHEMA_MAPS = new Set(['properties', 'patternProperties', 'dependentSchemas'])
const SCHEMA_LISTS = new Set(['anyOf', 'allOf', 'oneOf', 'prefixItems'])
const SCHEMA_VALUES = new Set(['items', 'additionalProperties', 'propertyNames', 'not', 'contains', 'if', 'then', 'else', 'unevaluatedProperties', 'unevaluatedItems'])

/**
 * A schema with its $refs inlined (a ref back into one being inlined becomes {$recursive: true}),
 * annotations dropped and `required` sorted: two schemas that validate alike compare equal.
 */
function normalize(schema: Json, resolve: (ref: string) => Json, inlining: string[] = []): Json {
  if (typeof schema !== 'object' || schema === null) return schema
  let out: Json = {}
  for (const [key, value] of Object.entries<Json>(schema)) {
    if (ANNOTATIONS.has(key) || key === '$ref') continue
    if (SCHEMA_MAPS.has(key)) out[key] = Object.fromEntries(Object.entries<Json>(value).map(([k, v]) => [k, normalize(v, resolve, inlining)]))
    else if (SCHEMA_LISTS.has(key)) out[key] = value.map((v: Json) => normalize(v, resolve, inlining))
    else if (SCHEMA_VALUES.has(key)) out[key] = normalize(value, resolve, inlining)
    else if (key === 'required') out[key] = [...value].sort()
    else out[key] = value
  }
  if (typeof schema.$ref === 'string') {
    const ref = schema.$ref
    out = inlining.includes(ref) ? { ...out, $recursive: true } : { ...normalize(resolve(ref), resolve, [...inlining, ref]), ...out }
  }
  return out
}

const fromDoc = (schema: Json) => normalize(schema, (ref) => at(doc, ref.slice(1)))
const fromZod = (schema: z.ZodType) => {
  const rendered = z.toJSONSchema(schema, { target: 'draft-2020-12', io: 'input' })
  return normalize(rendered, (ref) => at(rendered, ref.slice(1)))
}

t.test('component schemas are the zod schemas of src/schemas.ts', async (t) => {
  // Input mode: what each schema accepts. Request bodies are strict objects (unknown members
  // refused); reply objects are plain z.object (unknown members allowed, e.g. a scrub's mismatches).
  const mirrors: Array<[string, z.ZodType]> = [
    ['Name', nameSchema],
    ['IoError', ioErrorSchema],
    ['ReplicaSpec', replicaSpecSchema],
    // The route takes the id from the path: the same members, id optional (and the same checks across them).
    ['ReplicaAddition', replicaFieldsSchema.partial({ id: true })],
    ['VolumeSpec', volumeSpecSchema],
    ['ReplicaStatus', replicaStatusSchema],
    ['VolumeStatus', volumeStatusSchema],
    ['ReplicaOperation', replicaOperationSchema],
    ['OperationGroup', operationGroupSchema],
  ]
  for (const [name, schema] of mirrors) {
    t.strictSame(fromDoc(doc.components.schemas[name]), fromZod(schema), `${name} mirrors zod`)
  }

  // Query parameters: the same names as the strict zod query objects, the same schemas.
  const queryOf = (key: string) => {
    const found = operations.find((o) => o.key === key)!
    const params = [...(doc.paths[found.path].parameters ?? []), ...(found.op.parameters ?? [])].map((p: Json) => deref(p, '').value)
    return Object.fromEntries(params.filter((p: Json) => p.in === 'query').map((p: Json) => [p.name, p.schema]))
  }
  const queries: Array<[string, z.ZodObject, string[]]> = [
    ['GET /volumes/{name}/data', dataQuerySchema, []],
    ['HEAD /volumes/{name}/data', dataQuerySchema, []],
    ['PUT /volumes/{name}/data', dataQuerySchema.omit({ replica: true }), []],
    ['GET /operations/{id}', groupQuerySchema, []],
    // limit is added in routes/volumes.ts (1-1000, default 100) and checked by the tour below.
    ['GET /volumes/{name}/operations', groupListQuerySchema, ['limit']],
  ]
  for (const [key, schema, extra] of queries) {
    const documented = queryOf(key)
    t.strictSame(Object.keys(documented).sort(), [...Object.keys(schema.shape), ...extra].sort(), `${key}: the query parameters zod accepts`)
    for (const [name, member] of Object.entries(schema.shape)) {
      t.strictSame(fromDoc(documented[name]), fromZod((member as z.ZodOptional<z.ZodType>).unwrap()), `${key}: ?${name} mirrors zod`)
    }
  }
  t.strictSame(fromDoc(doc.components.parameters.VolumeName.schema), fromZod(nameSchema), '{name} is a Name')
})

// ------------------------------------------------------------------ routes against paths

t.test('the routes Fastify serves are exactly the documented operations', async (t) => {
  const routes = registeredRoutes(app)
  t.ok(routes.length >= operations.length, `printRoutes lists ${routes.length} routes`)
  for (const { method, path } of routes) {
    // Guards the parse of printRoutes: every route read from it must exist.
    t.ok(app.hasRoute({ method: method as 'GET', url: path }), `parsed route ${method} ${path} exists`)
    t.ok(doc.paths?.[toOpenApiPath(path)]?.[method.toLowerCase()], `${method} ${toOpenApiPath(path)} is in openapi.yaml`)
  }
  // The other direction, asked of the router itself rather than of the parse: every documented path
  // answers exactly the documented methods.
  for (const [path, item] of Object.entries<Json>(doc.paths)) {
    for (const method of HTTP_METHODS) {
      const routed = app.hasRoute({ method: method.toUpperCase() as 'GET', url: toFastifyPath(path) })
      t.equal(routed, Boolean(item[method]), `${method.toUpperCase()} ${path}: ${item[method] ? 'documented and routed' : 'neither documented nor routed'}`)
    }
  }
})

t.test('an undocumented method on a documented path is a 405 naming the documented ones', async (t) => {
  const { value: response, pointer } = deref(doc.components.responses.MethodNotAllowed, '/components/responses/MethodNotAllowed')
  for (const [path, item] of Object.entries<Json>(doc.paths)) {
    const documented = HTTP_METHODS.filter((m) => item[m]).map((m) => m.toUpperCase())
    const method = ['PATCH', 'OPTIONS', 'DELETE', 'POST', 'PUT'].find((m) => !documented.includes(m))!
    const url = path.replace(/\{(\w+)\}/g, (_, p: string) => (p === 'name' ? 'v405' : 'x'))
    const res = await app.inject({ method: method as 'PATCH', url })
    t.equal(res.statusCode, 405, `${method} ${path} → 405`)
    t.strictSame(String(res.headers.allow).split(/,\s*/).sort(), [...documented].sort(), `${path}: Allow lists the documented methods`)
    conformsTo(t, `${method} ${path} → 405`, response, pointer, res, false)
  }
  const res = await app.inject({ method: 'GET', url: '/no/such/path' })
  t.equal(res.statusCode, 404, 'an unknown path → 404')
  conformsTo(t, 'GET /no/such/path → 404', deref(doc.components.responses.NotFound, '').value, '/components/responses/NotFound', res, false)
})

// ------------------------------------------------------------------ a tour of the API

t.test('every route answers as documented', async (t) => {
  // Health.
  await call(t, app, '/healthz', { method: 'GET', url: '/healthz' }, 200)
  t.match(json(await call(t, app, '/readyz', { method: 'GET', url: '/readyz' }, 200)), { status: 'ready', volumes: 0 })
  const served = await call(t, app, '/openapi.yaml', { method: 'GET', url: '/openapi.yaml' }, 200)
  t.equal(served.body, docText, 'GET /openapi.yaml serves this document')

  // Volumes.
  const V = '/volumes/{name}'
  const spec = {
    replicas: [
      { id: 'a', path: 'tour/a.img' },
      { id: 'b', path: 'tour/b.img', label: { rack: 2, tags: ['ssd'] } },
      { id: 'w', path: 'tour/w.img', read: false },
    ],
  }
  t.same(json(await call(t, app, '/volumes', { method: 'GET', url: '/volumes' }, 200)), { volumes: [] }, 'no volume yet')
  const created = await call(t, app, V, { method: 'PUT', url: '/volumes/tour', payload: spec }, 201)
  t.equal(created.headers.location, '/volumes/tour', 'Location of the new volume')
  await call(t, app, V, { method: 'PUT', url: '/volumes/tour', payload: spec }, 200)
  await call(t, app, V, { method: 'PUT', url: '/volumes/tour', payload: { replicas: spec.replicas.slice(0, 1) } }, 409)
  await call(t, app, V, { method: 'PUT', url: '/volumes/elsewhere', payload: { replicas: [{ id: 'x', path: 'tour/a.img' }] } }, 409)
  await call(t, app, V, { method: 'PUT', url: '/volumes/.hidden', payload: spec }, 400)
  const invalid = await call(t, app, V, { method: 'PUT', url: '/volumes/bad', payload: { replicas: [{ id: 'a', path: 'x', mode: 'fast' }], extra: 1 } }, 400)
  t.ok(json(invalid).errors?.length >= 2, 'a validation problem lists every invalid field')
  await call(t, app, V, { method: 'PUT', url: '/volumes/bad', payload: { replicas: [{ id: 'a', path: '../outside.img' }] } }, 400)
  await call(t, app, V, { method: 'PUT', url: '/volumes/bad', payload: '{"replicas": [', headers: { 'content-type': 'application/json' } }, 400)
  await call(t, app, V, { method: 'PUT', url: '/volumes/bad', payload: '<volume/>', headers: { 'content-type': 'application/xml' } }, 415)
  await call(t, app, V, { method: 'PUT', url: '/volumes/bad', payload: JSON.stringify({ replicas: [], pad: 'x'.repeat(1 << 20) }), headers: { 'content-type': 'application/json' } }, 413)
  const status = json(await call(t, app, V, { method: 'GET', url: '/volumes/tour' }, 200))
  t.same(status.replicas.map((r: Json) => [r.id, r.state]), [['a', 'in-sync'], ['b', 'in-sync'], ['w', 'in-sync']], 'three replicas in sync')
  await call(t, app, V, { method: 'GET', url: '/volumes/missing' }, 404)
  await call(t, app, V, { method: 'GET', url: '/volumes/.hidden' }, 404)
  t.equal(json(await call(t, app, '/volumes', { method: 'GET', url: '/volumes' }, 200)).volumes.length, 1, 'one volume listed')

  // Writes: every replica here is sync, so a write is settled by its reply (200).
  const D = '/volumes/{name}/data'
  const content = Buffer.from('hello, mirrored world!')
  const whole = await call(t, app, D, { method: 'PUT', url: '/volumes/tour/data', payload: content, headers: { 'content-type': 'application/octet-stream', prefer: 'wait=5' } }, 200)
  t.equal(whole.headers['preference-applied'], 'wait=5', 'Preference-Applied echoes the wait')
  const written = json(whole)
  t.match(written, { kind: 'write', offset: 0, length: content.length, status: 'done' }, 'the write group')
  t.same(written.operations.map((o: Json) => [o.replica, o.status, o.bytes]), [['a', 'done', 22], ['b', 'done', 22], ['w', 'done', 22]], 'one operation per writing replica')
  await call(t, app, D, { method: 'PUT', url: '/volumes/tour/data', payload: 'HELLO', headers: { 'content-range': 'bytes 0-4/*' } }, 200)
  content.write('HELLO', 0)
  const etag = String((await call(t, app, V, { method: 'GET', url: '/volumes/tour' }, 200)).json().etag)
  await call(t, app, D, { method: 'PUT', url: '/volumes/tour/data', payload: 'WORLD', headers: { 'content-range': 'bytes 16-20/22', 'if-match': etag } }, 200)
  content.write('WORLD', 16)
  const invalidRange = await call(t, app, D, { method: 'PUT', url: '/volumes/tour/data', payload: 'abc', headers: { 'content-range': 'bytes */22' } }, 400)
  t.equal(json(invalidRange).type, 'https://filemirror.dev/problems/invalid-content-range', 'an invalid Content-Range is its own problem type')
  await call(t, app, D, { method: 'PUT', url: '/volumes/tour/data', payload: 'abc', headers: { 'content-range': 'bytes 0-9/*' } }, 400)
  await call(t, app, D, { method: 'PUT', url: '/volumes/tour/data?replica=a', payload: 'abc' }, 400)
  await call(t, app, D, { method: 'PUT', url: '/volumes/tour/data', payload: 'abc', headers: { 'if-match': '"stale"' } }, 412)
  await call(t, app, D, { method: 'PUT', url: '/volumes/tour/data', payload: 'abc', headers: { 'if-none-match': '*' } }, 412)
  await call(t, app, D, { method: 'PUT', url: '/volumes/missing/data', payload: 'abc' }, 404)

  // Reads.
  const full = await call(t, app, D, { method: 'GET', url: '/volumes/tour/data' }, 200)
  t.ok(full.rawPayload.equals(content), 'GET returns the bytes written')
  t.equal(full.headers['content-length'], String(content.length), 'Content-Length is the size')
  const current = String(full.headers.etag)
  const one = await call(t, app, D, { method: 'GET', url: '/volumes/tour/data', headers: { range: 'bytes=7-14' } }, 206)
  t.equal(one.headers['content-range'], `bytes 7-14/${content.length}`, 'Content-Range of one range')
  t.ok(one.rawPayload.equals(content.subarray(7, 15)), 'the range')
  const multi = await call(t, app, D, { method: 'GET', url: '/volumes/tour/data', headers: { range: 'bytes=0-1,-3' } }, 206)
  t.match(String(multi.headers['content-type']), /^multipart\/byteranges; boundary=\S+$/, 'several ranges: multipart/byteranges')
  t.notOk(multi.headers['content-range'], 'no top-level Content-Range with several ranges')
  t.match(multi.body, `Content-Range: bytes 0-1/${content.length}\r\n\r\nHE\r\n`, 'first part')
  t.match(multi.body, `Content-Range: bytes 19-21/${content.length}\r\n\r\nLD!\r\n`, 'second part')
  const unsatisfiable = await call(t, app, D, { method: 'GET', url: '/volumes/tour/data', headers: { range: 'bytes=1000-' } }, 416)
  t.equal(unsatisfiable.headers['content-range'], `bytes */${content.length}`, '416 names the size')
  await call(t, app, D, { method: 'GET', url: '/volumes/tour/data', headers: { 'if-none-match': current } }, 304)
  await call(t, app, D, { method: 'GET', url: '/volumes/tour/data', headers: { 'if-match': '"stale"' } }, 412)
  const ignored = await call(t, app, D, { method: 'GET', url: '/volumes/tour/data', headers: { range: 'bytes=0-0', 'if-range': '"stale"' } }, 200)
  t.equal(ignored.rawPayload.length, content.length, 'a failed If-Range serves everything')
  const fromB = await call(t, app, D, { method: 'GET', url: '/volumes/tour/data?replica=b' }, 200)
  t.ok(fromB.rawPayload.equals(content), '?replica reads that replica')
  await call(t, app, D, { method: 'GET', url: '/volumes/tour/data?replica=zz' }, 404)
  await call(t, app, D, { method: 'GET', url: '/volumes/tour/data?replica=.x' }, 400)
  await call(t, app, D, { method: 'GET', url: '/volumes/tour/data?offset=3' }, 400)
  await call(t, app, D, { method: 'GET', url: '/volumes/missing/data' }, 404)

  // HEAD: the same headers, no body.
  const head = await call(t, app, D, { method: 'HEAD', url: '/volumes/tour/data' }, 200)
  t.equal(head.headers['content-length'], String(content.length), 'HEAD: Content-Length of a GET')
  await call(t, app, D, { method: 'HEAD', url: '/volumes/tour/data', headers: { range: 'bytes=0-1' } }, 206)
  await call(t, app, D, { method: 'HEAD', url: '/volumes/tour/data', headers: { range: 'bytes=0-1,4-5' } }, 206)
  await call(t, app, D, { method: 'HEAD', url: '/volumes/tour/data', headers: { range: 'bytes=99-' } }, 416)
  await call(t, app, D, { method: 'HEAD', url: '/volumes/tour/data', headers: { 'if-none-match': current } }, 304)
  await call(t, app, D, { method: 'HEAD', url: '/volumes/tour/data', headers: { 'if-match': '"stale"' } }, 412)
  await call(t, app, D, { method: 'HEAD', url: '/volumes/tour/data?bogus=1' }, 400)
  await call(t, app, D, { method: 'HEAD', url: '/volumes/missing/data' }, 404)

  // POST: multipart/form-data, offset first, then file parts written one after the other.
  const form = formData([
    { name: 'note', value: 'ignored' },
    { name: 'offset', value: '7' },
    { name: 'one', filename: 'one.bin', data: Buffer.from('MIR') },
    { name: 'two', filename: 'two.bin', data: Buffer.from('RORED') },
  ])
  const posted = await call(t, app, D, { method: 'POST', url: '/volumes/tour/data', ...form }, 200)
  t.match(json(posted), { kind: 'write', offset: 7, length: 8, status: 'done' }, 'the POST write group')
  content.write('MIRRORED', 7)
  t.ok((await app.inject({ method: 'GET', url: '/volumes/tour/data' })).rawPayload.equals(content), 'the files landed at the offset')
  await call(t, app, D, { method: 'POST', url: '/volumes/tour/data', payload: 'offset=0', headers: { 'content-type': 'application/x-www-form-urlencoded' } }, 415)
  await call(t, app, D, { method: 'POST', url: '/volumes/tour/data', ...formData([{ name: 'f', filename: 'f', data: Buffer.from('x') }]) }, 400)
  await call(t, app, D, { method: 'POST', url: '/volumes/tour/data', ...formData([{ name: 'offset', value: '-1' }]) }, 400)
  await call(t, app, D, { method: 'POST', url: '/volumes/tour/data', ...formData([{ name: 'offset', value: '0' }]) }, 400)
  const manyFields = formData(Array.from({ length: 20 }, (_, i) => ({ name: `f${i}`, value: 'v' })))
  await call(t, app, D, { method: 'POST', url: '/volumes/tour/data', ...manyFields }, 413)
  const stale = formData([{ name: 'offset', value: '0' }, { name: 'f', filename: 'f', data: Buffer.from('x') }])
  await call(t, app, D, { method: 'POST', url: '/volumes/tour/data', ...stale, headers: { ...stale.headers, 'if-match': '"stale"' } }, 412)
  await call(t, app, D, { method: 'POST', url: '/volumes/missing/data', ...stale }, 404)

  // Operation groups.
  const O = '/volumes/{name}/operations'
  const listed = json(await call(t, app, O, { method: 'GET', url: '/volumes/tour/operations' }, 200)).operations
  t.ok(listed.length >= 5, 'reads and writes are listed')
  t.ok(listed.every((g: Json, i: number) => i === 0 || listed[i - 1].createdAt >= g.createdAt), 'newest first')
  const two = json(await call(t, app, O, { method: 'GET', url: '/volumes/tour/operations?status=done&limit=2' }, 200)).operations
  t.equal(two.length, 2, '?limit')
  t.ok(two.every((g: Json) => g.status === 'done'), '?status')
  await call(t, app, O, { method: 'GET', url: '/volumes/tour/operations?status=bogus' }, 400)
  await call(t, app, O, { method: 'GET', url: '/volumes/tour/operations?limit=0' }, 400)
  await call(t, app, O, { method: 'GET', url: '/volumes/tour/operations?limit=1001' }, 400)
  await call(t, app, O, { method: 'GET', url: '/volumes/missing/operations' }, 404)
  const G = '/operations/{id}'
  t.match(json(await call(t, app, G, { method: 'GET', url: `/operations/${written.id}` }, 200)), { id: written.id, status: 'done' })
  await call(t, app, G, { method: 'GET', url: `/operations/${String(full.headers['operation-id'])}?wait=100` }, 200)
  await call(t, app, G, { method: 'GET', url: `/operations/${written.id}?wait=60001` }, 400)
  await call(t, app, G, { method: 'GET', url: `/operations/${written.id}?wait=soon` }, 400)
  await call(t, app, G, { method: 'GET', url: '/operations/00000000-0000-4000-8000-000000000000' }, 404)

  // Observability.
  await call(t, app, '/metrics', { method: 'GET', url: '/metrics' }, 200)
  for (const page of ['/', '/status.js', '/status.css']) await call(t, app, page, { method: 'GET', url: page })
  const ranges = json(await call(t, app, '/volumes/{name}/ranges', { method: 'GET', url: '/volumes/tour/ranges?max=4' }, 200))
  t.same(ranges.replicas.map((r: Json) => r.id), ['a', 'b', 'w'], 'ranges of every replica')
  await call(t, app, '/volumes/{name}/ranges', { method: 'GET', url: '/volumes/tour/ranges?max=0' }, 400)
  await call(t, app, '/volumes/{name}/ranges', { method: 'GET', url: '/volumes/missing/ranges' }, 404)
  await call(t, app, '/volumes/{name}/events', { method: 'GET', url: '/volumes/missing/events' }, 404)
  // Event streams never end, so they are read from a real socket and cut once the head is in.
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  for (const [template, path] of [['/events', '/events'], ['/volumes/{name}/events', '/volumes/tour/events']]) {
    const head = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const request = http.get(`${base}${path}`, { headers: { accept: 'text/event-stream' } }, resolve)
      request.on('error', reject)
      request.setTimeout(5_000, () => request.destroy(new Error('no response head within 5 s')))
    })
    head.destroy()
    conforms(t, 'GET', template, { statusCode: head.statusCode ?? 0, headers: head.headers, body: '', rawPayload: Buffer.alloc(0) } as Reply)
    t.match(String(head.headers['content-type']), /^text\/event-stream/, `${path} streams events`)
  }

  // Limits on writes.
  await call(t, app, D, { method: 'PUT', url: '/volumes/tour/data', payload: 'abc', headers: { 'content-range': 'bytes 0-2/99999999999999' } }, 413)
  await call(t, app, D, { method: 'POST', url: '/volumes/tour/data', ...formData([{ name: 'offset', value: '1000' }, { name: 'f', filename: 'f', data: Buffer.from('x') }]) }, 400)

  // Delete (a volume of its own).
  await call(t, app, V, { method: 'PUT', url: '/volumes/gone', payload: { replicas: [{ id: 'only', path: 'gone/only.img' }] } }, 201)
  await call(t, app, D, { method: 'PUT', url: '/volumes/gone/data', payload: 'bye' }, 200)
  await call(t, app, V, { method: 'DELETE', url: '/volumes/gone' }, 204)
  await call(t, app, V, { method: 'DELETE', url: '/volumes/gone' }, 404)
  await call(t, app, O, { method: 'GET', url: '/volumes/gone/operations' }, 404)
})

// ------------------------------------------------------------------ readiness, faults, write-behind and replicas

t.test('readiness, failures, write-behind and replica routes answer as documented', async (t) => {
  // A second service over its own DATA_DIR, built the same way but with a replica backend that the
  // test controls: opening gated/a.img waits for a gate (so readiness can be observed), the files
  // under broken/ fail writes, unreadable/a.img fails reads, and slow/behind.img takes writes only
  // once its gate opens (so an async replica is deterministically behind). SHUTDOWN_GRACE_MS=0 lets
  // close() leave write-behind in the journals instead of waiting for it.
  const dir = await scratch(t, 'filemirror-openapi-faults-')
  const env = { DATA_DIR: dir, LOG_LEVEL: 'silent', SHUTDOWN_GRACE_MS: '0' }
  const first = await buildApp({ config: loadConfig(env) })
  await first.volumesOpen
  await call(t, first, '/volumes/{name}', { method: 'PUT', url: '/volumes/gated', payload: { replicas: [{ id: 'a', path: 'gated/a.img' }] } }, 201)
  await first.close()

  let openGate!: () => void
  const opened = new Promise<void>((resolve) => (openGate = resolve))
  let slowGate!: () => void
  const slowOpened = new Promise<void>((resolve) => (slowGate = resolve))
  const faults = new FaultInjector()
  faults.set(join(dir, 'gated', 'a.img'), { openGate: () => opened })
  for (const file of ['a.img', 'post.img']) faults.set(join(dir, 'broken', file), { failWrites: 'EIO' })
  faults.set(join(dir, 'unreadable', 'a.img'), { failReads: 'EIO' })
  faults.set(join(dir, 'slow', 'behind.img'), { writeGate: () => slowOpened })
  const app = await buildApp({ config: loadConfig(env), openFile: faults.opener })
  t.teardown(async () => {
    openGate()
    slowGate()
    await app.close()
  })

  // While the persisted volume is still opening.
  const V = '/volumes/{name}'
  const D = '/volumes/{name}/data'
  const notReady = await call(t, app, '/readyz', { method: 'GET', url: '/readyz' }, 503)
  t.equal(notReady.headers['retry-after'], '1', 'Retry-After: 1')
  t.same(json(await call(t, app, '/volumes', { method: 'GET', url: '/volumes' }, 200)), { volumes: [] }, 'nothing open yet')
  await call(t, app, V, { method: 'PUT', url: '/volumes/fresh', payload: { replicas: [{ id: 'a', path: 'fresh/a.img' }] } }, 503)
  await call(t, app, V, { method: 'GET', url: '/volumes/gated' }, 503)
  await call(t, app, V, { method: 'DELETE', url: '/volumes/gated' }, 503)
  await call(t, app, '/volumes/{name}/operations', { method: 'GET', url: '/volumes/gated/operations' }, 503)
  await call(t, app, D, { method: 'GET', url: '/volumes/gated/data' }, 503)
  await call(t, app, D, { method: 'HEAD', url: '/volumes/gated/data' }, 503)
  await call(t, app, D, { method: 'PUT', url: '/volumes/gated/data', payload: 'x' }, 503)
  await call(t, app, D, { method: 'POST', url: '/volumes/gated/data', ...formData([{ name: 'offset', value: '0' }]) }, 503)
  await call(t, app, '/volumes/{name}/replicas/{id}', { method: 'PUT', url: '/volumes/gated/replicas/b', payload: { path: 'gated/b.img' } }, 503)
  await call(t, app, '/volumes/{name}/replicas/{id}', { method: 'DELETE', url: '/volumes/gated/replicas/a' }, 503)
  await call(t, app, '/volumes/{name}/replicas/{id}/resync', { method: 'POST', url: '/volumes/gated/replicas/a/resync' }, 503)
  await call(t, app, '/volumes/{name}/scrub', { method: 'POST', url: '/volumes/gated/scrub' }, 503)
  await call(t, app, '/volumes/{name}/ranges', { method: 'GET', url: '/volumes/gated/ranges' }, 503)
  await call(t, app, '/volumes/{name}/events', { method: 'GET', url: '/volumes/gated/events' }, 503)
  openGate()
  await app.volumesOpen
  t.match(json(await call(t, app, '/readyz', { method: 'GET', url: '/readyz' }, 200)), { status: 'ready', volumes: 1 })

  // A write that no reading replica takes.
  await call(t, app, V, { method: 'PUT', url: '/volumes/broken', payload: { replicas: [{ id: 'a', path: 'broken/a.img' }] } }, 201)
  const failedWrite = await call(t, app, D, { method: 'PUT', url: '/volumes/broken/data', payload: 'lost' }, 500)
  const problem = json(failedWrite)
  t.equal(problem.type, 'https://filemirror.dev/problems/write-failed', 'write-failed')
  t.equal(failedWrite.headers['operation-id'], problem.operationId, 'Operation-Id is the operationId member')
  t.equal(failedWrite.headers.location, `/operations/${problem.operationId}`, 'Location of the failed group')
  const failedGroup = json(await call(t, app, '/operations/{id}', { method: 'GET', url: `/operations/${problem.operationId}` }, 200))
  t.match(failedGroup, { status: 'failed', operations: [{ replica: 'a', status: 'failed', error: { code: 'EIO' } }] }, 'the failed group')
  t.match(json(await call(t, app, V, { method: 'GET', url: '/volumes/broken' }, 200)), { state: 'degraded', replicas: [{ state: 'failed', error: { code: 'EIO' } }] })
  await call(t, app, V, { method: 'PUT', url: '/volumes/brokenpost', payload: { replicas: [{ id: 'a', path: 'broken/post.img' }] } }, 201)
  const failedPost = await call(t, app, D, { method: 'POST', url: '/volumes/brokenpost/data', ...formData([{ name: 'offset', value: '0' }, { name: 'f', filename: 'f', data: Buffer.from('x') }]) }, 500)
  t.equal(json(failedPost).type, 'https://filemirror.dev/problems/write-failed', 'POST: write-failed')
  // Once the only replica has failed, the next write has nowhere to go: it is refused.
  const nowhere = await call(t, app, D, { method: 'PUT', url: '/volumes/broken/data', payload: 'gone' })
  t.ok(nowhere.statusCode >= 500, 'a write with no healthy replica is refused')

  // A read that no replica serves.
  await call(t, app, V, { method: 'PUT', url: '/volumes/unreadable', payload: { replicas: [{ id: 'a', path: 'unreadable/a.img' }] } }, 201)
  await call(t, app, D, { method: 'PUT', url: '/volumes/unreadable/data', payload: 'unseen' }, 200)
  const failedRead = await call(t, app, D, { method: 'GET', url: '/volumes/unreadable/data' }, 500)
  t.equal(json(failedRead).type, 'https://filemirror.dev/problems/read-failed', 'read-failed')
  t.notMatch(json(failedRead).detail, dir, 'the detail does not leak the path')

  // An async replica that is behind: 202 with the group to poll.
  const two = { replicas: [{ id: 'fast', path: 'slow/fast.img' }, { id: 'behind', path: 'slow/behind.img', mode: 'async' }] }
  await call(t, app, V, { method: 'PUT', url: '/volumes/slow', payload: two }, 201)
  const accepted = await call(t, app, D, { method: 'PUT', url: '/volumes/slow/data', payload: 'later', headers: { prefer: 'wait=0' } }, 202)
  const pending = json(accepted)
  t.equal(accepted.headers.location, `/operations/${pending.id}`, 'Location of the group')
  t.equal(accepted.headers['preference-applied'], 'wait=0', 'Preference-Applied')
  t.match(pending, { status: 'pending', operations: [{ replica: 'fast', status: 'done' }, { replica: 'behind', mode: 'async' }] }, 'the sync replica holds the bytes')
  const polled = json(await call(t, app, '/operations/{id}', { method: 'GET', url: `/operations/${pending.id}?wait=50` }, 200))
  t.equal(polled.status, 'pending', 'a long-poll that runs out answers the group as it is')
  const pendingList = json(await call(t, app, '/volumes/{name}/operations', { method: 'GET', url: '/volumes/slow/operations?status=pending' }, 200))
  t.same(pendingList.operations.map((g: Json) => g.id), [pending.id], '?status=pending')
  const posted = await call(t, app, D, { method: 'POST', url: '/volumes/slow/data', ...formData([{ name: 'offset', value: '5' }, { name: 'f', filename: 'f', data: Buffer.from('!') }]) }, 202)
  t.ok(posted.headers.location, 'POST: 202 with Location')
  t.match(json(await call(t, app, V, { method: 'GET', url: '/volumes/slow' }, 200)), { replicas: [{ id: 'fast', state: 'in-sync' }, { id: 'behind', state: 'behind' }] })

  // Replicas of a live volume.
  const R = '/volumes/{name}/replicas/{id}'
  await call(t, app, V, { method: 'PUT', url: '/volumes/reps', payload: { replicas: [{ id: 'a', path: 'reps/a.img' }] } }, 201)
  await call(t, app, D, { method: 'PUT', url: '/volumes/reps/data', payload: 'replicated' }, 200)
  const added = await call(t, app, R, { method: 'PUT', url: '/volumes/reps/replicas/b', payload: { path: 'reps/b.img', read: false } }, 201)
  t.equal(added.headers.location, '/volumes/reps', 'Location of the volume')
  t.same(json(added).replicas.map((r: Json) => r.id), ['a', 'b'], 'the replica is added')
  await call(t, app, R, { method: 'PUT', url: '/volumes/reps/replicas/b', payload: { path: 'reps/b.img', read: false } }, 200)
  await call(t, app, R, { method: 'PUT', url: '/volumes/reps/replicas/b', payload: { path: 'reps/b.img' } }, 409)
  await call(t, app, R, { method: 'PUT', url: '/volumes/reps/replicas/c', payload: { id: 'd', path: 'reps/c.img' } }, 400)
  await call(t, app, R, { method: 'PUT', url: '/volumes/reps/replicas/c', payload: { path: 'reps/c.img', mode: 'later' } }, 400)
  await call(t, app, R, { method: 'PUT', url: '/volumes/reps/replicas/.c', payload: { path: 'reps/c.img' } }, 400)
  await call(t, app, R, { method: 'PUT', url: '/volumes/missing/replicas/c', payload: { path: 'reps/c.img' } }, 404)
  const S = '/volumes/{name}/replicas/{id}/resync'
  await call(t, app, S, { method: 'POST', url: '/volumes/reps/replicas/b/resync?full=true' }, 202)
  await call(t, app, S, { method: 'POST', url: '/volumes/reps/replicas/b/resync?full=yes' }, 400)
  await call(t, app, S, { method: 'POST', url: '/volumes/reps/replicas/zz/resync' }, 404)
  const C = '/volumes/{name}/scrub'
  const scrub = await call(t, app, C, { method: 'POST', url: '/volumes/reps/scrub?maxBytesPerSecond=1000000' }, 202)
  t.equal(scrub.headers.location, `/operations/${json(scrub).id}`, 'Location of the scrub group')
  t.match(json(scrub), { kind: 'scrub', mismatches: [] }, 'a scrub group')
  await call(t, app, '/operations/{id}', { method: 'GET', url: `/operations/${json(scrub).id}?wait=2000` }, 200)
  await call(t, app, C, { method: 'POST', url: '/volumes/reps/scrub?repair=maybe' }, 400)
  await call(t, app, C, { method: 'POST', url: '/volumes/missing/scrub' }, 404)
  await call(t, app, R, { method: 'DELETE', url: '/volumes/reps/replicas/zz' }, 404)
  await call(t, app, R, { method: 'DELETE', url: '/volumes/reps/replicas/b' }, 204)
  await call(t, app, R, { method: 'DELETE', url: '/volumes/reps/replicas/a' }, 409)
})

t.test('with AUTH_TOKEN, every route but /healthz and /readyz needs the bearer token', async (t) => {
  const dir = await scratch(t, 'filemirror-openapi-auth-')
  const token = 'openapi-test-token-0123456789'
  const secured = await buildApp({ config: loadConfig({ DATA_DIR: dir, LOG_LEVEL: 'silent', AUTH_TOKEN: token }) })
  t.teardown(() => secured.close())
  await secured.volumesOpen
  t.equal(doc.paths['/healthz'].get.security?.length, 0, '/healthz is documented as open')
  t.equal(doc.paths['/readyz'].get.security?.length, 0, '/readyz is documented as open')
  await call(t, secured, '/healthz', { method: 'GET', url: '/healthz' }, 200)
  await call(t, secured, '/readyz', { method: 'GET', url: '/readyz' }, 200)
  for (const { path, method } of operations) {
    if (path === '/healthz' || path === '/readyz') continue
    const url = path.replace(/\{(\w+)\}/g, (_, p: string) => (p === 'name' ? 'locked' : 'x'))
    await call(t, secured, path, { method: method.toUpperCase(), url }, 401)
  }
  await call(t, secured, '/volumes', { method: 'GET', url: '/volumes', headers: { authorization: `Bearer ${token}` } }, 200)
})

t.test('HEAD answers like GET on every route that documents it, without a body (RFC 9110 §9.3.2)', async (t) => {
  const dir = await scratch(t, 'filemirror-openapi-head-')
  const headApp = await buildApp({ config: loadConfig({ DATA_DIR: dir, LOG_LEVEL: 'silent' }) })
  t.teardown(() => headApp.close())
  await headApp.volumesOpen
  await headApp.inject({ method: 'PUT', url: '/volumes/h', payload: { replicas: [{ id: 'a', path: 'h.img' }] } })
  const put = await headApp.inject({ method: 'PUT', url: '/volumes/h/data', payload: Buffer.from('hello') })
  const groupId = String(put.headers['operation-id'])
  for (const { path, method } of operations) {
    // The data route's HEAD is tested with its ranges; a tus upload's HEAD has no GET twin (tus 1.0 §HEAD).
    if (method !== 'head' || path === '/volumes/{name}/data' || path === '/volumes/{name}/uploads/{id}') continue
    const url = path.replace('{name}', 'h').replace('{id}', groupId)
    const head = await call(t, headApp, path, { method: 'HEAD', url }, 200)
    const get = await headApp.inject({ method: 'GET', url })
    t.equal(head.headers['content-type'], get.headers['content-type'], `HEAD ${path}: same Content-Type as GET`)
  }
  await call(t, headApp, '/volumes/{name}', { method: 'HEAD', url: '/volumes/nope' }, 404)
})

// ------------------------------------------------------------------ coverage

t.test('every documented operation was exercised', async (t) => {
  for (const { key, op } of operations) {
    const statuses = seen.get(key) ?? new Set<string>()
    t.ok(statuses.size > 0, `${key} exercised (${[...statuses].sort().join(', ')})`)
    const untested = Object.keys(op.responses).filter((s) => !statuses.has(s))
    if (untested.length) t.comment(`${key}: documented but not produced here: ${untested.join(', ')}`)
  }
})
