/** An RFC 9457 problem: every 4xx and 5xx the service sends is one of these. */
export class Problem extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string,
    readonly type: string = 'about:blank',
    /** Extra members of the problem object (RFC 9457 §3.2) and headers to send with it. */
    readonly extra: { members?: Record<string, unknown>; headers?: Record<string, string> } = {},
  ) {
    super(detail)
    this.name = 'Problem'
  }

  toJSON(instance?: string): Record<string, unknown> {
    return { type: this.type, title: this.title, status: this.status, detail: this.detail, ...(instance ? { instance } : {}), ...this.extra.members }
  }
}

const TYPE_BASE = 'https://filemirror.dev/problems/'

/** The service's problems by name, each with its status and title. */
export const problems = {
  badRequest: (detail: string, members?: Record<string, unknown>) => new Problem(400, 'Bad Request', detail, TYPE_BASE + 'bad-request', { members }),
  invalidRange: (detail: string) => new Problem(400, 'Invalid Content-Range', detail, TYPE_BASE + 'invalid-content-range'),
  unauthorized: () => new Problem(401, 'Unauthorized', 'a valid bearer token is required', TYPE_BASE + 'unauthorized', { headers: { 'www-authenticate': 'Bearer' } }),
  notFound: (detail: string) => new Problem(404, 'Not Found', detail, TYPE_BASE + 'not-found'),
  methodNotAllowed: (allow: string) => new Problem(405, 'Method Not Allowed', `allowed methods: ${allow}`, TYPE_BASE + 'method-not-allowed', { headers: { allow } }),
  requestTimeout: (detail: string) => new Problem(408, 'Request Timeout', detail, TYPE_BASE + 'request-timeout'),
  conflict: (detail: string) => new Problem(409, 'Conflict', detail, TYPE_BASE + 'conflict'),
  lengthRequired: (detail: string) => new Problem(411, 'Length Required', detail, TYPE_BASE + 'length-required'),
  preconditionFailed: (detail: string) => new Problem(412, 'Precondition Failed', detail, TYPE_BASE + 'precondition-failed'),
  contentTooLarge: (detail: string) => new Problem(413, 'Content Too Large', detail, TYPE_BASE + 'content-too-large'),
  unsupportedMediaType: (detail: string) => new Problem(415, 'Unsupported Media Type', detail, TYPE_BASE + 'unsupported-media-type'),
  rangeNotSatisfiable: (size: number) =>
    new Problem(416, 'Range Not Satisfiable', `no requested range overlaps the ${size} bytes of the volume`, TYPE_BASE + 'range-not-satisfiable', {
      headers: { 'content-range': `bytes */${size}` },
    }),
  unavailable: (detail: string, retryAfterSeconds?: number) =>
    new Problem(503, 'Service Unavailable', detail, TYPE_BASE + 'unavailable', retryAfterSeconds ? { headers: { 'retry-after': String(retryAfterSeconds) } } : {}),
  writeFailed: (detail: string, groupId: string) =>
    new Problem(500, 'Write Failed', detail, TYPE_BASE + 'write-failed', { members: { operationId: groupId }, headers: { 'operation-id': groupId, location: `/operations/${groupId}` } }),
  readFailed: (detail: string) => new Problem(500, 'Read Failed', detail, TYPE_BASE + 'read-failed'),
  internal: () => new Problem(500, 'Internal Server Error', 'the server could not complete the request', TYPE_BASE + 'internal'),
}
