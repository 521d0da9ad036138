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
import { flipByte } from '../helpers/flip.js'

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

/** A ranged PUT of `bytes` at `offset`. */
function putRange(app: App, name: string, offset: number, bytes: Buffer) {
  return app.inject({
    method: 'PUT',
    url: `/volumes/${name}/data`,
    headers: { 'content-range': `bytes ${offset}-${offset + bytes.length - 1}/*`, 'content-type': 'application/octet-stream' },
    payload: bytes,
  })
}

t.test('rot beside a partial write is never blessed: the edge block checksum is of a copy that verifies, and the rotten copy is repaired', async (t) => {
  // The flip sits in an edge block, outside the bytes the write changes: head and tail edge, on the reading replica
  // and on the other one. Before the fix the new checksum came from the first replica's block as it stood after the
  // write, rot included, and a read from the good replica then "healed" it with the rot.
  for (const [edge, flipAt, offset, length] of [
    ['head', 8192 + 100, 8192 + 2000, 1000],
    ['tail', 8192 + 3900, 8192 + 2000, 1000],
    ['both, a write across two blocks', 8192 + 100, 8192 + 3000, 3000],
  ] as const) {
    for (const rotten of ['a', 'b']) {
      const { app, dataDir } = await makeApp(t)
      await createVolume(t, app, 'v', [{ id: 'a', path: 'a.img' }, { id: 'b', path: 'b.img' }])
      const body = randomBytes(64 * 1024)
      t.equal((await putData(app, 'v', body)).statusCode, 200)
      const events: any[] = []
      app.volumes.get('v')!.on('checksumMismatch', (e) => events.push(e))
      flipByte(join(dataDir, `${rotten}.img`), flipAt)
      const bytes = randomBytes(length)
      t.equal((await putRange(app, 'v', offset, bytes)).statusCode, 200, `${edge}, ${rotten} rotten: the write is taken`)
      const expected = Buffer.from(body)
      bytes.copy(expected, offset)
      for (const replica of ['a', 'b']) {
        const read = await getData(app, 'v', { range: 'bytes=8192-16383' }, `?replica=${replica}`)
        t.ok(read.statusCode === 206 && read.rawPayload.equals(expected.subarray(8192, 16384)), `${edge}, ${rotten} rotten: read from ${replica}, the right bytes`)
      }
      for (const replica of ['a', 'b']) t.ok((await fs.readFile(join(dataDir, `${replica}.img`))).equals(expected), `${edge}, ${rotten} rotten: ${replica}.img holds the right bytes`)
      t.match(events, [{ replica: rotten, offset: 8192, repaired: true, from: rotten === 'a' ? 'b' : 'a' }], `${edge}, ${rotten} rotten: one mismatch, repaired from the other replica`)
      await closeOnce(app)
    }
  }
})

t.test('a partial write into a block no replica has a good copy of is refused with a problem, and changes nothing', async (t) => {
  const { app, dataDir } = await makeApp(t)
  await createVolume(t, app, 'v', [{ id: 'a', path: 'a.img' }, { id: 'b', path: 'b.img' }])
  const body = randomBytes(64 * 1024)
  await putData(app, 'v', body)
  flipByte(join(dataDir, 'a.img'), 8192 + 100)
  flipByte(join(dataDir, 'b.img'), 8192 + 200)
  const before = { a: await fs.readFile(join(dataDir, 'a.img')), b: await fs.readFile(join(dataDir, 'b.img')) }
  const res = await putRange(app, 'v', 8192 + 2000, randomBytes(1000))
  t.equal(res.statusCode, 500)
  t.match(json(res), { type: 'https://filemirror.dev/problems/checksum-mismatch', offset: 8192, length: 4096, replicas: ['a', 'b'] }, 'the problem names the block and the replicas')
  t.match(json(res).detail, /backup/, 'and says what to do')
  t.ok((await fs.readFile(join(dataDir, 'a.img'))).equals(before.a), 'a unchanged')
  t.ok((await fs.readFile(join(dataDir, 'b.img'))).equals(before.b), 'b unchanged')
  const whole = randomBytes(4096)
  t.equal((await putRange(app, 'v', 8192, whole)).statusCode, 200, 'writing the whole block is taken')
  const read = await getData(app, 'v', { range: 'bytes=8192-12287' })
  t.ok(read.statusCode === 206 && read.rawPayload.equals(whole), 'and reads back')
})

t.test('rot in the last block a shrink keeps is not blessed either', async (t) => {
  for (const rotten of ['a', 'b']) {
    const { app, dataDir } = await makeApp(t)
    await createVolume(t, app, 'v', [{ id: 'a', path: 'a.img' }, { id: 'b', path: 'b.img' }])
    const body = randomBytes(64 * 1024)
    await putData(app, 'v', body)
    const newSize = 40_000
    flipByte(join(dataDir, `${rotten}.img`), newSize - 10)
    // A write at the start with a smaller complete length: the volume shrinks to it.
    const head = randomBytes(100)
    const res = await app.inject({ method: 'PUT', url: '/volumes/v/data', headers: { 'content-range': `bytes 0-99/${newSize}`, 'content-type': 'application/octet-stream' }, payload: head })
    t.ok(res.statusCode < 300, `${rotten} rotten: the shrinking write is taken (${res.statusCode})`)
    const expected = Buffer.from(body.subarray(0, newSize))
    head.copy(expected, 0)
    for (const replica of ['a', 'b']) {
      const read = await getData(app, 'v', { range: `bytes=36864-${newSize - 1}` }, `?replica=${replica}`)
      t.ok(read.statusCode === 206 && read.rawPayload.equals(expected.subarray(36864)), `${rotten} rotten: the kept last block read from ${replica} is right`)
    }
    for (const replica of ['a', 'b']) t.ok((await fs.readFile(join(dataDir, `${replica}.img`))).equals(expected), `${rotten} rotten: ${replica}.img holds the right bytes`)
    await closeOnce(app)
  }
})
