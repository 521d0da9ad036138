/**
 * Deterministic test bytes (no Math.random: failures must reproduce).
 *
 * One xorshift32 stream, shifted by `seed * 7` per byte. So:
 *  - it does not repeat (its period is 2^32 - 1 bytes), so a chunk copied to the wrong offset shows,
 *    even a whole 64 KiB or 1 MiB off;
 *  - two seeds that differ mod 256 differ at every position (7 is odd), so a byte left from the
 *    wrong write shows;
 *  - `pattern(n, seed)` is the first n bytes of `pattern(m, seed)` for any m > n.
 */
export function pattern(length: number, seed = 0): Buffer {
  const out = Buffer.allocUnsafe(length)
  const shift = (seed * 7) & 0xff
  let x = 0x9e3779b9
  for (let i = 0; i < length; i++) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    out[i] = (x + shift) & 0xff
  }
  return out
}
