/*
 * CRC-32C (Castagnoli) of every fixed-size block of a buffer in one call. Two ways, the same values:
 * - blocks: the SSE 4.2 crc32 instruction, three blocks side by side to keep the crc unit busy (latency 3, one per
 *   cycle): ~30 GB/s on one core here.
 * - blocksFolded (CPUs with AVX-512 and VPCLMULQDQ): carry-less multiplication folds 256 bytes per step in four
 *   512-bit accumulators, the crc32 instruction reduces what is left: several times faster on 4 KiB blocks.
 * readBlocks reads a range of a file on the libuv pool and checksums it there, while the bytes are still in that
 * core's cache: checksummed on the main thread after the read, a 1 MiB read costs 2-3x more (its lines come from
 * another core).
 * Built on x86-64 only; elsewhere, or on a CPU without SSE 4.2, src/engine/block-hash.ts uses @node-rs/crc32.
 */
#include <errno.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#if defined(__x86_64__)
#include <immintrin.h>

static uint32_t crc_one(uint32_t c, const uint8_t *p, size_t n) {
  uint64_t w = c;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    w = _mm_crc32_u64(w, v);
  }
  c = (uint32_t)w;
  while (n--) c = _mm_crc32_u8(c, *p++);
  return c;
}

static void crc_three(const uint8_t *a, const uint8_t *b, const uint8_t *d, size_t n, uint32_t *out) {
  uint64_t ca = 0xffffffff, cb = 0xffffffff, cd = 0xffffffff;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t va, vb, vd;
    memcpy(&va, a + i, 8);
    memcpy(&vb, b + i, 8);
    memcpy(&vd, d + i, 8);
    ca = _mm_crc32_u64(ca, va);
    cb = _mm_crc32_u64(cb, vb);
    cd = _mm_crc32_u64(cd, vd);
  }
  out[0] = ~crc_one((uint32_t)ca, a + i, n - i);
  out[1] = ~crc_one((uint32_t)cb, b + i, n - i);
  out[2] = ~crc_one((uint32_t)cd, d + i, n - i);
}

static void blocks_crc32(const uint8_t *p, size_t length, size_t block, uint32_t *out) {
  size_t n = (length + block - 1) / block, full = length / block, k = 0;
  for (; k + 3 <= full; k += 3) crc_three(p + k * block, p + (k + 1) * block, p + (k + 2) * block, block, out + k);
  for (; k < n; k++) {
    size_t size = (k + 1) * block <= length ? block : length - k * block;
    out[k] = ~crc_one(0xffffffff, p + k * block, size);
  }
}

/*
 * Folding, in the bit-reflected domain of this CRC: a 128-bit lane X = H (its low quadword, the higher powers) and
 * L moved d bits further is H * (x^(d+64) mod P) + L * (x^d mod P); a reflected carry-less product carries one extra
 * factor x, so the constants are x^(d+63) and x^(d-1) mod P, bit-reflected into the top of a quadword.
 */
static uint64_t reflected_power(unsigned n) {
  uint64_t r = 1; /* x^0, normal bit order, P = x^32 + 0x1EDC6F41 */
  while (n--) {
    r <<= 1;
    if (r & 0x100000000ull) r ^= 0x11EDC6F41ull;
  }
  uint32_t v = (uint32_t)r, rev = 0;
  for (int i = 0; i < 32; i++) rev |= ((v >> i) & 1u) << (31 - i);
  return (uint64_t)rev << 32;
}

/* Quadword pairs (for H, for L) per fold distance: 2048 bits (the loop), 512 (accumulator into the next), 384/256/128 (lanes). */
static uint64_t k2048[2], k512[2], k384[2], k256[2], k128[2];
static int folded_ok = 0;

static void fold_constants(void) {
  const unsigned d[5] = {2048, 512, 384, 256, 128};
  uint64_t *k[5] = {k2048, k512, k384, k256, k128};
  for (int i = 0; i < 5; i++) {
    k[i][0] = reflected_power(d[i] + 63);
    k[i][1] = reflected_power(d[i] - 1);
  }
}

__attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2"))) static inline __m512i fold512(__m512i x, __m512i k, __m512i data) {
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), data, 0x96);
}

__attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2"))) static inline __m128i fold128(__m128i x, const uint64_t *k, __m128i data) {
  __m128i kk = _mm_set_epi64x((long long)k[1], (long long)k[0]);
  return _mm_ternarylogic_epi64(_mm_clmulepi64_si128(x, kk, 0x00), _mm_clmulepi64_si128(x, kk, 0x11), data, 0x96);
}

