// Block checksums through the API: GET /volumes/{name} shows the checksums block, PUT /volumes/{name} switches
// them (off deletes the file, on checksums the content in the background), a config without the field (an upgrade)
// keeps them on and starts uncovered.
import { randomBytes } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { blockHashImplementation } from '../../src/engine/block-hash.js'
import { volumeStatusSchema } from '../../src/engine/status.js'
import { closeOnce, createVolume, exists, getData, json, makeApp, putData } from '../helpers/app.js'
import { eventually } from '../helpers/eventually.js'

const MiB = 1 << 20

type App = Awaited<ReturnType<typeof makeApp>>['app']

async function checksums(app: App, name: string): Promise<any> {
  const status = json((await app.inject({ method: 'GET', url: `/volumes/${name}` })))
  volumeStatusSchema.parse(status)
  return status.checksums
}

t.test('GET /volumes/{name} shows checksums: on by default, covered as written, switched off and on with PUT', async (t) => {
  const { app, dataDir } = await makeApp(t)
  const created = await createVolume(t, app, 'v', [{ id: 'a', path: 'a.img' }, { id: 'b', path: 'b.img' }])
  t.same(created.checksums, { enabled: true, algorithm: 'crc32c', implementation: blockHashImplementation, blockBytes: 4096, coveredBytes: 0, coveredPercent: 100, lastScrub: null }, 'an empty volume: all of nothing covered')
  const body = randomBytes(3 * MiB + 5)
  t.equal((await putData(app, 'v', body)).statusCode, 200)
  t.match(await checksums(app, 'v'), { enabled: true, coveredBytes: body.length, coveredPercent: 100 }, 'what is written is covered at once')
  const file = join(dataDir, '.filemirror', 'journals', 'v', 'checksums')
  t.ok(await exists(file), 'kept beside the journals')

  const spec = { replicas: [{ id: 'a', path: 'a.img' }, { id: 'b', path: 'b.img' }] }
  const off = await app.inject({ method: 'PUT', url: '/volumes/v', payload: { ...spec, checksums: false } })
  t.equal(off.statusCode, 200)
  t.match(json(off).checksums, { enabled: false, coveredBytes: 0, coveredPercent: 0 })
  t.notOk(await exists(file), 'off deletes the checksums')
  t.ok(Buffer.from((await getData(app, 'v')).rawPayload).equals(body), 'reads go on unverified')
  const on = await app.inject({ method: 'PUT', url: '/volumes/v', payload: spec })
  t.equal(on.statusCode, 200)
  t.equal(json(on).checksums.enabled, true, 'on again (the default)')
  await eventually(async () => (await checksums(app, 'v')).coveredPercent === 100, 'background coverage')
  t.equal((await checksums(app, 'v')).coveredBytes, body.length)
  const config = JSON.parse(await fs.readFile(join(dataDir, '.filemirror', 'volumes', 'v.json'), 'utf8'))
  t.equal(config.checksums, true, 'persisted')

  // An upgrade: a configuration without the field, no checksums file.
  await closeOnce(app)
  delete config.checksums
  await fs.writeFile(join(dataDir, '.filemirror', 'volumes', 'v.json'), JSON.stringify(config))
  await fs.rm(file)
  const again = await makeApp(t, { DATA_DIR: dataDir })
  await eventually(async () => (await checksums(again.app, 'v')).coveredPercent === 100, 'coverage after an upgrade')
  t.ok(Buffer.from((await getData(again.app, 'v')).rawPayload).equals(body))
})

t.test('a volume created with checksums: false keeps none and costs nothing', async (t) => {
  const { app, dataDir } = await makeApp(t)
  const created = await createVolume(t, app, 'plain', [{ id: 'a', path: 'a.img' }], { checksums: false })
  t.match(created.checksums, { enabled: false, coveredPercent: 0 })
  t.equal((await putData(app, 'plain', randomBytes(10_000))).statusCode, 200)
  t.notOk(await exists(join(dataDir, '.filemirror', 'journals', 'plain', 'checksums')))
  const bad = await app.inject({ method: 'PUT', url: '/volumes/other', payload: { replicas: [{ id: 'a', path: 'o.img' }], checksums: 'yes' } })
  t.equal(bad.statusCode, 400, 'not a boolean: refused')
})
