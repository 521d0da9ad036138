import t from 'tap'
import { GroupRegistry } from '../../src/engine/group-registry.js'
import type { GroupKind } from '../../src/engine/status.js'
import { OperationGroup } from '../../src/engine/operation-group.js'

const registry = (over: Partial<{ retentionMs: number; maxGroups: number; maxReadGroups: number }> = {}) =>
  new GroupRegistry({ retentionMs: 1000, maxGroups: 3, maxReadGroups: 2, ...over })

/** A group with a chosen creation time (the clock is not ours to wait on). */
function group(volume: string, kind: GroupKind, createdAt?: number): OperationGroup {
  const g = new OperationGroup(volume, kind, 0)
  if (createdAt !== undefined) (g as { createdAt: number }).createdAt = createdAt
  return g
}

/** Settles a group and pins when it finished. */
function finish(g: OperationGroup, finishedAt: number): OperationGroup {
  const op = g.add('r', 'sync')
  g.finish(op, 0, null)
  g.finishedAt = finishedAt
  return g
}

const ids = (groups: OperationGroup[]) => groups.map((g) => g.id)
const present = (r: GroupRegistry, groups: OperationGroup[]) => groups.map((g) => r.get(g.id) !== undefined)

t.test('reads and writes live in separate bounded windows', async (t) => {
  const r = registry()
  const writes = [group('v', 'write'), group('v', 'scrub'), group('v', 'write')]
  for (const g of writes) r.add(g)
  t.equal(r.size, 3)

  const reads = Array.from({ length: 10 }, () => group('v', 'read'))
  for (const g of reads) r.add(g)
  t.equal(r.size, 5, 'three writes plus two reads')
  t.same(present(r, writes), [true, true, true], 'a flood of reads evicts no write')
  t.same(present(r, reads), [...Array(8).fill(false), true, true], 'only the two newest reads are kept')

  const more = [group('v', 'write'), group('v', 'write')]
  for (const g of more) r.add(g)
  t.same(present(r, reads.slice(8)), [true, true], 'writes evict no read')
  t.equal(r.size, 5)
  t.equal(r.get('no-such-id'), undefined)
})

t.test('eviction is FIFO and the count bound wins over retention', async (t) => {
  const r = registry({ maxGroups: 3, retentionMs: 3_600_000 })
  const now = Date.now()
  const gs = Array.from({ length: 6 }, (_, i) => group('v', 'write'))
  // Unfinished and freshly finished groups alike: the oldest still goes first.
  finish(gs[1], now)
  r.add(gs[0])
  r.add(gs[1])
  r.add(gs[2])
  t.same(present(r, gs), [true, true, true, false, false, false])
  r.add(gs[3])
  t.same(present(r, gs), [false, true, true, true, false, false], 'the oldest (unfinished) one is evicted first')
  r.add(gs[4])
  t.same(present(r, gs), [false, false, true, true, true, false], 'then the next oldest, though within retention')
  r.add(gs[5])
  t.same(present(r, gs), [false, false, false, true, true, true])
  t.equal(r.size, 3)
})

t.test('sweep drops finished groups past retention only', async (t) => {
  const r = registry({ retentionMs: 1000, maxGroups: 100, maxReadGroups: 100 })
  const now = 1_000_000
  const old = finish(group('v', 'write'), now - 5000)
  const oldRead = finish(group('v', 'read'), now - 1001)
  const edge = finish(group('v', 'write'), now - 1000)
  const recent = finish(group('v', 'read'), now - 10)
  const open = group('v', 'write')
  open.add('r', 'async')
  for (const g of [old, oldRead, edge, recent, open]) r.add(g)
  r.sweep(now)
  t.same(present(r, [old, oldRead, edge, recent, open]), [false, false, true, true, true], 'past retention goes; at the edge, recent and open stay')
  r.sweep(now + 1_000_000)
  t.same(present(r, [edge, recent, open]), [false, false, true], 'an unfinished group is never swept')
  t.equal(r.size, 1)
})