/* CRC-32C (initial and final inversion) of p[0, n); n >= 256. */
__attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2"))) static uint32_t crc_folded(const uint8_t *p, size_t n) {
  __m512i a0 = _mm512_loadu_si512((const void *)p);
  __m512i a1 = _mm512_loadu_si512((const void *)(p + 64));
  __m512i a2 = _mm512_loadu_si512((const void *)(p + 128));
  __m512i a3 = _mm512_loadu_si512((const void *)(p + 192));
  /* The initial value 0xFFFFFFFF is the message's first 32 bits inverted. */
  a0 = _mm512_xor_si512(a0, _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1));
  const __m512i k = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)k2048[1], (long long)k2048[0]));
  size_t i = 256;
  for (; i + 256 <= n; i += 256) {
    a0 = fold512(a0, k, _mm512_loadu_si512((const void *)(p + i)));
    a1 = fold512(a1, k, _mm512_loadu_si512((const void *)(p + i + 64)));
    a2 = fold512(a2, k, _mm512_loadu_si512((const void *)(p + i + 128)));
    a3 = fold512(a3, k, _mm512_loadu_si512((const void *)(p + i + 192)));
  }
  const __m512i k1 = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)k512[1], (long long)k512[0]));
  __m512i z = fold512(a0, k1, a1);
  z = fold512(z, k1, a2);
  z = fold512(z, k1, a3);
  __m128i x = _mm512_extracti32x4_epi32(z, 3);
  x = _mm_xor_si128(x, fold128(_mm512_extracti32x4_epi32(z, 0), k384, _mm_setzero_si128()));
  x = _mm_xor_si128(x, fold128(_mm512_extracti32x4_epi32(z, 1), k256, _mm_setzero_si128()));
  x = _mm_xor_si128(x, fold128(_mm512_extracti32x4_epi32(z, 2), k128, _mm_setzero_si128()));
  /* What is left is 128 bits of message: the crc32 instruction reduces them, then takes the tail. */
  uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(x));
  c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(x, 1));
  return ~crc_one((uint32_t)c, p + i, n - i);
}

__attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2"))) static void blocks_folded(const uint8_t *p, size_t length, size_t block, uint32_t *out) {
  size_t n = (length + block - 1) / block;
  for (size_t k = 0; k < n; k++) {
    size_t size = (k + 1) * block <= length ? block : length - k * block;
    out[k] = size >= 256 ? crc_folded(p + k * block, size) : ~crc_one(0xffffffff, p + k * block, size);
  }
}

typedef void (*blocks_fn)(const uint8_t *, size_t, size_t, uint32_t *);

/* (data: Buffer, blockBytes: number, out: Uint32Array, outIndex: number): number of blocks (the last may be short) */
static napi_value call_blocks(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  void *fn;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, &fn) != napi_ok || argc < 4) goto bad;
  void *data;
  size_t length;
  uint32_t block, at;
  napi_typedarray_type type;
  size_t count, byteOffset;
  void *outData;
  napi_value arrayBuffer;
  if (napi_get_buffer_info(env, argv[0], &data, &length) != napi_ok) goto bad;
  if (napi_get_value_uint32(env, argv[1], &block) != napi_ok || block == 0) goto bad;
  if (napi_get_typedarray_info(env, argv[2], &type, &count, &outData, &arrayBuffer, &byteOffset) != napi_ok || type != napi_uint32_array) goto bad;
  if (napi_get_value_uint32(env, argv[3], &at) != napi_ok) goto bad;
  size_t n = (length + block - 1) / block;
  if (at > count || n > count - at) goto bad;
  ((blocks_fn)fn)(data, length, block, (uint32_t *)outData + at);
  napi_value result;
  napi_create_uint32(env, (uint32_t)n, &result);
  return result;
bad:
  napi_throw_type_error(env, NULL, "blocks(data: Buffer, blockBytes > 0, out: Uint32Array with room, outIndex)");
  return NULL;
}

