import { randomBytes } from 'node:crypto'
import { crc32c } from '@node-rs/crc32'
import { existsSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { FaultInjector } from '../helpers/fault-injecting-file.js'
import { openLocalFile, type ReplicaFileOpener } from '../../src/engine/replica-file.js'
import { scratch } from '../helpers/scratch.js'

/** Every backend a replica can live on; each must pass the same contract. */
const backends: Array<[string, () => ReplicaFileOpener]> = [
  ['LocalFile', () => openLocalFile],
  ['FaultInjectingFile (no faults)', () => new FaultInjector(openLocalFile).opener],
  [
    'HttpFile (a volume of a second filemirror, over HTTP)',
    () => {
      // Each path names a volume of one remote filemirror, started at the first open; it stops when this file's tests end.
      // (Apache mod_dav cannot shrink by a ranged PUT: its contract, minus that, is in http-file.test.ts.)
      const volumes = new Map<string, string>()
      let remote: Promise<{ app: import('fastify').FastifyInstance; base: string }> | undefined
      return async (path) => {
        const { makeApp, listen } = await import('../helpers/app.js')
        const { HttpFile } = await import('../../src/engine/backends/http-file.js')
        remote ??= makeApp(t).then(async ({ app }) => ({ app, base: await listen(t, app) }))
        const { app, base } = await remote
        let name = volumes.get(path)
        if (name === undefined) {
          name = `v${volumes.size}`
          volumes.set(path, name)
          const res = await app.inject({ method: 'PUT', url: `/volumes/${name}`, payload: { replicas: [{ id: 'disk', path: `${name}.img` }] } })
          if (res.statusCode !== 201) throw new Error(`remote volume ${name}: ${res.statusCode} ${res.body}`)
        }
        return HttpFile.open(`${base}/volumes/${name}/data`)
      }
    },
  ],
]

for (const [name, makeOpener] of backends) {
  t.test(`${name} honours the ReplicaFile contract`, async (t) => {
    const dir = await scratch(t)
    const open = makeOpener()
    const file = await open(join(dir, 'sub/dir/replica.img'))
    t.equal(await file.size(), 0, 'created empty, with its directories')

    const empty = Buffer.alloc(10)
    t.equal(await file.read(empty, 0), 0, 'reading an empty file gives 0 bytes')

    const data = randomBytes(100_000)
    t.equal(await file.write(data, 5_000), data.length, 'writes all of the buffer')
    t.equal(await file.size(), 105_000, 'a write past the end grows the file')
    const back = Buffer.alloc(data.length)
    t.equal(await file.read(back, 5_000), data.length)
    t.ok(back.equals(data), 'reads back what was written, positionally')
    const hole = Buffer.alloc(5_000, 1)
    await file.read(hole, 0)
    t.ok(hole.equals(Buffer.alloc(5_000)), 'the gap before reads as zeros')

    const tail = Buffer.alloc(50)
    t.equal(await file.read(tail, 104_980), 20, 'a read across the end returns the bytes that exist')

    // Optional: a read that checksums its blocks where it reads (LocalFile with the native addon).
    if (file.readSummed) {
      const summed = Buffer.alloc(20_000)
      const out = new Uint32Array(5)
      t.equal(await file.readSummed(summed, 5_000, { blockBytes: 4096, out }), 20_000, 'readSummed reads as read() does')
      t.ok(summed.equals(data.subarray(0, 20_000)), 'readSummed: the bytes')
      t.same([...out], [0, 1, 2, 3, 4].map((k) => crc32c(data.subarray(k * 4096, Math.min((k + 1) * 4096, 20_000)))), 'readSummed: the CRC-32C of each block read')
      const across = Buffer.alloc(4096)
      t.equal(await file.readSummed(across, 104_000, { blockBytes: 4096, out }), 1_000, 'readSummed across the end: the bytes that exist')
      t.equal(out[0], crc32c(data.subarray(99_000)), 'and the checksum of those')
    }
    t.equal(await file.read(Buffer.alloc(8), 200_000), 0, 'a read past the end returns 0')

    await file.write(Buffer.from('abc'), 1)
    const mixed = Buffer.alloc(5)
    await file.read(mixed, 0)
    t.same([...mixed], [0, 97, 98, 99, 0], 'overwrites only the bytes named')

    await file.truncate(10)
    t.equal(await file.size(), 10, 'truncate shrinks')
    await file.truncate(1 << 20)
    t.equal(await file.size(), 1 << 20, 'truncate grows with zeros')
    await file.sync()
    t.pass('sync resolves')
    await file.close()
    await t.rejects(file.read(Buffer.alloc(1), 0), 'a closed file refuses reads')

    const reopened = await open(join(dir, 'sub/dir/replica.img'))
    t.equal(await reopened.size(), 1 << 20, 'bytes persist across opens')
    await reopened.close()
  })
}

t.test('LocalFile with its storage root creates the directories below the root, one level at a time, never the root', async (t) => {
  const dir = await scratch(t)
  const root = join(dir, 'root')
  await mkdir(root)
  const file = await openLocalFile(join(root, 'a/b/c/replica.img'), { root })
  t.equal(await file.size(), 0, 'created empty, with the three directories below the root')
  await file.close()
  t.ok(existsSync(join(root, 'a/b/c')), 'they are there')
  const again = await openLocalFile(join(root, 'a/b/c/replica.img'), { root })
  t.equal(await again.size(), 0, 'reopened where the directories exist')
  await again.close()
  const flat = await openLocalFile(join(root, 'flat.img'), { root })
  t.equal(await flat.size(), 0, 'a file directly in the root')
  await flat.close()

  const gone = join(dir, 'gone')
  await t.rejects(openLocalFile(join(gone, 'v/replica.img'), { root: gone }), { code: 'ENOROOT', message: `storage root ${gone} missing: it does not exist (removed, or its disk unmounted)` }, 'a missing root is refused')
  t.notOk(existsSync(gone), 'and not created')
  await writeFile(join(dir, 'file-root'), '')
  await t.rejects(openLocalFile(join(dir, 'file-root/replica.img'), { root: join(dir, 'file-root') }), { code: 'ENOROOT', message: /it is not a directory/ }, 'a root that is a file is refused')
  await t.rejects(openLocalFile(join(dir, 'elsewhere/replica.img'), { root }), { code: 'EINVAL' }, 'a path outside its root is refused')
  t.notOk(existsSync(join(dir, 'elsewhere')), 'and nothing is created for it')
})

t.test('FaultInjectingFile fails reads, writes and syncs on demand, and slows them on demand', async (t) => {
  const dir = await scratch(t)
  const faults = new FaultInjector(openLocalFile)
  const path = join(dir, 'f.img')
  const file = await faults.opener(path)
  await file.write(Buffer.from('hello'), 0)
  faults.set(path, { failReads: 'EIO' })
  await t.rejects(file.read(Buffer.alloc(5), 0), { code: 'EIO' })
  faults.set(path, { failWrites: 'ENOSPC' })
  await t.rejects(file.write(Buffer.from('x'), 0), { code: 'ENOSPC' })
  await t.rejects(file.truncate(0), { code: 'ENOSPC' }, 'truncate counts as a write')
  faults.set(path, { failSync: 'EIO' })
  await t.rejects(file.sync(), { code: 'EIO' })
  faults.set(path, { delayMs: 30 })
  let settled = false
  const slow = file.read(Buffer.alloc(5), 0).then(() => (settled = true))
  await new Promise((r) => setTimeout(r, 5))
  t.notOk(settled, 'a slowed read is still running')
  await slow
  faults.clear()
  const back = Buffer.alloc(5)
  await file.read(back, 0)
  t.equal(back.toString(), 'hello', 'nothing injected reached the file')
  faults.set(join(dir, 'g.img'), { failOpen: 'EACCES' })
  await t.rejects(faults.opener(join(dir, 'g.img')), { code: 'EACCES' }, 'opening can fail too')
  await file.close()
})

t.test('FaultInjectingFile fails size(), holds opens, writes and size() at gates, and its errors look like node:fs ones', async (t) => {
  const dir = await scratch(t)
  const faults = new FaultInjector()
  const path = join(dir, 'h.img')

  let releaseOpen!: () => void
  const openGate = new Promise<void>((resolve) => (releaseOpen = resolve))
  faults.set(path, { openGate: () => openGate })
  let opened = false
  const opening = faults.opener(path).finally(() => (opened = true))
  await new Promise((r) => setTimeout(r, 5))
  t.notOk(opened, 'an open waits at its gate')
  releaseOpen()
  const file = await opening

  faults.set(path, { failSize: 'EIO' })
  await t.rejects(file.size(), { code: 'EIO', syscall: 'fstat', path, message: `EIO: i/o error, fstat '${path}'` }, 'size() fails as an fstat does')
  faults.set(path, { failWrites: 'ENOSPC' })
  await t.rejects(file.write(Buffer.from('x'), 0), { code: 'ENOSPC', errno: -28, syscall: 'write', message: `ENOSPC: no space left on device, write '${path}'` })

  let releaseWrite!: () => void
  const writeGate = new Promise<void>((resolve) => (releaseWrite = resolve))
  faults.set(path, { writeGate: () => writeGate })
  let written = false
  const writing = file.write(Buffer.from('held'), 0).finally(() => (written = true))
  t.equal(await file.read(Buffer.alloc(4), 0), 0, 'reads pass a held write')
  t.notOk(written, 'a write waits at its gate')
  faults.set(path, { failWrites: 'EIO' })
  releaseWrite()
  await t.rejects(writing, { code: 'EIO' }, 'a held write sees the faults set while it waited')

  let releaseSize!: () => void
  const sizeGate = new Promise<void>((resolve) => (releaseSize = resolve))
  faults.set(path, { sizeGate: () => sizeGate })
  let sized = false
  const sizing = file.size().finally(() => (sized = true))
  await new Promise((r) => setTimeout(r, 5))
  t.notOk(sized, 'size() waits at its gate')
  releaseSize()
  t.equal(await sizing, 0, 'and then answers')

  faults.set(join(dir, 'other.img'), { failReads: 'EIO' })
  faults.clear(path)
  t.same(faults.get(path), {}, 'clear(path) lifts that path’s faults')
  t.same(faults.get(join(dir, 'other.img')), { failReads: 'EIO' }, 'and only those')
  await file.close()
})
