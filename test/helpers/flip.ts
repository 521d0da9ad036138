import { closeSync, openSync, readSync, writeSync } from 'node:fs'

/** Flips one byte of a replica's file behind the volume (bit rot, as the checksum tests make it). */
export function flipByte(path: string, at: number): void {
  const fd = openSync(path, 'r+')
  try {
    const one = Buffer.alloc(1)
    readSync(fd, one, 0, 1, at)
    one[0] ^= 0xff
    writeSync(fd, one, 0, 1, at)
  } finally {
    closeSync(fd)
  }
}
