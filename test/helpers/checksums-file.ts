import { readFileSync } from 'node:fs'
import { BLOCK_BYTES, paddedChecksum } from '../../src/engine/block-checksums.js'

/**
 * Reads a volume's checksums file (<DATA_DIR>/.filemirror/journals/<volume>/checksums: a 4 KiB header with the
 * capacity in regions at byte 24, the region bitmap, then a CRC-32C per 4 KiB block) and lists the blocks of
 * `content` whose stored checksum is not the CRC of the content's bytes (zero-padded), and the regions in flux.
 */
export function checksumsFileCheck(path: string, content: Buffer): { wrong: number[]; inFlux: number[] } {
  const file = readFileSync(path)
  const capacityRegions = file.readUInt32LE(24)
  const arrayAt = 4096 + Math.ceil(capacityRegions / 8)
  const wrong: number[] = []
  const inFlux: number[] = []
  for (let r = 0; r < capacityRegions; r++) if ((file[4096 + (r >> 3)] >> (r & 7)) & 1) inFlux.push(r)
  for (let k = 0; k < Math.ceil(content.length / BLOCK_BYTES); k++) {
    const stored = arrayAt + 4 * k + 4 <= file.length ? file.readUInt32LE(arrayAt + 4 * k) : -1
    if (stored !== paddedChecksum(content.subarray(k * BLOCK_BYTES, (k + 1) * BLOCK_BYTES))) wrong.push(k)
  }
  return { wrong, inFlux }
}
