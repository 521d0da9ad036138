import { createRequire } from 'node:module'
import { crc32c } from '@node-rs/crc32'

/**
 * CRC-32C of fixed-size blocks: the block checksums kept at rest. The native addon (native/block-crc.c, built by
 * `npm install` with node-gyp) does every block of a buffer in one call with SSE 4.2; without it (another CPU, no
 * compiler) @node-rs/crc32 gives the same values, one call per block.
 */
type NativeBlocks = (data: Buffer, blockBytes: number, out: Uint32Array, outIndex: number) => number

function loadNative(): NativeBlocks | undefined {
  if (process.env.FILEMIRROR_NATIVE_CRC === 'off') return undefined
  try {
    // From src/engine/ and from dist/src/engine/ alike: build/ sits at the package root.
    const require = createRequire(import.meta.url)
    for (const path of ['../../build/Release/block_crc.node', '../../../build/Release/block_crc.node']) {
      try {
        const addon = require(path) as { blocks?: NativeBlocks }
        if (typeof addon.blocks === 'function') return addon.blocks
      } catch {
        // not at this path
      }
    }
  } catch {
    // no addon: software
  }
  return undefined
}

const native = loadNative()

/** Which implementation computes block checksums: reported by GET /volumes/{name}, so a slow one is visible. */
export const blockHashImplementation: 'sse4.2' | 'software' = native ? 'sse4.2' : 'software'

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
