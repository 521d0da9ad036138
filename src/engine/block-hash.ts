import { createRequire } from 'node:module'
import { crc32c } from '@node-rs/crc32'

/**
 * CRC-32C of fixed-size blocks: the block checksums kept at rest. The native addon (native/block-crc.c, built by
 * `npm install` with node-gyp) does every block of a buffer in one call: folded with AVX-512 carry-less
 * multiplication where the CPU has it, else with the SSE 4.2 crc32 instruction; without it (another CPU, no
 * compiler) @node-rs/crc32 gives the same values, one call per block. FILEMIRROR_NATIVE_CRC=sse4.2 keeps the addon
 * off the folded way, =off off the addon (both for comparing them).
 */
type NativeBlocks = (data: Buffer, blockBytes: number, out: Uint32Array, outIndex: number) => number
type NativeRead = (fd: number, buffer: Buffer, position: number, blockBytes: number, out: Uint32Array) => Promise<number>
interface Addon {
  blocks?: NativeBlocks
  readBlocks?: NativeRead
  blocksFolded?: NativeBlocks
  readBlocksFolded?: NativeRead
}

/** The ways block checksums can be computed, fastest first (the status schema's enum). */
export const BLOCK_HASH_IMPLEMENTATIONS = ['avx512-vpclmulqdq', 'sse4.2', 'software'] as const
export type BlockHashImplementation = (typeof BLOCK_HASH_IMPLEMENTATIONS)[number]

function loadNative(): { blocks: NativeBlocks; read: NativeRead; implementation: BlockHashImplementation } | undefined {
  const wanted = process.env.FILEMIRROR_NATIVE_CRC
  if (wanted === 'off') return undefined
  try {
    // From src/engine/ and from dist/src/engine/ alike: build/ sits at the package root.
    const require = createRequire(import.meta.url)
    for (const path of ['../../build/Release/block_crc.node', '../../../build/Release/block_crc.node']) {
      try {
        const addon = require(path) as Addon
        if (addon.blocksFolded && addon.readBlocksFolded && wanted !== 'sse4.2') return { blocks: addon.blocksFolded, read: addon.readBlocksFolded, implementation: 'avx512-vpclmulqdq' }
        if (addon.blocks && addon.readBlocks) return { blocks: addon.blocks, read: addon.readBlocks, implementation: 'sse4.2' }
      } catch {
        // not at this path
      }
    }
  } catch {
    // no addon: software
  }
  return undefined
}

const loaded = loadNative()
const native = loaded?.blocks

/** Which implementation computes block checksums: reported by GET /volumes/{name}, so a slow one is visible. */
export const blockHashImplementation: BlockHashImplementation = loaded?.implementation ?? 'software'

/**
 * With the addon: reads `buffer.length` bytes of descriptor `fd` from `position` (fewer only at end of file) and
 * checksums each `blockBytes` block of what it read into `out`, both on the libuv pool (the bytes are checksummed while
 * still in that core's cache). Resolves to the bytes read. Undefined without the addon.
 */
export const readBlocks: NativeRead | undefined = loaded?.read

/** Writes into `out` from `outIndex` the CRC-32C of each `blockBytes` block of `data` (the last may be short); returns how many. */
export function blockChecksums(data: Buffer, blockBytes: number, out: Uint32Array, outIndex = 0): number {
  if (native) return native(data, blockBytes, out, outIndex)
  const count = Math.ceil(data.length / blockBytes)
  if (outIndex + count > out.length) throw new RangeError('blockChecksums: out has no room for every block')
  for (let k = 0, at = 0; k < count; k++, at += blockBytes) out[outIndex + k] = crc32c(data.subarray(at, at + blockBytes))
  return count
}

/** CRC-32C of one buffer. */
export function checksum(data: Buffer): number {
  return crc32c(data)
}
