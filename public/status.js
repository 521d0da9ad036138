// The status page: volumes and replicas with their dirty and cached ranges drawn over the volume's
// size, and operations arriving live from GET /events. Plain browser JavaScript, no build step.
'use strict'

const MAX_OPERATION_ROWS = 200
const MAX_ACTIVITY_ITEMS = 100
/** Intervals asked for per bar; the server merges beyond this. */
const MAX_INTERVALS = 512
/** Volumes whose ranges changed are refetched at most this often. */
const REFRESH_MS = 250

const volumesEl = document.getElementById('volumes')
const operationsBody = document.querySelector('#operations tbody')
const activityEl = document.getElementById('activity')
const connectionEl = document.getElementById('connection')
const lastEventEl = document.getElementById('last-event')

/** name -> its card element */
const cards = new Map()
/** `${group}/${replica}` -> its row in the operations table */
const rows = new Map()
const dirtyVolumes = new Set()
let refreshTimer = null

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value
    else node.setAttribute(key, value)
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)))
  return node
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let value = n
  let unit = -1
  do {
    value /= 1024
    unit++
  } while (value >= 1024 && unit < units.length - 1)
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`
}

async function getJSON(url) {
  const res = await fetch(url, { headers: { accept: 'application/json' } })
  if (!res.ok) throw new Error(`${url}: ${res.status}`)
  return res.json()
}

/** A bar of `intervals` over [0, size): one absolutely placed segment per interval. */
function drawBar(kind, intervals, size, title) {
  const bar = el('div', { class: `bar ${kind}`, title, 'data-kind': kind, 'data-segments': String(intervals.length) })
  if (size > 0) {
    for (const [start, end] of intervals) {
      const seg = el('div', { class: 'seg', 'data-start': String(start), 'data-end': String(end) })
      seg.style.left = `${(start / size) * 100}%`
      seg.style.width = `${((end - start) / size) * 100}%`
      bar.append(seg)
    }
  }
  return el('div', { class: 'bar-row' }, el('span', { class: 'bar-label' }, kind), bar)
}

function renderVolume(status, ranges) {
  const byId = new Map(ranges.replicas.map((r) => [r.id, r]))
  const card = el('article', { class: 'volume', 'data-volume': status.name, 'data-size': String(status.size) })
  card.append(
    el('h3', {}, status.name, el('span', { class: 'muted' }, `${formatBytes(status.size)} · ${status.state} · durability ${status.durability} · etag ${status.etag}`)),
  )
  for (const replica of status.replicas) {
    const r = byId.get(replica.id)
    const dirty = r ? r.dirty : { intervals: [], bytes: 0, merged: false }
    const cached = r ? r.cached : { intervals: [], bytes: 0, merged: false }
    const roles = [replica.read && 'read', replica.write && 'write'].filter(Boolean).join('+')
    card.append(
      el(
        'div',
        { class: 'replica', 'data-replica': replica.id, 'data-state': replica.state, 'data-dirty-bytes': String(replica.dirtyBytes) },
        el(
          'div',
          {},
          el('div', {}, el('span', { class: 'name' }, replica.id), ' ', el('span', { class: 'state', 'data-state': replica.state }, replica.state)),
          el('div', { class: 'meta' }, `${replica.mode} · ${roles} · dirty ${formatBytes(replica.dirtyBytes)} · cached ${replica.cachedPercent}%`),
          replica.error ? el('div', { class: 'meta' }, `error ${replica.error.code}`) : '',
        ),
        el(
          'div',
          { class: 'bars' },
          drawBar('dirty', dirty.intervals, status.size, `dirty: ${formatBytes(dirty.bytes)}${dirty.merged ? ' (merged for display)' : ''}`),
          drawBar('cached', cached.intervals, status.size, `cached: ${formatBytes(cached.bytes)}${cached.merged ? ' (merged for display)' : ''}`),
        ),
      ),
    )
  }
  return card
}

async function refreshVolume(name) {
  try {
    const [status, ranges] = await Promise.all([getJSON(`/volumes/${encodeURIComponent(name)}`), getJSON(`/volumes/${encodeURIComponent(name)}/ranges?max=${MAX_INTERVALS}`)])
    const card = renderVolume(status, ranges)
    const old = cards.get(name)
    if (old && old.isConnected) old.replaceWith(card)
    else insertCard(name, card)
    cards.set(name, card)
  } catch {
    // Deleted meanwhile: drop its card.
    cards.get(name)?.remove()
    cards.delete(name)
  }
}

function insertCard(name, card) {
  document.getElementById('no-volumes')?.remove()
  const after = [...cards.keys()].sort().find((other) => other > name)
  const next = after ? cards.get(after) : null
  if (next && next.isConnected) volumesEl.insertBefore(card, next)
  else volumesEl.append(card)
}

async function refreshAll() {
  try {
    const { volumes } = await getJSON('/volumes')
    const names = new Set(volumes.map((v) => v.name))
    for (const [name, card] of cards) if (!names.has(name)) (card.remove(), cards.delete(name))
    await Promise.all(volumes.map((v) => refreshVolume(v.name)))
    if (volumes.length === 0 && !document.getElementById('no-volumes')) volumesEl.replaceChildren(el('p', { class: 'muted', id: 'no-volumes' }, 'no volumes yet'))
    else if (volumes.length === 0) document.getElementById('no-volumes').textContent = 'no volumes yet'
  } catch {
    // The next event or tick tries again.
  }
}

function scheduleRefresh(volume) {
  dirtyVolumes.add(volume)
  refreshTimer ??= setTimeout(() => {
    refreshTimer = null
    const names = [...dirtyVolumes]
    dirtyVolumes.clear()
    for (const name of names) void refreshVolume(name)
  }, REFRESH_MS)
}

function cell(text, numeric = false) {
  return el('td', numeric ? { class: 'num' } : {}, text)
}

function showOperation(e) {
  const key = `${e.group}/${e.replica}`
  const row = el(
    'tr',
    { 'data-group': e.group, 'data-replica': e.replica, 'data-volume': e.volume, 'data-kind': e.kind, 'data-status': e.status, class: 'fresh' },
    cell(new Date(e.time).toLocaleTimeString()),
    cell(e.volume),
    el('td', { title: e.group }, el('code', {}, e.group.slice(0, 8))),
    cell(e.kind),
    cell(`${e.replica} (${e.mode})`),
    cell(e.status),
    cell(e.offset, true),
    cell(e.length, true),
    cell(e.bytes, true),
    cell(e.phase === 'done' ? e.durationMs.toFixed(2) : '', true),
    cell(e.error ? `${e.error.code}` : ''),
  )
  const old = rows.get(key)
  if (old && old.isConnected) old.replaceWith(row)
  else operationsBody.prepend(row)
  rows.set(key, row)
  while (operationsBody.rows.length > MAX_OPERATION_ROWS) {
    const last = operationsBody.rows[operationsBody.rows.length - 1]
    rows.delete(`${last.dataset.group}/${last.dataset.replica}`)
    last.remove()
  }
}

function showActivity(text, type) {
  activityEl.prepend(el('li', { 'data-type': type }, `${new Date().toLocaleTimeString()} ${text}`))
  while (activityEl.children.length > MAX_ACTIVITY_ITEMS) activityEl.lastElementChild.remove()
}

function connect() {
  const source = new EventSource('/events')
  source.addEventListener('open', () => {
    connectionEl.dataset.state = 'live'
    connectionEl.textContent = 'live'
  })
  source.addEventListener('error', () => {
    connectionEl.dataset.state = 'error'
    connectionEl.textContent = 'reconnecting'
  })
  const track = (message) => {
    if (message.lastEventId) lastEventEl.textContent = message.lastEventId
    return JSON.parse(message.data)
  }
  source.addEventListener('operation', (message) => {
    const e = track(message)
    showOperation(e)
    if (e.phase === 'done') scheduleRefresh(e.volume)
  })
  source.addEventListener('replicaState', (message) => {
    const e = track(message)
    showActivity(`${e.volume}/${e.replica}: ${e.previous ?? '?'} → ${e.state}${e.error ? ` (${e.error.code})` : ''}`, 'replicaState')
    scheduleRefresh(e.volume)
  })
  source.addEventListener('idle', (message) => {
    const e = track(message)
    showActivity(`${e.volume}: idle`, 'idle')
    scheduleRefresh(e.volume)
  })
  // Events were missed (the server restarted, or we were away too long): start over from the state.
  source.addEventListener('reset', (message) => {
    track(message)
    void refreshAll()
  })
}

connect()
void refreshAll()
// New and deleted volumes have no event of their own: look again now and then.
setInterval(refreshAll, 5000)
