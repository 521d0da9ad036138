// The status page, the operator's view: volumes needing attention first, each replica with its
// backend, label, throttle, lag and ETA to in-sync (eta.js, the figures a CLI can print too), dirty
// and cached ranges drawn over the volume's size; reads summarised as rates; writes and scrubs live
// from GET /events; and actions (resync, scrub, add and remove a replica) through the same HTTP API,
// each confirmed first, showing the problem when the API refuses. Plain browser JavaScript, no build
// step; everything the server sends is shown as text, never as HTML. A classic script: the lag and
// ETA figures come from the ES module /eta.js (Node imports the same file), loaded with import().
'use strict'

import('/eta.js').then(
  (eta) => start(eta),
  (err) => {
    const connection = document.getElementById('connection')
    connection.dataset.state = 'error'
    connection.textContent = `the page could not load /eta.js: ${err?.message ?? err}`
  },
)

function start({ formatBytes, formatDuration, formatEta, formatEtaBasis, formatRate, LagTracker }) {
  const MAX_OPERATION_ROWS = 200
  const MAX_ACTIVITY_ITEMS = 100
  /** Intervals asked for per bar; the server merges beyond this. */
  const MAX_INTERVALS = 512
  /** Volumes whose ranges changed are refetched at most this often. */
  const REFRESH_MS = 250
  /** A volume with a replica behind is looked at this often, for its drain rate and ETA. */
  const LAG_POLL_MS = 1000
  /** Reads are counted over this window. */
  const READ_WINDOW_MS = 10_000
  /** New and deleted volumes have no event of their own: the list is read again this often. */
  const LIST_MS = 5000
  /** Where the token for actions is kept: this tab only, until it closes. */
  const TOKEN_KEY = 'filemirror-token'

  const volumesEl = document.getElementById('volumes')
  const noVolumesEl = document.getElementById('no-volumes')
  const operationsTable = document.getElementById('operations')
  const operationsBody = operationsTable.querySelector('tbody')
  const readsTable = document.getElementById('reads')
  const activityEl = document.getElementById('activity')
  const connectionEl = document.getElementById('connection')
  const lastEventEl = document.getElementById('last-event')
  const noticeEl = document.getElementById('notice')
  const tokenStateEl = document.getElementById('token-state')

  /** name -> { status, ranges, figures, card } */
  const volumes = new Map()
  /** `${group}/${replica}` -> its row in the operations table */
  const rows = new Map()
  const tracker = new LagTracker()
  const dirtyVolumes = new Set()
  let refreshTimer = null
  /** Whether GET /volumes answered once (until then the page says "loading"). */
  let listed = false

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag)
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue
      if (key === 'class') node.className = value
      else node.setAttribute(key, value === true ? '' : String(value))
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false || child === '') continue
      node.append(child instanceof Node ? child : document.createTextNode(String(child)))
    }
    return node
  }

  const enc = encodeURIComponent

  // ------------------------------------------------------------------ signing in and the token

  /** Set once the server refuses the session (it expired, or AUTH_TOKEN changed): the page stops asking. */
  let signedOut = false

  /** The session is gone: say so, with a link to the sign-in form. */
  function showSignedOut() {
    if (signedOut) return
    signedOut = true
    connectionEl.dataset.state = 'signed-out'
    connectionEl.replaceChildren(el('a', { href: '/' }, 'signed out: sign in again'))
  }

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY)
    } catch {
      return null
    }
  }

  function storeToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token)
      else sessionStorage.removeItem(TOKEN_KEY)
    } catch {
      // storage refused (a private mode): actions ask for the token each time
    }
    tokenStateEl.hidden = !storedToken()
  }

  document.getElementById('forget-token').addEventListener('click', () => {
    storeToken(null)
    notice('the token is forgotten: the next action asks for it')
  })

  class HttpError extends Error {
    constructor(url, status) {
      super(`${url}: ${status}`)
      this.status = status
    }
  }

  // Same-origin requests carry the session cookie (HttpOnly: this script never sees it) when AUTH_TOKEN is set.
  async function getJSON(url) {
    const res = await fetch(url, { headers: { accept: 'application/json' } })
    if (res.status === 401) showSignedOut()
    if (!res.ok) throw new HttpError(url, res.status)
    return res.json()
  }

  // ------------------------------------------------------------------ volumes

  /**
   * How much a volume needs the operator, most first: 0 failed (cannot be opened), 1 read-only (no
   * replica known to hold every write), 2 degraded (a replica failed), 3 behind (a replica lacks
   * bytes: write-behind or a resync is on it), 4 fine. With what to say about it.
   */
  function attentionOf(status) {
    const failed = status.replicas.filter((r) => r.state === 'failed')
    const lagging = status.replicas.filter((r) => r.state !== 'failed' && (r.state !== 'in-sync' || r.dirtyBytes > 0))
    if (status.state === 'failed') return { rank: 0, reason: `cannot be opened${status.error ? `: ${status.error.message}` : ''}. Fix the cause, then PUT its configuration again (or DELETE it).` }
    if (status.state === 'read-only') return { rank: 1, reason: `read-only${status.error ? `: ${status.error.message}` : ''}. Name the replica holding the truth with PUT /volumes/${status.name} and {"source": "<replica id>"}.` }
    if (status.state === 'degraded' || failed.length > 0) return { rank: 2, reason: `degraded: ${failed.map((r) => `${r.id} failed${r.error ? ` (${r.error.code})` : ''}`).join(', ')}. Resync it once its storage is fine.` }
    if (lagging.length > 0) return { rank: 3, reason: `behind: ${lagging.map((r) => `${r.id} ${r.state}, lacking ${formatBytes(r.dirtyBytes)}`).join('; ')}` }
    return { rank: 4, reason: '' }
  }

  /** An error as shown: its message, led by its code unless the message already is. */
  function errorText(error) {
    const message = error.message ?? ''
    return message.startsWith(error.code) ? message : `${error.code}: ${message}`
  }

  /** Where a replica lives: its path, its URL, or its S3 bucket and prefix. */
  function backendOf(replica) {
    if (replica.url) return { kind: 'url', text: replica.url }
    if (replica.s3) return { kind: 's3', text: `s3://${replica.s3.bucket}/${replica.s3.prefix ?? ''}${replica.s3.endpoint ? ` at ${replica.s3.endpoint}` : ''}` }
    return { kind: 'path', text: replica.path ?? '?' }
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

  function actionButton(action, label, data) {
    return el('button', { type: 'button', class: 'action', 'data-action': action, ...data }, label)
  }

  /** What a replica's lag line says: in sync, or how much it lacks and when it should be in sync, at what rate. */
  function lagText(replica, figures) {
    if (replica.state === 'failed') return `lag ${formatBytes(replica.dirtyBytes)} · needs a resync`
    if (replica.state === 'in-sync' && replica.dirtyBytes === 0) return 'in sync'
    if (!figures || figures.etaSeconds === null) return `lag ${formatBytes(replica.dirtyBytes)} · in sync in: unknown (not draining yet)`
    return `lag ${formatBytes(replica.dirtyBytes)} · in sync in ${formatEta(figures)} (${formatEtaBasis(figures)})`
  }

  function renderReplica(status, replica, ranges, figures) {
    const r = ranges.find((x) => x.id === replica.id)
    const dirty = r ? r.dirty : { intervals: [], bytes: 0, merged: false }
    const cached = r ? r.cached : { intervals: [], bytes: 0, merged: false }
    const roles = [replica.read && 'read', replica.write && 'write'].filter(Boolean).join('+') || 'no roles'
    const backend = backendOf(replica)
    const throttle = replica.maxBytesPerSecond ? `throttle ${formatRate(replica.maxBytesPerSecond)}` : 'unthrottled'
    const hasLabel = replica.label !== null && replica.label !== undefined
    const data = { 'data-volume': status.name, 'data-replica': replica.id }
    return el(
      'div',
      {
        class: 'replica',
        'data-replica': replica.id,
        'data-state': replica.state,
        'data-dirty-bytes': String(replica.dirtyBytes),
        'data-eta-seconds': figures && figures.etaSeconds !== null ? String(figures.etaSeconds) : null,
        'data-eta-basis': figures?.etaBasis ?? null,
        'data-eta-rate': figures && figures.rateBytesPerSecond !== null ? String(figures.rateBytesPerSecond) : null,
        'data-drain': figures && figures.drainBytesPerSecond !== null ? String(figures.drainBytesPerSecond) : null,
      },
      el(
        'div',
        { class: 'info' },
        el('div', { class: 'title' }, el('span', { class: 'name' }, replica.id), ' ', el('span', { class: 'state', 'data-state': replica.state }, replica.state), ' ', el('span', { class: 'mode' }, replica.mode)),
        el('div', { class: 'meta backend', 'data-backend': backend.kind, title: backend.text }, backend.text),
        el('div', { class: 'meta roles' }, `${roles} · `, el('span', { class: 'throttle', 'data-throttle': replica.maxBytesPerSecond ?? 'none' }, throttle), ` · cached ${replica.cachedPercent}%`),
        el('div', { class: 'meta lag' }, lagText(replica, figures)),
        hasLabel ? el('div', { class: 'meta label' }, 'label ', el('code', {}, JSON.stringify(replica.label))) : null,
        replica.error ? el('div', { class: 'meta error' }, errorText(replica.error)) : null,
        replica.unreachableSince ? el('div', { class: 'meta error' }, `unreachable since ${new Date(replica.unreachableSince).toLocaleTimeString()}`) : null,
        replica.nextRetryAt ? el('div', { class: 'meta' }, `next try ${new Date(replica.nextRetryAt).toLocaleTimeString()}`) : null,
        status.state === 'failed'
          ? null
          : el('div', { class: 'actions' }, actionButton('resync', 'Resync…', data), actionButton('remove', 'Remove…', data)),
      ),
      el(
        'div',
        { class: 'bars' },
        drawBar('dirty', dirty.intervals, status.size, `dirty: ${formatBytes(dirty.bytes)}${dirty.merged ? ' (merged for display)' : ''}`),
        drawBar('cached', cached.intervals, status.size, `cached: ${formatBytes(cached.bytes)}${cached.merged ? ' (merged for display)' : ''}`),
      ),
    )
  }

  function renderVolume(status, ranges, figures) {
    const attention = attentionOf(status)
    const sync = figures.inSync ? 'in sync' : figures.etaSeconds !== null ? `in sync in ${formatDuration(figures.etaSeconds)}` : attention.rank <= 2 ? 'not in sync' : 'in sync in: unknown'
    const card = el('article', {
      class: 'volume',
      'data-volume': status.name,
      'data-size': String(status.size),
      'data-state': status.state,
      'data-attention': String(attention.rank),
      'data-eta-seconds': figures.etaSeconds !== null ? String(figures.etaSeconds) : null,
    })
    const data = { 'data-volume': status.name }
    card.append(
      el(
        'div',
        { class: 'volume-head' },
        el('h3', {}, status.name),
        el('span', { class: 'state', 'data-state': status.state }, status.state),
        el('span', { class: 'sync', 'data-in-sync': String(figures.inSync) }, sync),
        el('span', { class: 'muted' }, `${formatBytes(status.size)} · durability ${status.durability} · etag ${status.etag || 'none'}`),
        status.state === 'failed' ? null : el('span', { class: 'actions' }, actionButton('scrub', 'Scrub…', data), actionButton('add-replica', 'Add replica…', data)),
      ),
    )
    if (attention.reason) card.append(el('p', { class: 'attention', 'data-rank': String(attention.rank) }, attention.reason))
    for (const replica of status.replicas) card.append(renderReplica(status, replica, ranges.replicas ?? [], figures.replicas.get(replica.id)))
    return card
  }

  /** Cards in attention order, then by name; moved only when the order changed. */
  function orderCards() {
    const order = [...volumes.values()]
      .filter((v) => v.card)
      .sort((a, b) => attentionOf(a.status).rank - attentionOf(b.status).rank || (a.status.name < b.status.name ? -1 : a.status.name > b.status.name ? 1 : 0))
      .map((v) => v.card)
    const current = [...volumesEl.children]
    if (order.length !== current.length || order.some((card, i) => card !== current[i])) volumesEl.append(...order)
    noVolumesEl.hidden = volumes.size > 0
    if (listed && volumes.size === 0) showNoVolumes()
  }

  function showNoVolumes() {
    const example = `curl -X PUT ${location.origin}/volumes/demo -H 'Content-Type: application/json' -d '{"replicas": [{"id": "fast", "path": "fast/demo.img"}, {"id": "slow", "path": "slow/demo.img", "mode": "async"}]}'`
    document.getElementById('no-volumes-text').replaceChildren('no volumes yet: create one with ', el('code', {}, 'PUT /volumes/{name}'), ', for example')
    if (!noVolumesEl.querySelector('pre')) noVolumesEl.append(el('pre', {}, example))
    noVolumesEl.hidden = false
  }

  function dropVolume(name) {
    volumes.get(name)?.card?.remove()
    volumes.delete(name)
    tracker.forget(name)
    orderCards()
  }

  /** The latest answer per volume wins, whatever order they arrive in. */
  const asked = new Map()
  const shown = new Map()
  const inFlight = new Set()

  async function refreshVolume(name) {
    const ticket = (asked.get(name) ?? 0) + 1
    asked.set(name, ticket)
    inFlight.add(name)
    try {
      let status
      try {
        status = await getJSON(`/volumes/${enc(name)}`)
      } catch (err) {
        // Signed out: the cards stay as they were. Deleted meanwhile: its card goes.
        if (!signedOut && err instanceof HttpError && err.status === 404 && ticket >= (shown.get(name) ?? 0)) dropVolume(name)
        return
      }
      const at = performance.now()
      // A volume that could not be opened has no ranges (503): it is shown without bars.
      let ranges = { replicas: [] }
      if (status.state !== 'failed') ranges = await getJSON(`/volumes/${enc(name)}/ranges?max=${MAX_INTERVALS}`).catch(() => ranges)
      if (ticket < (shown.get(name) ?? 0)) return
      shown.set(name, ticket)
      const figures = tracker.sampleVolume(status, at)
      const card = renderVolume(status, ranges, figures)
      const old = volumes.get(name)?.card
      if (old && old.isConnected) old.replaceWith(card)
      volumes.set(name, { status, ranges, figures, card })
      orderCards()
    } finally {
      if (asked.get(name) === ticket) inFlight.delete(name)
    }
  }

  async function refreshAll() {
    if (signedOut) return
    try {
      const list = await getJSON('/volumes')
      listed = true
      const names = new Set(list.volumes.map((v) => v.name))
      for (const name of [...volumes.keys()]) if (!names.has(name)) dropVolume(name)
      await Promise.all(list.volumes.map((v) => refreshVolume(v.name)))
      orderCards()
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

  /** Volumes with a replica lacking bytes (and not failed: nothing drains those) are looked at every second. */
  function pollLagging() {
    if (signedOut) return
    for (const [name, { status }] of volumes) {
      if (inFlight.has(name)) continue
      if (status.replicas.some((r) => r.state !== 'failed' && (r.dirtyBytes > 0 || r.state === 'resyncing'))) void refreshVolume(name)
    }
  }

  // ------------------------------------------------------------------ reads, as rates

  const pageStart = performance.now()
  /** Recent reads: { at, volume, bytes } (the window), and totals per volume since the page opened. */
  const recentReads = []
  const readTotals = new Map()

  function countRead(e) {
    const at = performance.now()
    const failed = e.status === 'failed'
    if (!failed) recentReads.push({ at, volume: e.volume, bytes: e.bytes })
    let total = readTotals.get(e.volume)
    if (!total) readTotals.set(e.volume, (total = { reads: 0, bytes: 0, failed: 0 }))
    if (failed) total.failed++
    else {
      total.reads++
      total.bytes += e.bytes
    }
  }

  function showReads() {
    const now = performance.now()
    while (recentReads.length > 0 && recentReads[0].at < now - READ_WINDOW_MS) recentReads.shift()
    // Over the window, or over the time the page has been open when that is shorter (a second at least).
    const seconds = Math.max(1, Math.min(READ_WINDOW_MS, now - pageStart) / 1000)
    const windowed = new Map()
    for (const { volume, bytes } of recentReads) {
      const w = windowed.get(volume) ?? { reads: 0, bytes: 0 }
      w.reads++
      w.bytes += bytes
      windowed.set(volume, w)
    }
    const body = readsTable.querySelector('tbody')
    body.replaceChildren(
      ...[...readTotals.keys()].sort().map((volume) => {
        const w = windowed.get(volume) ?? { reads: 0, bytes: 0 }
        const total = readTotals.get(volume)
        const perSecond = w.reads / seconds
        return el(
          'tr',
          { 'data-volume': volume, 'data-reads-per-second': perSecond.toFixed(2), 'data-bytes-per-second': String(Math.round(w.bytes / seconds)), 'data-reads': String(total.reads) },
          el('td', {}, volume),
          el('td', { class: 'num' }, perSecond.toFixed(perSecond < 10 ? 1 : 0)),
          el('td', { class: 'num' }, formatRate(w.bytes / seconds)),
          el('td', { class: 'num' }, String(total.reads)),
          el('td', { class: 'num' }, formatBytes(total.bytes)),
          el('td', { class: 'num' }, String(total.failed)),
        )
      }),
    )
    readsTable.hidden = readTotals.size === 0
    document.getElementById('no-reads').hidden = readTotals.size > 0
  }

  // ------------------------------------------------------------------ operations and activity

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
    operationsTable.hidden = false
    document.getElementById('no-operations').hidden = true
  }

  function showActivity(text, type) {
    activityEl.prepend(el('li', { 'data-type': type }, `${new Date().toLocaleTimeString()} ${text}`))
    while (activityEl.children.length > MAX_ACTIVITY_ITEMS) activityEl.lastElementChild.remove()
    document.getElementById('no-activity').hidden = true
  }

  let noticeTimer = null
  /** A line in the header saying what an action did; it stays 15 s. */
  function notice(text, kind = 'ok') {
    noticeEl.textContent = text
    noticeEl.dataset.kind = kind
    noticeEl.hidden = false
    clearTimeout(noticeTimer)
    noticeTimer = setTimeout(() => (noticeEl.hidden = true), 15_000)
  }

  // ------------------------------------------------------------------ actions

  const dialog = document.getElementById('action')
  const form = document.getElementById('action-form')
  const fieldsEl = document.getElementById('action-fields')
  const problemEl = document.getElementById('action-problem')
  const tokenBox = document.getElementById('action-token')
  const tokenInput = document.getElementById('action-token-input')
  const confirmButton = document.getElementById('action-confirm')
  const requestEl = document.getElementById('action-request')

  function checkbox(name, label) {
    const id = `field-${name}`
    return el('div', { class: 'field check' }, el('input', { type: 'checkbox', id, name }), el('label', { for: id }, label))
  }

  function input(name, label, attrs = {}) {
    const id = `field-${name}`
    return el('div', { class: 'field' }, el('label', { for: id }, label), el('input', { id, name, ...attrs }))
  }

  function select(name, label, options) {
    const id = `field-${name}`
    return el('div', { class: 'field' }, el('label', { for: id }, label), el('select', { id, name }, ...options.map(([value, text]) => el('option', { value }, text))))
  }

  /** The replica a location names: an http(s) URL (another filemirror, WebDAV), s3://bucket/prefix, or a path. */
  function replicaBody({ path, mode, tokenEnv, endpoint }) {
    if (/^https?:\/\//i.test(path)) return { url: path, mode, ...(tokenEnv ? { tokenEnv } : {}) }
    const s3 = /^s3:\/\/([^/]+)\/?(.*)$/i.exec(path)
    if (s3) return { s3: { bucket: s3[1], prefix: s3[2], ...(endpoint ? { endpoint, forcePathStyle: true } : {}) }, mode: 'async' }
    return { path, mode }
  }

  /**
   * The actions, each a confirmation (what it does, the request it sends, its options) and what to
   * say once it succeeds. `values` are the dialog's fields by name.
   */
  const ACTIONS = {
    resync: ({ volume, replica }) => {
      const r = volumes.get(volume)?.status.replicas.find((x) => x.id === replica)
      return {
        title: `Resync replica ${replica} of ${volume}?`,
        text:
          r?.state === 'failed'
            ? `${replica} is failed${r.error ? ` (${errorText(r.error)})` : ''}. Resync reopens its file and copies what it lacks from an in-sync replica; it stays failed if its storage still errs.`
            : `Resync copies what ${replica} lacks from an in-sync replica (with "full", every byte). It takes writes meanwhile.`,
        fields: [checkbox('full', 'full: copy every byte, not only what it lacks')],
        confirm: 'Resync',
        request: (values) => ({ method: 'POST', url: `/volumes/${enc(volume)}/replicas/${enc(replica)}/resync${values.full ? '?full=true' : ''}` }),
        done: () => `resync of ${volume}/${replica} started`,
      }
    },
    remove: ({ volume, replica }) => ({
      title: `Remove replica ${replica} from ${volume}?`,
      text: `The volume stops reading and writing ${replica}; its file stays on disk. The server refuses (409) while no other reading replica holds every acknowledged byte.`,
      fields: [],
      confirm: 'Remove',
      danger: true,
      request: () => ({ method: 'DELETE', url: `/volumes/${enc(volume)}/replicas/${enc(replica)}` }),
      done: () => `replica ${replica} removed from ${volume}`,
    }),
    scrub: ({ volume }) => ({
      title: `Scrub volume ${volume}?`,
      text: 'Scrub reads every replica and compares them byte for byte (at 64 MiB/s at most); with "repair", a replica that differs is rewritten from a good one. Its progress shows under Operations.',
      fields: [checkbox('repair', 'repair the replicas that differ')],
      confirm: 'Scrub',
      request: (values) => ({ method: 'POST', url: `/volumes/${enc(volume)}/scrub${values.repair ? '?repair=true' : ''}` }),
      done: (payload) => `scrub of ${volume} started${payload?.id ? ` (operation group ${payload.id.slice(0, 8)})` : ''}`,
    }),
    'add-replica': ({ volume }) => ({
      title: `Add a replica to ${volume}?`,
      text: 'The new replica takes writes at once and is filled by a resync. A path is resolved against DATA_DIR and must be inside a storage root (a file that holds other bytes is refused); an http(s) URL or an s3:// bucket must match REMOTE_ALLOW, and an S3 replica is always async.',
      fields: [
        input('id', 'id', { required: true, pattern: '[A-Za-z0-9_\\-][A-Za-z0-9._\\-]{0,127}', maxlength: 128, autocomplete: 'off', spellcheck: 'false' }),
        input('path', 'path, URL or s3://bucket/prefix', { required: true, maxlength: 4096, autocomplete: 'off', spellcheck: 'false', placeholder: 'slow/demo.img' }),
        select('mode', 'mode', [
          ['async', 'async: written behind (journaled first)'],
          ['sync', 'sync: written before each reply'],
        ]),
        input('tokenEnv', 'URL: token variable (optional)', { maxlength: 128, autocomplete: 'off', spellcheck: 'false', placeholder: 'FILEMIRROR_REMOTE_DR_TOKEN' }),
        input('endpoint', 'S3: endpoint (optional; path-style)', { maxlength: 4096, autocomplete: 'off', spellcheck: 'false', placeholder: 'http://minio:9000' }),
      ],
      confirm: 'Add replica',
      request: (values) => ({ method: 'PUT', url: `/volumes/${enc(volume)}/replicas/${values.id ? enc(values.id) : '{id}'}`, body: replicaBody(values) }),
      done: (_payload, values) => `replica ${values.id} added to ${volume}`,
    }),
  }

  /** The action the dialog shows: its definition and target. */
  let current = null
  let busy = false

  function fieldValues() {
    const values = {}
    for (const field of fieldsEl.querySelectorAll('input, select')) values[field.name] = field.type === 'checkbox' ? field.checked : field.value.trim()
    return values
  }

  function showRequest() {
    if (!current) return
    const { method, url, body } = current.action.request(fieldValues())
    requestEl.textContent = `${method} ${url}${body ? ` ${JSON.stringify(body)}` : ''}`
  }

  function openAction(name, target) {
    const action = ACTIONS[name](target)
    current = { name, target, action }
    dialog.dataset.action = name
    document.getElementById('action-title').textContent = action.title
    document.getElementById('action-text').textContent = action.text
    fieldsEl.replaceChildren(...action.fields)
    problemEl.hidden = true
    problemEl.replaceChildren()
    tokenBox.hidden = true
    tokenInput.required = false
    tokenInput.value = ''
    confirmButton.textContent = action.confirm
    confirmButton.classList.toggle('danger', Boolean(action.danger))
    confirmButton.disabled = false
    showRequest()
    dialog.showModal()
    ;(fieldsEl.querySelector('input:not([type="checkbox"])') ?? confirmButton).focus()
  }

  function closeAction() {
    current = null
    dialog.close()
  }

  /** The problem the API answered with, shown in the dialog: status, title, detail, and each invalid field. */
  function showProblem(status, payload) {
    const problem = payload && typeof payload === 'object' ? payload : { title: `HTTP ${status}`, detail: typeof payload === 'string' ? payload : '' }
    const errors = Array.isArray(problem.errors) ? problem.errors : []
    problemEl.replaceChildren(
      ...[
        el('p', { class: 'problem-title' }, el('strong', { 'data-status': String(status) }, `${status || 'no answer'} ${problem.title ?? ''}`.trim())),
        problem.detail ? el('p', { class: 'problem-detail' }, problem.detail) : null,
        errors.length ? el('ul', {}, ...errors.map((e) => el('li', {}, typeof e === 'string' ? e : `${e.path ?? e.instancePath ?? ''} ${e.message ?? JSON.stringify(e)}`.trim()))) : null,
      ].filter(Boolean),
    )
    problemEl.dataset.status = String(status)
    problemEl.hidden = false
  }

  /** Sends an action's request, with the token when this tab has one. */
  async function send({ method, url, body }) {
    const headers = { accept: 'application/json, application/problem+json' }
    const token = storedToken()
    if (token) headers.authorization = `Bearer ${token}`
    if (body !== undefined) headers['content-type'] = 'application/json'
    const res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    const text = await res.text()
    let payload = null
    try {
      payload = text ? JSON.parse(text) : null
    } catch {
      payload = text
    }
    return { status: res.status, ok: res.ok, payload, sentToken: Boolean(token) }
  }

  form.addEventListener('input', showRequest)
  document.getElementById('action-cancel').addEventListener('click', closeAction)
  dialog.addEventListener('close', () => (current = null))

  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    if (!current || busy) return
    const { action, target } = current
    if (!tokenBox.hidden && tokenInput.value) storeToken(tokenInput.value.trim())
    const values = fieldValues()
    busy = true
    confirmButton.disabled = true
    problemEl.hidden = true
    try {
      const res = await send(action.request(values))
      if (res.status === 401) {
        // The session cookie only reads: actions need the bearer token.
        if (res.sentToken) storeToken(null)
        tokenBox.hidden = false
        tokenInput.required = true
        tokenInput.focus()
        showProblem(401, {
          title: 'Unauthorized',
          detail: res.sentToken ? 'That token was not accepted: type the server\'s AUTH_TOKEN.' : 'This server needs its token (AUTH_TOKEN) for actions: type it, then confirm again.',
        })
        return
      }
      if (!res.ok) {
        showProblem(res.status, res.payload)
        return
      }
      closeAction()
      notice(action.done(res.payload, values))
      if (target.volume) void refreshVolume(target.volume)
    } catch (err) {
      showProblem(0, { title: 'the request did not go through', detail: String(err?.message ?? err) })
    } finally {
      busy = false
      confirmButton.disabled = false
    }
  })

  // One listener for every card's buttons (cards are redrawn as their volume changes).
  volumesEl.addEventListener('click', (event) => {
    const button = event.target instanceof Element ? event.target.closest('button[data-action]') : null
    if (!button) return
    openAction(button.dataset.action, { volume: button.dataset.volume, replica: button.dataset.replica })
  })

  // ------------------------------------------------------------------ the event stream

  /** Delay before opening a new stream once the browser has given up on one. */
  const RECONNECT_MS = 2000

  function connect() {
    if (signedOut) return
    const source = new EventSource('/events')
    source.addEventListener('open', () => {
      connectionEl.dataset.state = 'live'
      connectionEl.textContent = 'live'
    })
    source.addEventListener('error', () => {
      if (signedOut) return source.close()
      connectionEl.dataset.state = 'error'
      connectionEl.textContent = 'reconnecting'
      // An answer other than a stream (401 once the session is gone, 503 while the server stops) ends
      // the EventSource for good: find out which, and either say so or start a new one.
      if (source.readyState === EventSource.CLOSED) {
        fetch('/volumes', { method: 'HEAD' }).then(
          (res) => (res.status === 401 ? showSignedOut() : setTimeout(connect, RECONNECT_MS)),
          () => setTimeout(connect, RECONNECT_MS),
        )
      }
    })
    const track = (message) => {
      if (message.lastEventId) lastEventEl.textContent = message.lastEventId
      return JSON.parse(message.data)
    }
    source.addEventListener('operation', (message) => {
      const e = track(message)
      // Reads are counted, not listed: a busy volume would flood the table. A failed one is listed.
      if (e.kind === 'read') {
        if (e.phase === 'done') countRead(e)
        if (e.status === 'failed') showOperation(e)
      } else showOperation(e)
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

  /**
   * A `#token=` link opened on the page itself (the sign-in page handles it otherwise): the token is
   * kept for actions in this tab, goes to POST /session for a fresh cookie and leaves the address
   * bar; a signed-out page then reloads.
   */
  function signInFromFragment() {
    const match = /(?:^#|&)token=([^&]*)/.exec(location.hash)
    if (!match) return
    history.replaceState(null, '', location.pathname + location.search)
    let token = match[1]
    try {
      token = decodeURIComponent(token)
    } catch {
      // not percent-encoded: taken as it is
    }
    storeToken(token)
    fetch('/session', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) }).then(
      (res) => {
        if (res.ok && signedOut) location.reload()
        else if (res.status === 401) {
          storeToken(null)
          showSignedOut()
        }
      },
      () => {},
    )
  }

  window.addEventListener('hashchange', signInFromFragment)
  signInFromFragment()
  tokenStateEl.hidden = !storedToken()
  connect()
  void refreshAll()
  setInterval(refreshAll, LIST_MS)
  setInterval(pollLagging, LAG_POLL_MS)
  setInterval(showReads, 1000)
}