/* One readBlocks call: the buffers are held by references until it completes. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref buffer_ref, out_ref;
  int fd;
  uint8_t *data;
  size_t length, done;
  int64_t position;
  uint32_t block;
  uint32_t *out;
  int err;
  blocks_fn fn;
} read_job;

static void read_execute(napi_env env, void *arg) {
  read_job *j = arg;
  (void)env;
  while (j->done < j->length) {
    ssize_t n = pread(j->fd, j->data + j->done, j->length - j->done, (off_t)(j->position + (int64_t)j->done));
    if (n < 0) {
      if (errno == EINTR) continue;
      j->err = errno;
      return;
    }
    if (n == 0) break;
    j->done += (size_t)n;
  }
  if (j->done > 0) j->fn(j->data, j->done, j->block, j->out);
}

static void read_complete(napi_env env, napi_status status, void *arg) {
  read_job *j = arg;
  napi_value result;
  if (status == napi_ok && !j->err) {
    napi_create_double(env, (double)j->done, &result);
    napi_resolve_deferred(env, j->deferred, result);
  } else {
    /* An error as node:fs makes them: code, errno, syscall. */
    int e = j->err ? j->err : EIO;
    const char *name = uv_err_name(-e);
    char text[160];
    snprintf(text, sizeof text, "%s: %s, read", name, strerror(e));
    napi_value code, message, errno_value, syscall;
    napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, code, message, &result);
    napi_create_int32(env, -e, &errno_value);
    napi_set_named_property(env, result, "errno", errno_value);
    napi_create_string_utf8(env, "read", NAPI_AUTO_LENGTH, &syscall);
    napi_set_named_property(env, result, "syscall", syscall);
    napi_reject_deferred(env, j->deferred, result);
  }
  napi_delete_reference(env, j->buffer_ref);
  napi_delete_reference(env, j->out_ref);
  napi_delete_async_work(env, j->work);
  free(j);
}

/*
 * readBlocks / readBlocksFolded(fd, buffer, position, blockBytes, out): Promise<bytes read>. Fills buffer from position (fewer bytes only
 * at end of file) and writes the CRC-32C of each blockBytes block of what it read into out (the last may be short).
 */
static napi_value read_blocks(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  void *fn;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, &fn) != napi_ok || argc < 5) goto bad;
  int32_t fd;
  void *data;
  size_t length;
  double position;
  uint32_t block;
  napi_typedarray_type type;
  size_t count, byteOffset;
  void *outData;
  napi_value arrayBuffer;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) goto bad;
  if (napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok) goto bad;
  if (napi_get_value_double(env, argv[2], &position) != napi_ok || position < 0 || position > 9007199254740991.0) goto bad;
  if (napi_get_value_uint32(env, argv[3], &block) != napi_ok || block == 0) goto bad;
  if (napi_get_typedarray_info(env, argv[4], &type, &count, &outData, &arrayBuffer, &byteOffset) != napi_ok || type != napi_uint32_array) goto bad;
  if ((length + block - 1) / block > count) goto bad;
  read_job *j = calloc(1, sizeof *j);
  if (!j) goto bad;
  j->fd = fd;
  j->data = data;
  j->length = length;
  j->position = (int64_t)position;
  j->block = block;
  j->out = outData;
  j->fn = (blocks_fn)fn;
  napi_value promise, name;
  napi_create_reference(env, argv[1], 1, &j->buffer_ref);
  napi_create_reference(env, argv[4], 1, &j->out_ref);
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, "filemirror:readBlocks", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, read_execute, read_complete, j, &j->work);
  napi_queue_async_work(env, j->work);
  return promise;
bad:
  napi_throw_type_error(env, NULL, "readBlocks(fd, buffer: Buffer, position >= 0, blockBytes > 0, out: Uint32Array with room)");
  return NULL;
}

static void export_read(napi_env env, napi_value exports, const char *name, blocks_fn impl) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, read_blocks, (void *)impl, &fn);
  napi_set_named_property(env, exports, name, fn);
}

static void export_fn(napi_env env, napi_value exports, const char *name, blocks_fn impl) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, call_blocks, (void *)impl, &fn);
  napi_set_named_property(env, exports, name, fn);
}

/* The folded way, checked once against the crc32 instruction on a pattern before it is offered. */
static int folded_agrees(void) {
  static uint8_t sample[4096 + 300];
  for (size_t i = 0; i < sizeof sample; i++) sample[i] = (uint8_t)(i * 131 + (i >> 7));
  const size_t sizes[4] = {256, 4096, 4096 + 300, 512 + 17};
  for (int s = 0; s < 4; s++) {
    uint32_t want, got;
    blocks_crc32(sample, sizes[s], sizes[s], &want);
    blocks_folded(sample, sizes[s], sizes[s], &got);
    if (want != got) return 0;
  }
  return 1;
}

static napi_value init(napi_env env, napi_value exports) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("sse4.2")) return exports; /* nothing: the caller falls back to software */
  export_fn(env, exports, "blocks", blocks_crc32);
  export_read(env, exports, "readBlocks", blocks_crc32);
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("vpclmulqdq") && __builtin_cpu_supports("pclmul")) {
    fold_constants();
    folded_ok = folded_agrees();
    if (folded_ok) {
      export_fn(env, exports, "blocksFolded", blocks_folded);
      export_read(env, exports, "readBlocksFolded", blocks_folded);
    }
  }
  return exports;
}
#else
static napi_value init(napi_env env, napi_value exports) { return exports; }
#endif

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
