import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { FaultInjector } from '../src/fault-injecting-file.js'
import { openLocalFile, type ReplicaFileOpener } from '../src/replica-file.js'
import { tempDir } from './helpers/app.js'

/** Every backend a replica can live on; each must pass the same contract. */
const backends: Array<[string, () => ReplicaFileOpener]> = [
  ['LocalFile', () => openLocalFile],
  ['FaultInjectingFile (no faults)', () => new FaultInjector(openLocalFile).opener],
]

for (const [name, makeOpener] of backends) {
  t.test(`${name} honours the ReplicaFile contract`, async (t) => {
    const dir = await tempDir(t)
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

t.test('FaultInjectingFile fails reads, writes and syncs on demand, and slows them on demand', async (t) => {
  const dir = await tempDir(t)
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
  faults.failOpening(join(dir, 'g.img'), 'EACCES')
  await t.rejects(faults.opener(join(dir, 'g.img')), { code: 'EACCES' }, 'opening can fail too')
  await file.close()
})
