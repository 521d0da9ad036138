import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { crc32c } from '@node-rs/crc32'
import fc from 'fast-check'
import t from 'tap'
import { blockChecksums, blockHashImplementation, checksum } from '../../src/engine/block-hash.js'

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

t.test('the software fallback (FILEMIRROR_NATIVE_CRC=off) gives the same values', async (t) => {
  const script = `import { blockChecksums, blockHashImplementation } from './src/engine/block-hash.ts'
const data = Buffer.alloc(3 * 4096 + 100); for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 255
const out = new Uint32Array(4); blockChecksums(data, 4096, out)
console.log(JSON.stringify({ impl: blockHashImplementation, sums: [...out] }))`
  const run = (env: Record<string, string>) => JSON.parse(execFileSync(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { env: { ...process.env, ...env } }).toString())
  const software = run({ FILEMIRROR_NATIVE_CRC: 'off' })
  t.equal(software.impl, 'software')
  const data = Buffer.alloc(3 * 4096 + 100)
  for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 255
  t.same(software.sums, [0, 1, 2, 3].map((k) => crc32c(data.subarray(k * 4096, (k + 1) * 4096))))
  t.same(run({}).sums, software.sums, `the default (${run({}).impl}) agrees`)
})
