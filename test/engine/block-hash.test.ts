import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, openSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { crc32c } from '@node-rs/crc32'
import fc from 'fast-check'
import t from 'tap'
import { blockChecksums, blockHashImplementation, checksum, readBlocks } from '../../src/engine/block-hash.js'

t.test('CRC-32C check value: "123456789" is 0xE3069283', async (t) => {
  t.equal(checksum(Buffer.from('123456789')), 0xe3069283)
  const out = new Uint32Array(1)
  t.equal(blockChecksums(Buffer.from('123456789'), 4096, out), 1, 'one short block')
  t.equal(out[0], 0xe3069283, 'the same value per block')
})

t.test(`every block of any buffer, at any index, equals CRC-32C of its bytes (${blockHashImplementation})`, async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 70_000 }), fc.constantFrom(1, 7, 512, 4096, 65536), fc.integer({ min: 0, max: 3 }), (length, block, index) => {
      const data = randomBytes(length)
      const count = Math.ceil(length / block)
      const out = new Uint32Array(index + count + 1).fill(0xdeadbeef)
      if (blockChecksums(data, block, out, index) !== count) return false
      for (let k = 0; k < count; k++) if (out[index + k] !== crc32c(data.subarray(k * block, (k + 1) * block))) return false
      // Nothing written outside [index, index + count).
      return out.subarray(0, index).every((v) => v === 0xdeadbeef) && out[index + count] === 0xdeadbeef
    }),
    { numRuns: 300 },
  )
  t.pass('300 random buffers')
})

t.test('an output array without room is refused, not overrun', async (t) => {
  t.throws(() => blockChecksums(Buffer.alloc(8192), 4096, new Uint32Array(1)))
  t.throws(() => blockChecksums(Buffer.alloc(4096), 4096, new Uint32Array(2), 2))
})

/** Runs `script` in a child process with `env` (the implementation is chosen when block-hash.ts loads). */
function runWith(script: string, env: Record<string, string>): any {
  return JSON.parse(execFileSync(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { env: { ...process.env, ...env }, maxBuffer: 64 << 20 }).toString())
}

t.test('the software fallback (FILEMIRROR_NATIVE_CRC=off) gives the same values', async (t) => {
  const script = `import { blockChecksums, blockHashImplementation } from './src/engine/block-hash.ts'
const data = Buffer.alloc(3 * 4096 + 100); for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 255
const out = new Uint32Array(4); blockChecksums(data, 4096, out)
console.log(JSON.stringify({ impl: blockHashImplementation, sums: [...out] }))`
  const software = runWith(script, { FILEMIRROR_NATIVE_CRC: 'off' })
  t.equal(software.impl, 'software')
  const data = Buffer.alloc(3 * 4096 + 100)
  for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 255
  t.same(software.sums, [0, 1, 2, 3].map((k) => crc32c(data.subarray(k * 4096, (k + 1) * 4096))))
  const byDefault = runWith(script, {})
  t.same(byDefault.sums, software.sums, `the default (${byDefault.impl}) agrees`)
})

t.test('every implementation on this machine gives the same values, block by block, for every length up to 8 KiB and random buffers', async (t) => {
  // One buffer, every block size from 1 to 8,448 bytes over it (the folded way takes blocks of 256 bytes and more;
  // its edges are at multiples of 256), then large random ones: each implementation prints its sums.
  const script = `import { createHash } from 'node:crypto'
import { blockChecksums, blockHashImplementation } from './src/engine/block-hash.ts'
const data = Buffer.alloc(8448 * 3); let x = 12345
for (let i = 0; i < data.length; i++) { x = (x * 1103515245 + 12345) >>> 0; data[i] = x >>> 24 }
const hash = createHash('sha256'); const out = new Uint32Array(8448 * 3)
for (let block = 1; block <= 8448; block++) { const n = blockChecksums(data, block, out); hash.update(Buffer.from(out.buffer, 0, n * 4)) }
const big = Buffer.alloc(4 << 20); for (let i = 0; i < big.length; i++) { x = (x * 1103515245 + 12345) >>> 0; big[i] = x >>> 24 }
const sums = new Uint32Array(1024); blockChecksums(big, 4096, sums)
console.log(JSON.stringify({ impl: blockHashImplementation, digest: hash.digest('hex'), big: [...sums] }))`
  const software = runWith(script, { FILEMIRROR_NATIVE_CRC: 'off' })
  const sse = runWith(script, { FILEMIRROR_NATIVE_CRC: 'sse4.2' })
  const best = runWith(script, {})
  t.equal(software.impl, 'software')
  t.ok(['sse4.2', 'software'].includes(sse.impl), `FILEMIRROR_NATIVE_CRC=sse4.2 keeps off the folded way (${sse.impl})`)
  t.equal(sse.digest, software.digest, `${sse.impl}: every block size from 1 to 8,448 bytes`)
  t.equal(best.digest, software.digest, `${best.impl}: every block size from 1 to 8,448 bytes`)
  t.same(sse.big, software.big, `${sse.impl}: 4 MiB in 4 KiB blocks`)
  t.same(best.big, software.big, `${best.impl}: 4 MiB in 4 KiB blocks`)
})

t.test('readBlocks reads a file and checksums what it read, block by block, at any offset and length', { skip: readBlocks ? false : 'no native addon' }, async (t) => {
  const dir = t.testdir()
  const path = join(dir, 'file')
  const content = randomBytes(300_000)
  writeFileSync(path, content)
  const fd = openSync(path, 'r')
  t.teardown(() => closeSync(fd))
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: 310_000 }), fc.integer({ min: 0, max: 140_000 }), fc.constantFrom(512, 4096, 65536), async (position, length, block) => {
      const buffer = Buffer.alloc(length, 0xaa)
      const out = new Uint32Array(Math.ceil(length / block) + 1).fill(0xdeadbeef)
      const n = await readBlocks!(fd, buffer, position, block, out)
      const expected = content.subarray(Math.min(position, content.length), Math.min(position + length, content.length))
      if (n !== expected.length || !buffer.subarray(0, n).equals(expected)) return false
      // Blocks of what was read (fewer bytes only at end of file); nothing past them written.
      const blocks = Math.ceil(n / block)
      for (let k = 0; k < blocks; k++) if (out[k] !== crc32c(expected.subarray(k * block, (k + 1) * block))) return false
      return out.subarray(blocks).every((v) => v === 0xdeadbeef)
    }),
    { numRuns: 200 },
  )
  t.pass('200 random reads')
})

t.test('readBlocks fails as node:fs does on a bad descriptor, and refuses arguments it cannot honour', { skip: readBlocks ? false : 'no native addon' }, async (t) => {
  const dir = t.testdir()
  const fd = openSync(join(dir, 'f'), 'w')
  closeSync(fd)
  await t.rejects(readBlocks!(fd, Buffer.alloc(4096), 0, 4096, new Uint32Array(1)), { code: 'EBADF', syscall: 'read' }, 'a closed descriptor: EBADF')
  const writeOnly = openSync(join(dir, 'f'), 'w')
  t.teardown(() => closeSync(writeOnly))
  await t.rejects(readBlocks!(writeOnly, Buffer.alloc(4096), 0, 4096, new Uint32Array(1)), { code: 'EBADF' }, 'a write-only descriptor: EBADF')
  t.throws(() => readBlocks!(writeOnly, Buffer.alloc(8192), 0, 4096, new Uint32Array(1)), TypeError, 'no room for every block')
  t.throws(() => readBlocks!(writeOnly, Buffer.alloc(4096), -1, 4096, new Uint32Array(1)), TypeError, 'a negative position')
})