t.test('forgetVolume drops one volume’s groups of every kind', async (t) => {
  const r = registry({ maxGroups: 10, maxReadGroups: 10 })
  const a = [group('a', 'write'), group('a', 'read'), group('a', 'scrub')]
  const b = [group('b', 'write'), group('b', 'read')]
  for (const g of [...a, ...b]) r.add(g)
  r.forgetVolume('a')
  t.same(present(r, a), [false, false, false])
  t.same(present(r, b), [true, true])
  t.same(r.list('a', () => true, 10), [])
  r.forgetVolume('nope')
  t.equal(r.size, 2)
})

t.test('list: one volume, newest first, filtered and limited', async (t) => {
  const r = registry({ maxGroups: 10, maxReadGroups: 10 })
  const g1 = group('v', 'write', 1000)
  const g2 = group('v', 'read', 2000)
  const g3 = finish(group('v', 'write', 3000), 3500)
  const other = group('w', 'write', 3500)
  const g4 = group('v', 'read', 4000)
  const g5 = group('v', 'scrub', 5000)
  for (const g of [g1, g2, g4, g5]) g.add('r', 'async') // still open: status pending
  for (const g of [g1, g2, g3, other, g4, g5]) r.add(g)
  t.same(ids(r.list('v', () => true, 100)), ids([g5, g4, g3, g2, g1]), 'reads and writes interleaved by creation, newest first')
  t.same(ids(r.list('v', () => true, 2)), ids([g5, g4]), 'the limit keeps the newest')
  t.same(ids(r.list('v', (g) => g.kind === 'read', 100)), ids([g4, g2]), 'filter by kind')
  t.same(ids(r.list('v', (g) => g.status === 'done', 100)), ids([g3]), 'filter by status')
  t.same(ids(r.list('v', (g) => g.status === 'pending', 100)), ids([g5, g4, g2, g1]), 'the open ones')
  t.same(ids(r.list('w', () => true, 100)), ids([other]), 'another volume')
  t.same(r.list('v', () => true, 0), [], 'limit 0')
  t.same(r.list('nope', () => true, 10), [])
})

t.test(
  'list: groups created in the same millisecond still come newest first',
  async (t) => {
    const r = registry({ maxGroups: 10, maxReadGroups: 10 })
    const gs = [group('v', 'write', 7), group('v', 'read', 7), group('v', 'write', 7), group('v', 'read', 7)]
    for (const g of gs) r.add(g)
    t.same(ids(r.list('v', () => true, 10)), ids([...gs].reverse()), 'newest (last added) first')
  },
)

t.test('eviction stays FIFO and its bookkeeping bounded through sweeps and forgotten volumes', async (t) => {
  const r = registry({ maxGroups: 1000, retentionMs: 1000 })
  const all: OperationGroup[] = []
  for (let i = 0; i < 100_000; i++) {
    const g = group(i % 7 === 0 ? 'gone' : 'v', 'write')
    all.push(g)
    r.add(g)
    // Every so often a sweep drops finished groups past retention, and a volume is forgotten.
    if (i % 10_000 === 5_000) {
      for (const old of all.slice(-500, -400)) finish(old, 0)
      r.sweep(10_000)
    }
    if (i === 60_000) r.forgetVolume('gone')
  }
  t.same(present(r, all.slice(-1000)), Array(1000).fill(true), 'the newest 1,000 are held')
  t.equal(r.size, 1000, 'and nothing else')
  t.ok((r as unknown as { writeOrder: string[] }).writeOrder.length <= 3 * 1000, 'the order of ids stays bounded')
})

t.test('a group swept before the window fills is not counted when the window later evicts', async (t) => {
  const r = registry({ maxGroups: 3, retentionMs: 1000 })
  const gs = Array.from({ length: 5 }, () => group('v', 'write'))
  r.add(gs[0])
  r.add(gs[1])
  finish(gs[0], 0)
  r.sweep(10_000)
  r.add(gs[2])
  r.add(gs[3])
  t.same(present(r, gs), [false, true, true, true, false], 'three held: the swept one does not take a place')
  r.add(gs[4])
  t.same(present(r, gs), [false, false, true, true, true], 'the oldest held one goes next')
})
