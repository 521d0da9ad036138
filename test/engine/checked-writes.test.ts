// A write whose body must check out (a digest, a checksum) changes nothing when it does not: a whole replace
// is never installed, a partial write waits in a spool file until it checks out. The facility digests on
// the wire and tus checksums build on.
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import t from 'tap'
import type { BodyCheck } from '../../src/engine/body-stages.js'
import { EngineError } from '../../src/engine/errors.js'
import type { BodyLimits } from '../../src/engine/volume.js'
import { createVolume, makeApp, putData, waitInSync } from '../helpers/app.js'
import { pattern } from '../helpers/pattern.js'

/** A sha-256 check of the bytes a body is expected to hold. */
function sha256Of(expected: Buffer): BodyCheck {
  const want = createHash('sha256').update(expected).digest('base64')
  const hash = createHash('sha256')
  return {
    update: (chunk) => void hash.update(chunk),
    verify: () => (hash.digest('base64') === want ? null : new EngineError('digest-mismatch', 'sha-256 does not match the body')),
  }
}

const limits = (check: BodyCheck): BodyLimits => ({ idleTimeoutMs: 5_000, maxVolumeBytes: 1 << 30, check })

t.test('a checked write that fails its check changes nothing; one that passes is written', async (t) => {
  const { app, dataDir } = await makeApp(t)
  await createVolume(t, app, 'v', [{ id: 'fast', path: 'fast.bin' }, { id: 'slow', path: 'slow.bin', mode: 'async' }])
  const old = pattern(600_000, 1)
  // 200 once slow (async) holds it too, 202 when the reply came first (a loaded machine): in sync either way below.
  t.ok([200, 202].includes((await putData(app, 'v', old)).statusCode))
  await waitInSync(app, 'v')
  const volume = app.volumes.get('v')!
  const body = pattern(300_000, 2)
  const wrong = pattern(300_000, 3)

  for (const [what, options] of [
    ['a partial write', { offset: 100_000, length: body.length, resizeTo: null }],
    ['a whole replace', { offset: 0, length: body.length, resizeTo: 'end' as const }],
  ] as const) {
    const refused = await volume.write(options, Readable.from([body.subarray(0, 70_000), body.subarray(70_000)]), limits(sha256Of(wrong))).catch((err: unknown) => err)
    t.match(refused, { kind: 'digest-mismatch' }, `${what} whose body fails its check is refused`)
    t.ok((await app.inject({ url: '/volumes/v/data' })).rawPayload.equals(old), `${what}: the content is as it was`)
    await waitInSync(app, 'v')
    t.ok(readFileSync(join(dataDir, 'fast.bin')).equals(old) && readFileSync(join(dataDir, 'slow.bin')).equals(old), `${what}: both replicas as they were`)
  }
  t.same(readdirSync(join(dataDir, '.filemirror', 'spool')), [], 'no spool file is left')

  const group = await volume.write({ offset: 100_000, length: body.length, resizeTo: null }, Readable.from([body]), limits(sha256Of(body)))
  t.not(group.status, 'failed', 'a partial write that checks out is written')
  const expected = Buffer.from(old)
  body.copy(expected, 100_000)
  t.ok((await app.inject({ url: '/volumes/v/data' })).rawPayload.equals(expected), 'and reads back')
  await volume.write({ offset: 0, length: body.length, resizeTo: 'end' }, Readable.from([body]), limits(sha256Of(body)))
  t.ok((await app.inject({ url: '/volumes/v/data' })).rawPayload.equals(body), 'a whole replace that checks out is installed')
})
