// Compiled with generated/openapi.d.ts (npm run types): the generated types are not only valid, they
// describe the API's JSON well enough to type real values with.
import type { components, operations, paths } from './generated/openapi.js'

type Schemas = components['schemas']

export const label: Schemas['JsonValue'] = { rack: 2, tags: ['ssd', { nested: [null, true, 1.5] }] }

export const replica: Schemas['ReplicaSpec'] = { id: 'fast', path: 'fast/demo.img', read: true, write: true, mode: 'async', label, maxBytesPerSecond: 65536 }

export const spec: Schemas['VolumeSpec'] = { replicas: [replica], durability: 'fsync', checksums: true }

export const problem: Schemas['Problem'] = { type: 'https://filemirror.dev/problems/conflict', title: 'Conflict', status: 409, detail: 'removing slow would lose data' }

/** A status as GET /volumes/{name} answers it. */
export type VolumeReply = paths['/volumes/{name}']['get']['responses'][200]['content']['application/json']
export const replicaStateOf = (status: VolumeReply): string[] => status.replicas.map((r) => `${r.id}: ${r.state}, ${r.dirtyBytes} bytes behind`)

export type Operations = keyof operations
