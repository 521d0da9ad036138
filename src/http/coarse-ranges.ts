/** Intervals for display: sorted, disjoint [start, end) pairs. */
export type Interval = [number, number]

export interface CoarseRanges {
  /** Exact bytes covered by the original intervals. */
  bytes: number
  /** How many intervals there were before merging. */
  count: number
  /** At most `max` intervals covering every original one; gaps were filled where they had to be. */
  intervals: Interval[]
  /** Some gaps were filled: the intervals over-cover. */
  merged: boolean
}

/**
 * Reduces sorted, disjoint intervals to at most `max` by filling the smallest gaps between them,
 * so a bar drawn from them keeps its shape and stays bounded however fragmented the set is.
 */
export function coarsen(source: Iterable<Interval>, max: number): CoarseRanges {
  if (!Number.isInteger(max) || max < 1) throw new RangeError('max must be a positive integer')
  const all: Interval[] = []
  let bytes = 0
  for (const [s, e] of source) {
    all.push([s, e])
    bytes += e - s
  }
  if (all.length <= max) return { bytes, count: all.length, intervals: all, merged: false }
  // Gap i lies between interval i and i+1; fill the (count - max) smallest, earliest first on ties.
  const gaps = all.slice(1).map((iv, i) => ({ i, size: iv[0] - all[i][1] }))
  gaps.sort((a, b) => a.size - b.size || a.i - b.i)
  const filled = new Uint8Array(all.length)
  for (let k = 0; k < all.length - max; k++) filled[gaps[k].i] = 1
  const intervals: Interval[] = []
  let start = all[0][0]
  for (let i = 0; i < all.length; i++) {
    if (filled[i]) continue
    intervals.push([start, all[i][1]])
    if (i + 1 < all.length) start = all[i + 1][0]
  }
  return { bytes, count: all.length, intervals, merged: true }
}
