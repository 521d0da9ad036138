// Human units for the terminal: those of the status page (public/eta.js, through eta.ts), and byte counts
// as options take them.
export { formatBytes, formatDuration, formatEta, formatRate } from './eta.js'

/** Parses a byte count: 1048576, 64K, 8M, 1.5G (binary units; a trailing B or iB is accepted). */
export function parseByteCount(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim())
  if (!m) return null
  const scale = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't']
  const value = Math.round(Number(m[1]) * scale)
  return Number.isSafeInteger(value) ? value : null
}
