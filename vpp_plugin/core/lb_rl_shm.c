/*
 * lb_rl_shm.c — the shared-memory protocol (see lb_rl_shm.h and SHM.md).
 *
 * Memory ordering: the commit words (frame seq, *_seq_latest, status gen) are
 * accessed with the gcc/clang __atomic builtins, which are available in C99
 * mode (the C11 <stdatomic.h> is not). Writer: seq = 0 (relaxed), release
 * fence, payload stores, checksum, seq = final (release), latest = final
 * (release). Reader: latest (acquire), s1 = seq of latest's slot (acquire),
 * copy, acquire fence, s2 = seq (relaxed), retry unless s1 == s2 == latest,
 * then verify the checksum. The copy
 * races with a lapping writer by design (as in every seqlock); the seq recheck
 * and the checksum reject such copies.
 *
 * Everything a reader needs to index the region (S, K, ring lengths,
 * strides) is validated once at attach and cached in the handle: later
 * writes to the shared header by a faulty peer cannot make us read or write
 * out of bounds.
 */
#define _GNU_SOURCE /* link, ftruncate, getpid, clock_gettime with -std=c99 */
#include "lb_rl_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- layout pins: natural alignment must give exactly these offsets ---- */
#define LB_RL_SHM_PIN(type, field, off)                                                          \
  _Static_assert (offsetof (type, field) == (off), #type "." #field " offset")

_Static_assert (sizeof (lb_rl_shm_status_t) == 128, "status size");
_Static_assert (sizeof (lb_rl_shm_header_t) == LB_RL_SHM_HEADER_SIZE, "header size");
_Static_assert (sizeof (lb_rl_shm_out_frame_t) == LB_RL_SHM_OUT_FRAME_HDR_SIZE, "out hdr size");
_Static_assert (sizeof (lb_rl_shm_server_t) == LB_RL_SHM_SERVER_SIZE, "server size");
_Static_assert (sizeof (lb_rl_shm_in_frame_t) == LB_RL_SHM_IN_FRAME_HDR_SIZE, "in frame hdr size");
_Static_assert (sizeof (lb_rl_sample_t) == 16, "sample size");
_Static_assert (LB_RL_SHM_OUT_ACTIVE_OFFSET == LB_RL_SHM_OUT_FRAME_HDR_SIZE, "bitmap after hdr");
_Static_assert ((LB_RL_MAX_SERVERS + 63) / 64 == LB_RL_MAX_BITMAP_WORDS, "bitmap words");
/* the largest frame's offsets fit the header's u32 fields */
_Static_assert (128 + 8 * LB_RL_MAX_BITMAP_WORDS + (uint64_t) LB_RL_SHM_SERVER_SIZE
		    * LB_RL_MAX_SERVERS < (1ULL << 32), "u32 offsets");
LB_RL_SHM_PIN (lb_rl_shm_header_t, magic, 0);
LB_RL_SHM_PIN (lb_rl_shm_header_t, version, 8);
LB_RL_SHM_PIN (lb_rl_shm_header_t, header_size, 12);
LB_RL_SHM_PIN (lb_rl_shm_header_t, total_size, 16);
LB_RL_SHM_PIN (lb_rl_shm_header_t, max_servers, 24);
LB_RL_SHM_PIN (lb_rl_shm_header_t, reservoir_slots, 28);
LB_RL_SHM_PIN (lb_rl_shm_header_t, out_ring_len, 32);
LB_RL_SHM_PIN (lb_rl_shm_header_t, in_ring_len, 36);
LB_RL_SHM_PIN (lb_rl_shm_header_t, out_ring_offset, 40);
LB_RL_SHM_PIN (lb_rl_shm_header_t, out_frame_stride, 48);
LB_RL_SHM_PIN (lb_rl_shm_header_t, in_ring_offset, 56);
LB_RL_SHM_PIN (lb_rl_shm_header_t, in_frame_stride, 64);
LB_RL_SHM_PIN (lb_rl_shm_header_t, out_servers_offset, 72);
LB_RL_SHM_PIN (lb_rl_shm_header_t, out_samples_offset, 76);
LB_RL_SHM_PIN (lb_rl_shm_header_t, writer_pid, 80);
LB_RL_SHM_PIN (lb_rl_shm_header_t, writer_start_wall_s, 88);
LB_RL_SHM_PIN (lb_rl_shm_header_t, agent_pid, 96);
LB_RL_SHM_PIN (lb_rl_shm_header_t, agent_start_wall_s, 104);
LB_RL_SHM_PIN (lb_rl_shm_header_t, out_seq_latest, 112);
LB_RL_SHM_PIN (lb_rl_shm_header_t, in_seq_latest, 120);
LB_RL_SHM_PIN (lb_rl_shm_header_t, status, 128);
LB_RL_SHM_PIN (lb_rl_shm_status_t, gen, 0);
LB_RL_SHM_PIN (lb_rl_shm_status_t, in_seq_applied, 8);
LB_RL_SHM_PIN (lb_rl_shm_status_t, in_seq_seen, 16);
LB_RL_SHM_PIN (lb_rl_shm_status_t, weights_accepted, 24);
LB_RL_SHM_PIN (lb_rl_shm_status_t, weights_rejected, 32);
LB_RL_SHM_PIN (lb_rl_shm_status_t, last_verdict, 40);
LB_RL_SHM_PIN (lb_rl_shm_status_t, fallback_active, 44);
LB_RL_SHM_PIN (lb_rl_shm_status_t, fallback_count, 48);
LB_RL_SHM_PIN (lb_rl_shm_status_t, last_accept_time_s, 56);
LB_RL_SHM_PIN (lb_rl_shm_status_t, last_accept_wall_s, 64);
LB_RL_SHM_PIN (lb_rl_shm_status_t, fallback_timeout_s, 72);
LB_RL_SHM_PIN (lb_rl_shm_status_t, last_in_advance_time_s, 80);
LB_RL_SHM_PIN (lb_rl_shm_out_frame_t, seq, 0);
LB_RL_SHM_PIN (lb_rl_shm_out_frame_t, checksum, 8);
LB_RL_SHM_PIN (lb_rl_shm_out_frame_t, time_s, 16);
LB_RL_SHM_PIN (lb_rl_shm_out_frame_t, n_active, 32);
LB_RL_SHM_PIN (lb_rl_shm_out_frame_t, active_words, 36);
LB_RL_SHM_PIN (lb_rl_shm_out_frame_t, in_seq_applied, 40);
LB_RL_SHM_PIN (lb_rl_shm_out_frame_t, n_servers, 48);
LB_RL_SHM_PIN (lb_rl_shm_out_frame_t, fallback_active, 56);
LB_RL_SHM_PIN (lb_rl_shm_out_frame_t, packets, 64);
LB_RL_SHM_PIN (lb_rl_shm_out_frame_t, weight_updates, 120);
LB_RL_SHM_PIN (lb_rl_shm_server_t, n_samples, 48);
LB_RL_SHM_PIN (lb_rl_shm_server_t, weight, 64);
LB_RL_SHM_PIN (lb_rl_shm_server_t, fill, 72);
LB_RL_SHM_PIN (lb_rl_shm_server_t, n_flow_pending, 80);
LB_RL_SHM_PIN (lb_rl_shm_server_t, n_flow_untracked, 88);
LB_RL_SHM_PIN (lb_rl_shm_in_frame_t, time_s, 16);
LB_RL_SHM_PIN (lb_rl_shm_in_frame_t, n, 32);
LB_RL_SHM_PIN (lb_rl_shm_in_frame_t, weights, 64);

#define LB_RL_SHM_GOLDEN 0x9E3779B97F4A7C15ULL
/* Writers refuse to continue a sequence at or beyond 2^63 (only a corrupt region has one). */
#define LB_RL_SHM_SEQ_LIMIT (1ULL << 63)

struct lb_rl_shm
{
  uint8_t *base;
  uint64_t size;
  lb_rl_shm_header_t *hdr;
  int role;
  int fd;          /* >= 0 if lb_rl_shm_open owns the mapping */
  uint64_t map_len;
  /* layout, validated at attach and never re-read from the region */
  uint32_t n_servers, n_slots, out_len, in_len;
  uint64_t out_off, out_stride, in_off, in_stride;
  uint32_t srv_off, smp_off;
  /* heap scratch sized by S (a VPP process node's stack is small): the weights of a
   * publish, and the copy of a msg_in frame that poll_in examines */
  double *w_scratch;
  lb_rl_shm_in_frame_t *in_scratch;
  /* writer state */
  uint64_t out_next;    /* DATAPLANE: seq of the next msg_out frame */
  uint64_t out_pending; /* seq between out_begin and out_commit (0 = none) */
  uint64_t in_next;     /* AGENT: seq of the next msg_in frame */
  /* data-plane poll state */
  uint64_t in_seen;
  double last_advance_s;
  int have_advance;
  double fallback_timeout_s;
  lb_rl_shm_read_stats_t stats;
};

/* ---- errors ---- */
static __thread char lb_rl_shm_errbuf[512];

static int
lb_rl_shm_fail (int err, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (lb_rl_shm_errbuf, sizeof (lb_rl_shm_errbuf), fmt, ap);
  va_end (ap);
  return err;
}

const char *
lb_rl_shm_last_error (void)
{
  return lb_rl_shm_errbuf;
}

const char *
lb_rl_shm_strerror (int err)
{
  switch (err)
    {
    case LB_RL_SHM_OK:
      return "ok";
    case LB_RL_SHM_E_ARG:
      return "bad argument";
    case LB_RL_SHM_E_TOO_SMALL:
      return "region smaller than the shm header";
    case LB_RL_SHM_E_MAGIC:
      return "bad magic: not a MARLLB shm region";
    case LB_RL_SHM_E_VERSION:
      return "unsupported shm layout version";
    case LB_RL_SHM_E_HEADER:
      return "inconsistent shm header";
    case LB_RL_SHM_E_TRUNCATED:
      return "region truncated: shorter than header.total_size";
    case LB_RL_SHM_E_IO:
      return "I/O error";
    case LB_RL_SHM_E_NO_FRAME:
      return "no frame committed yet";
    case LB_RL_SHM_E_BUSY:
      return "frame kept changing during read retries";
    case LB_RL_SHM_E_CHECKSUM:
      return "frame checksum mismatch";
    case LB_RL_SHM_E_MISMATCH:
      return "region does not match the requested parameters or context";
    case LB_RL_SHM_E_NOMEM:
      return "out of memory";
    case LB_RL_SHM_E_ROLE:
      return "operation not allowed for this handle's role";
    default:
      return "unknown shm error";
    }
}

/* ---- layout ---- */
static uint64_t
lb_rl_shm_round_up (uint64_t x)
{
  return (x + LB_RL_SHM_ALIGN - 1) & ~(uint64_t) (LB_RL_SHM_ALIGN - 1);
}

void
lb_rl_shm_params_default (lb_rl_shm_params_t *p)
{
  p->max_servers = LB_RL_DEFAULT_MAX_SERVERS;
  p->reservoir_slots = LB_RL_SHM_MAX_RES_SLOTS;
  p->out_ring_len = LB_RL_SHM_DEFAULT_RING;
  p->in_ring_len = LB_RL_SHM_DEFAULT_RING;
}

static uint32_t
lb_rl_shm_active_words (uint32_t max_servers)
{
  return (max_servers + 63) / 64;
}

static uint64_t
lb_rl_shm_servers_offset (uint32_t max_servers)
{
  return lb_rl_shm_round_up (LB_RL_SHM_OUT_ACTIVE_OFFSET
			     + 8 * (uint64_t) lb_rl_shm_active_words (max_servers));
}

static uint64_t
lb_rl_shm_samples_offset (uint32_t max_servers)
{
  return lb_rl_shm_round_up (lb_rl_shm_servers_offset (max_servers)
			     + (uint64_t) max_servers * LB_RL_SHM_SERVER_SIZE);
}

uint64_t
lb_rl_shm_in_stride (uint32_t max_servers)
{
  if (max_servers < 1 || max_servers > LB_RL_MAX_SERVERS)
    return 0;
  return lb_rl_shm_round_up (LB_RL_SHM_IN_FRAME_HDR_SIZE + 8 * (uint64_t) max_servers);
}

uint64_t
lb_rl_shm_out_stride (uint32_t max_servers, uint32_t reservoir_slots)
{
  if (max_servers < 1 || max_servers > LB_RL_MAX_SERVERS || reservoir_slots < 1
      || reservoir_slots > LB_RL_SHM_MAX_RES_SLOTS)
    return 0;
  return lb_rl_shm_round_up (lb_rl_shm_samples_offset (max_servers)
			     + (uint64_t) max_servers * LB_RL_N_RES * reservoir_slots
				 * sizeof (lb_rl_sample_t));
}

static int
lb_rl_shm_ring_ok (uint32_t n)
{
  return n >= LB_RL_SHM_MIN_RING && n <= LB_RL_SHM_MAX_RING;
}

uint64_t
lb_rl_shm_size (const lb_rl_shm_params_t *p)
{
  uint64_t stride;
  if (!p || !lb_rl_shm_ring_ok (p->out_ring_len) || !lb_rl_shm_ring_ok (p->in_ring_len))
    return 0;
  stride = lb_rl_shm_out_stride (p->max_servers, p->reservoir_slots);
  if (!stride)
    return 0;
  return LB_RL_SHM_HEADER_SIZE + p->out_ring_len * stride
	 + (uint64_t) p->in_ring_len * lb_rl_shm_in_stride (p->max_servers);
}

uint64_t
lb_rl_shm_checksum (const void *frame, uint64_t frame_size, uint64_t seq)
{
  const uint8_t *b = (const uint8_t *) frame + LB_RL_SHM_PAYLOAD_OFFSET;
  uint64_t n = (frame_size - LB_RL_SHM_PAYLOAD_OFFSET) / 8, j, w;
  uint64_t c = seq * LB_RL_SHM_GOLDEN;
  for (j = 0; j < n; j++)
    {
      memcpy (&w, b + 8 * j, 8); /* little-endian hosts only (checked at format) */
      c += w * (2 * j + 1);
    }
  return c;
}

static double
lb_rl_shm_wall_now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

static uint64_t
lb_rl_shm_load_acq (const uint64_t *p)
{
  return __atomic_load_n (p, __ATOMIC_ACQUIRE);
}

static void
lb_rl_shm_store_rel (uint64_t *p, uint64_t v)
{
  __atomic_store_n (p, v, __ATOMIC_RELEASE);
}

/* Mark a seqlock word "being written": relaxed store, then a release fence so
 * the payload stores that follow cannot become visible before it. */
static void
lb_rl_shm_invalidate (uint64_t *p, uint64_t v)
{
  __atomic_store_n (p, v, __ATOMIC_RELAXED);
  __atomic_thread_fence (__ATOMIC_RELEASE);
}

/* ---- format / validate / attach ---- */
int
lb_rl_shm_format (void *base, uint64_t size, const lb_rl_shm_params_t *p)
{
  lb_rl_shm_header_t *h = base;
  uint64_t need = lb_rl_shm_size (p), stride;
  const uint16_t one = 1;
  if (*(const uint8_t *) &one != 1)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "the shm layout is little-endian only");
  if (!base || ((uintptr_t) base % 8) != 0)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "shm base must be non-NULL and 8-byte aligned");
  if (!need)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG,
			   "shm params out of range (max_servers 1..%d, reservoir_slots 1..%d, "
			   "rings %d..%d)",
			   LB_RL_MAX_SERVERS, LB_RL_SHM_MAX_RES_SLOTS, LB_RL_SHM_MIN_RING,
			   LB_RL_SHM_MAX_RING);
  if (size < need)
    return lb_rl_shm_fail (LB_RL_SHM_E_TOO_SMALL, "region of %llu bytes < %llu needed",
			   (unsigned long long) size, (unsigned long long) need);
  stride = lb_rl_shm_out_stride (p->max_servers, p->reservoir_slots);
  memset (base, 0, need);
  h->version = LB_RL_SHM_VERSION;
  h->header_size = LB_RL_SHM_HEADER_SIZE;
  h->total_size = need;
  h->max_servers = p->max_servers;
  h->reservoir_slots = p->reservoir_slots;
  h->out_ring_len = p->out_ring_len;
  h->in_ring_len = p->in_ring_len;
  h->out_ring_offset = LB_RL_SHM_HEADER_SIZE;
  h->out_frame_stride = stride;
  h->in_ring_offset = LB_RL_SHM_HEADER_SIZE + p->out_ring_len * stride;
  h->in_frame_stride = lb_rl_shm_in_stride (p->max_servers);
  h->out_servers_offset = (uint32_t) lb_rl_shm_servers_offset (p->max_servers);
  h->out_samples_offset = (uint32_t) lb_rl_shm_samples_offset (p->max_servers);
  h->writer_pid = (int64_t) getpid ();
  h->writer_start_wall_s = lb_rl_shm_wall_now ();
  h->status.fallback_timeout_s = LB_RL_SHM_DEFAULT_FALLBACK_MS / 1000.0;
  /* magic last: a region is recognisable only once complete */
  __atomic_store_n (&h->magic, (uint64_t) LB_RL_SHM_MAGIC, __ATOMIC_RELEASE);
  return LB_RL_SHM_OK;
}

int
lb_rl_shm_validate (const void *base, uint64_t size)
{
  const lb_rl_shm_header_t *h = base;
  lb_rl_shm_params_t p;
  uint64_t need, stride;
  if (!base || ((uintptr_t) base % 8) != 0)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "shm base must be non-NULL and 8-byte aligned");
  if (size < LB_RL_SHM_HEADER_SIZE)
    return lb_rl_shm_fail (LB_RL_SHM_E_TOO_SMALL,
			   "region is %llu bytes, smaller than the %d-byte header",
			   (unsigned long long) size, LB_RL_SHM_HEADER_SIZE);
  if (h->magic != (uint64_t) LB_RL_SHM_MAGIC)
    return lb_rl_shm_fail (LB_RL_SHM_E_MAGIC, "bad magic 0x%016llx (expected 0x%016llx)",
			   (unsigned long long) h->magic,
			   (unsigned long long) LB_RL_SHM_MAGIC);
  if (h->version != LB_RL_SHM_VERSION)
    return lb_rl_shm_fail (LB_RL_SHM_E_VERSION, "layout version %u (this build reads %d)",
			   h->version, LB_RL_SHM_VERSION);
  if (h->header_size != LB_RL_SHM_HEADER_SIZE)
    return lb_rl_shm_fail (LB_RL_SHM_E_HEADER, "header_size %u (expected %d)",
			   h->header_size, LB_RL_SHM_HEADER_SIZE);
  p.max_servers = h->max_servers;
  p.reservoir_slots = h->reservoir_slots;
  p.out_ring_len = h->out_ring_len;
  p.in_ring_len = h->in_ring_len;
  need = lb_rl_shm_size (&p);
  if (!need)
    return lb_rl_shm_fail (LB_RL_SHM_E_HEADER,
			   "parameters out of range: max_servers %u, reservoir_slots %u, "
			   "out_ring_len %u, in_ring_len %u",
			   p.max_servers, p.reservoir_slots, p.out_ring_len, p.in_ring_len);
  stride = lb_rl_shm_out_stride (p.max_servers, p.reservoir_slots);
  if (h->out_ring_offset != LB_RL_SHM_HEADER_SIZE || h->out_frame_stride != stride
      || h->in_ring_offset != LB_RL_SHM_HEADER_SIZE + p.out_ring_len * stride
      || h->in_frame_stride != lb_rl_shm_in_stride (p.max_servers)
      || h->out_servers_offset != lb_rl_shm_servers_offset (p.max_servers)
      || h->out_samples_offset != lb_rl_shm_samples_offset (p.max_servers))
    return lb_rl_shm_fail (LB_RL_SHM_E_HEADER,
			   "ring offsets/strides in the header do not match max_servers %u, "
			   "reservoir_slots %u, rings %u/%u",
			   p.max_servers, p.reservoir_slots, p.out_ring_len, p.in_ring_len);
  if (h->total_size != need)
    return lb_rl_shm_fail (LB_RL_SHM_E_HEADER, "total_size %llu but the layout needs %llu",
			   (unsigned long long) h->total_size, (unsigned long long) need);
  if (size < need)
    return lb_rl_shm_fail (LB_RL_SHM_E_TRUNCATED, "region truncated: %llu bytes, header.total_size says %llu",
			   (unsigned long long) size, (unsigned long long) need);
  return LB_RL_SHM_OK;
}

static lb_rl_shm_out_frame_t *
lb_rl_shm_out_slot (const lb_rl_shm_t *s, uint64_t seq)
{
  return (lb_rl_shm_out_frame_t *) (s->base + s->out_off + (seq % s->out_len) * s->out_stride);
}

static lb_rl_shm_in_frame_t *
lb_rl_shm_in_slot (const lb_rl_shm_t *s, uint64_t seq)
{
  return (lb_rl_shm_in_frame_t *) (s->base + s->in_off + (seq % s->in_len) * s->in_stride);
}

static void
lb_rl_shm_free_handle (lb_rl_shm_t *s)
{
  free (s->w_scratch);
  free (s->in_scratch);
  free (s);
}

int
lb_rl_shm_attach (void *base, uint64_t size, int role, lb_rl_shm_t **out)
{
  lb_rl_shm_t *s;
  lb_rl_shm_header_t *h = base;
  uint64_t m, i, v;
  int rc;
  if (!out)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "out is NULL");
  *out = NULL;
  if (role != LB_RL_SHM_ROLE_READER && role != LB_RL_SHM_ROLE_DATAPLANE
      && role != LB_RL_SHM_ROLE_AGENT)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "unknown role %d", role);
  rc = lb_rl_shm_validate (base, size);
  if (rc)
    return rc;
  s = calloc (1, sizeof (*s));
  if (!s)
    return lb_rl_shm_fail (LB_RL_SHM_E_NOMEM, "out of memory");
  s->base = base;
  s->size = size;
  s->hdr = h;
  s->role = role;
  s->fd = -1;
  s->n_servers = h->max_servers;
  s->n_slots = h->reservoir_slots;
  s->out_len = h->out_ring_len;
  s->in_len = h->in_ring_len;
  s->out_off = h->out_ring_offset;
  s->out_stride = h->out_frame_stride;
  s->in_off = h->in_ring_offset;
  s->in_stride = h->in_frame_stride;
  s->srv_off = h->out_servers_offset;
  s->smp_off = h->out_samples_offset;
  s->w_scratch = calloc (s->n_servers, sizeof (double));
  s->in_scratch = malloc (s->in_stride);
  if (!s->w_scratch || !s->in_scratch)
    {
      lb_rl_shm_free_handle (s);
      return lb_rl_shm_fail (LB_RL_SHM_E_NOMEM, "out of memory");
    }

  if (role == LB_RL_SHM_ROLE_DATAPLANE)
    {
      /* continue the msg_out sequence after the highest seq in the region */
      m = lb_rl_shm_load_acq (&h->out_seq_latest);
      for (i = 0; i < s->out_len; i++)
	{
	  v = lb_rl_shm_load_acq (&lb_rl_shm_out_slot (s, i)->seq);
	  m = v > m ? v : m;
	}
      if (m >= LB_RL_SHM_SEQ_LIMIT)
	{
	  lb_rl_shm_free_handle (s);
	  return lb_rl_shm_fail (LB_RL_SHM_E_HEADER,
				 "msg_out sequence %llu is beyond 2^63: corrupt region",
				 (unsigned long long) m);
	}
      s->out_next = m + 1;
      s->in_seen = h->status.in_seq_seen;
      s->fallback_timeout_s = h->status.fallback_timeout_s;
      h->writer_pid = (int64_t) getpid ();
      h->writer_start_wall_s = lb_rl_shm_wall_now ();
    }
  else if (role == LB_RL_SHM_ROLE_AGENT)
    {
      /* strictly increasing across agent restarts: start above every seq the
       * region has seen (latest, any slot, what the data plane examined) */
      m = lb_rl_shm_load_acq (&h->in_seq_latest);
      for (i = 0; i < s->in_len; i++)
	{
	  v = lb_rl_shm_load_acq (&lb_rl_shm_in_slot (s, i)->seq);
	  m = v > m ? v : m;
	}
      v = lb_rl_shm_load_acq (&h->status.in_seq_seen);
      m = v > m ? v : m;
      if (m >= LB_RL_SHM_SEQ_LIMIT)
	{
	  lb_rl_shm_free_handle (s);
	  return lb_rl_shm_fail (LB_RL_SHM_E_HEADER,
				 "msg_in sequence %llu is beyond 2^63: corrupt region",
				 (unsigned long long) m);
	}
      s->in_next = m + 1;
      h->agent_pid = (int64_t) getpid ();
      h->agent_start_wall_s = lb_rl_shm_wall_now ();
    }
  *out = s;
  return LB_RL_SHM_OK;
}

static int
lb_rl_shm_params_equal (const lb_rl_shm_header_t *h, const lb_rl_shm_params_t *p)
{
  return h->max_servers == p->max_servers && h->reservoir_slots == p->reservoir_slots
	 && h->out_ring_len == p->out_ring_len && h->in_ring_len == p->in_ring_len;
}

/* Create path formatted for p, atomically (temp file + link). Returns 0 and a
 * mapping, 1 if path appeared meanwhile (caller attaches), or an error. */
static int
lb_rl_shm_create_file (const char *path, const lb_rl_shm_params_t *p, int *fd_out,
		       void **map_out, uint64_t *len_out)
{
  static unsigned counter;
  char tmp[4096];
  uint64_t len = lb_rl_shm_size (p);
  void *map;
  int fd, rc;
  if (!len)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "%s: shm params out of range", path);
  if (snprintf (tmp, sizeof (tmp), "%s.tmp.%ld.%u", path, (long) getpid (),
		__atomic_fetch_add (&counter, 1, __ATOMIC_RELAXED))
      >= (int) sizeof (tmp))
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "path too long: %s", path);
  fd = open (tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0)
    return lb_rl_shm_fail (LB_RL_SHM_E_IO, "%s: create %s: %s", path, tmp, strerror (errno));
  if (ftruncate (fd, (off_t) len) != 0)
    {
      rc = lb_rl_shm_fail (LB_RL_SHM_E_IO, "%s: ftruncate: %s", path, strerror (errno));
      goto fail_fd;
    }
  map = mmap (NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED)
    {
      rc = lb_rl_shm_fail (LB_RL_SHM_E_IO, "%s: mmap: %s", path, strerror (errno));
      goto fail_fd;
    }
  rc = lb_rl_shm_format (map, len, p);
  if (rc)
    goto fail_map;
  if (link (tmp, path) != 0)
    {
      if (errno == EEXIST)
	rc = 1;
      else
	rc = lb_rl_shm_fail (LB_RL_SHM_E_IO, "%s: link from %s: %s", path, tmp,
			     strerror (errno));
      goto fail_map;
    }
  unlink (tmp);
  *fd_out = fd;
  *map_out = map;
  *len_out = len;
  return 0;
fail_map:
  munmap (map, len);
fail_fd:
  close (fd);
  unlink (tmp);
  return rc;
}

int
lb_rl_shm_open (const char *path, const lb_rl_shm_params_t *p, int role, lb_rl_shm_t **out)
{
  int writable = role != LB_RL_SHM_ROLE_READER;
  int fd, rc, attempt;
  struct stat st;
  void *map = NULL;
  uint64_t len = 0;
  if (!out || !path)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "path or out is NULL");
  *out = NULL;
  for (attempt = 0; attempt < 2; attempt++)
    {
      fd = open (path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
      if (fd >= 0)
	break;
      if (errno != ENOENT || !p || !writable)
	return lb_rl_shm_fail (LB_RL_SHM_E_IO, "%s: open: %s", path, strerror (errno));
      rc = lb_rl_shm_create_file (path, p, &fd, &map, &len);
      if (rc == 0)
	break;
      if (rc != 1)
	return rc;
      /* someone created it meanwhile: attach to theirs */
    }
  if (fd < 0)
    return lb_rl_shm_fail (LB_RL_SHM_E_IO, "%s: could not open or create", path);
  if (!map)
    {
      if (fstat (fd, &st) != 0)
	{
	  rc = lb_rl_shm_fail (LB_RL_SHM_E_IO, "%s: fstat: %s", path, strerror (errno));
	  close (fd);
	  return rc;
	}
      len = (uint64_t) st.st_size;
      if (len < LB_RL_SHM_HEADER_SIZE)
	{
	  close (fd);
	  return lb_rl_shm_fail (LB_RL_SHM_E_TOO_SMALL,
				 "%s: file is %llu bytes, smaller than the %d-byte header", path,
				 (unsigned long long) len, LB_RL_SHM_HEADER_SIZE);
	}
      map = mmap (NULL, len, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
      if (map == MAP_FAILED)
	{
	  rc = lb_rl_shm_fail (LB_RL_SHM_E_IO, "%s: mmap: %s", path, strerror (errno));
	  close (fd);
	  return rc;
	}
    }
  rc = lb_rl_shm_validate (map, len);
  if (rc == 0 && p && !lb_rl_shm_params_equal (map, p))
    {
      const lb_rl_shm_header_t *h = map;
      rc = lb_rl_shm_fail (LB_RL_SHM_E_MISMATCH,
			   "existing region has max_servers %u, reservoir_slots %u, rings %u/%u; "
			   "asked for %u, %u, %u/%u",
			   h->max_servers, h->reservoir_slots, h->out_ring_len, h->in_ring_len,
			   p->max_servers, p->reservoir_slots, p->out_ring_len, p->in_ring_len);
    }
  if (rc == 0)
    rc = lb_rl_shm_attach (map, len, role, out);
  if (rc)
    {
      char detail[512];
      snprintf (detail, sizeof (detail), "%s", lb_rl_shm_last_error ());
      munmap (map, len);
      close (fd);
      if (strncmp (detail, path, strlen (path)) == 0)
	return lb_rl_shm_fail (rc, "%s", detail);
      return lb_rl_shm_fail (rc, "%s: %s", path, detail);
    }
  (*out)->fd = fd;
  (*out)->map_len = len;
  return LB_RL_SHM_OK;
}

void
lb_rl_shm_close (lb_rl_shm_t *shm)
{
  if (!shm)
    return;
  if (shm->fd >= 0)
    {
      munmap (shm->base, shm->map_len);
      close (shm->fd);
    }
  lb_rl_shm_free_handle (shm);
}

lb_rl_shm_header_t *
lb_rl_shm_header (lb_rl_shm_t *shm)
{
  return shm ? shm->hdr : NULL;
}

uint64_t
lb_rl_shm_next_seq (const lb_rl_shm_t *shm)
{
  if (!shm)
    return 0;
  if (shm->role == LB_RL_SHM_ROLE_DATAPLANE)
    return shm->out_next;
  if (shm->role == LB_RL_SHM_ROLE_AGENT)
    return shm->in_next;
  return 0;
}

void
lb_rl_shm_read_stats (const lb_rl_shm_t *shm, lb_rl_shm_read_stats_t *out)
{
  *out = shm->stats;
}

/* ---- msg_out ---- */
uint64_t *
lb_rl_shm_frame_active (const lb_rl_shm_t *shm, lb_rl_shm_out_frame_t *f)
{
  (void) shm;
  return (uint64_t *) ((uint8_t *) f + LB_RL_SHM_OUT_ACTIVE_OFFSET);
}

lb_rl_shm_server_t *
lb_rl_shm_frame_server (const lb_rl_shm_t *shm, lb_rl_shm_out_frame_t *f, uint32_t idx)
{
  if (idx >= shm->n_servers)
    return NULL;
  return (lb_rl_shm_server_t *) ((uint8_t *) f + shm->srv_off
				 + (uint64_t) idx * LB_RL_SHM_SERVER_SIZE);
}

lb_rl_sample_t *
lb_rl_shm_frame_samples (const lb_rl_shm_t *shm, lb_rl_shm_out_frame_t *f, uint32_t idx,
			 uint32_t kind)
{
  if (idx >= shm->n_servers || kind >= LB_RL_N_RES)
    return NULL;
  return (lb_rl_sample_t *) ((uint8_t *) f + shm->smp_off)
	 + ((uint64_t) idx * LB_RL_N_RES + kind) * shm->n_slots;
}

lb_rl_shm_out_frame_t *
lb_rl_shm_out_begin (lb_rl_shm_t *shm, uint64_t *seq_out)
{
  lb_rl_shm_out_frame_t *f;
  if (!shm || shm->role != LB_RL_SHM_ROLE_DATAPLANE)
    return NULL;
  shm->out_pending = shm->out_next++;
  f = lb_rl_shm_out_slot (shm, shm->out_pending);
  lb_rl_shm_invalidate (&f->seq, 0);
  f->n_servers = shm->n_servers;
  f->reservoir_slots = shm->n_slots;
  f->active_words = lb_rl_shm_active_words (shm->n_servers);
  if (seq_out)
    *seq_out = shm->out_pending;
  return f;
}

uint64_t
lb_rl_shm_out_commit (lb_rl_shm_t *shm, lb_rl_shm_out_frame_t *f)
{
  uint64_t seq = shm->out_pending;
  if (!seq || f != lb_rl_shm_out_slot (shm, seq))
    return 0;
  f->checksum = lb_rl_shm_checksum (f, shm->out_stride, seq);
  lb_rl_shm_store_rel (&f->seq, seq);
  lb_rl_shm_store_rel (&shm->hdr->out_seq_latest, seq);
  shm->out_pending = 0;
  return seq;
}

int
lb_rl_shm_publish (lb_rl_shm_t *shm, const lb_rl_ctx_t *ctx, double now_s, double wall_s,
		   uint64_t *seq_out)
{
  const lb_rl_config_t *cfg;
  lb_rl_counters_t cc;
  lb_rl_server_counters_t sc;
  lb_rl_shm_out_frame_t *f;
  lb_rl_shm_server_t *sv;
  lb_rl_sample_t *smp;
  double *w = shm ? shm->w_scratch : NULL;
  uint64_t *active;
  uint32_t i, k, n_ctx, got, n_active = 0;
  uint64_t seq;
  if (!shm || !ctx)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "shm or ctx is NULL");
  if (shm->role != LB_RL_SHM_ROLE_DATAPLANE)
    return lb_rl_shm_fail (LB_RL_SHM_E_ROLE, "publish needs a DATAPLANE handle");
  cfg = lb_rl_get_config (ctx);
  n_ctx = cfg->max_servers;
  if (n_ctx > shm->n_servers)
    return lb_rl_shm_fail (LB_RL_SHM_E_MISMATCH, "context has %u servers, region holds %u",
			   n_ctx, shm->n_servers);
  memset (w, 0, shm->n_servers * sizeof (double));
  lb_rl_get_weights (ctx, w);
  lb_rl_counters (ctx, &cc);

  f = lb_rl_shm_out_begin (shm, NULL);
  memset ((uint8_t *) f + LB_RL_SHM_PAYLOAD_OFFSET, 0,
	  shm->out_stride - LB_RL_SHM_PAYLOAD_OFFSET);
  f->time_s = now_s;
  f->wall_s = wall_s;
  active = lb_rl_shm_frame_active (shm, f);
  f->active_words = lb_rl_shm_active_words (shm->n_servers);
  lb_rl_servers_present (ctx, active, f->active_words);
  for (i = 0; i < f->active_words; i++)
    n_active += (uint32_t) __builtin_popcountll (active[i]);
  f->n_active = n_active;
  f->in_seq_applied = shm->hdr->status.in_seq_applied;
  f->n_servers = shm->n_servers;
  f->reservoir_slots = shm->n_slots;
  f->fallback_active = shm->hdr->status.fallback_active;
  f->tracked_flows = cc.tracked_flows;
  f->packets = cc.packets;
  f->new_flows = cc.new_flows;
  f->untracked_full = cc.untracked_full;
  f->untracked_miss = cc.untracked_miss;
  f->flows_lost = cc.flows_lost;
  f->timeouts = cc.timeouts;
  f->no_server = cc.no_server;
  f->weight_updates = cc.weight_updates;
  for (i = 0; i < n_ctx; i++)
    {
      sv = lb_rl_shm_frame_server (shm, f, i);
      sv->weight = w[i];
      if (lb_rl_server_counters (ctx, i, &sc) == LB_RL_OK)
	{
	  sv->n_flow_on = sc.n_flow_on;
	  sv->n_flow_pending = sc.n_flow_pending;
	  sv->n_flow_untracked = sc.n_flow_untracked;
	  sv->n_flow_new = sc.n_flow_new;
	  sv->n_flow_closed = sc.n_flow_closed;
	  sv->n_flow_timeout = sc.n_flow_timeout;
	  sv->packets = sc.packets;
	  sv->bytes = sc.bytes;
	  for (k = 0; k < LB_RL_N_RES; k++)
	    sv->n_samples[k] = sc.n_samples[k];
	}
      for (k = 0; k < LB_RL_N_RES; k++)
	{
	  smp = lb_rl_shm_frame_samples (shm, f, i, k);
	  got = lb_rl_reservoir_read (ctx, i, (lb_rl_res_kind_t) k, smp, shm->n_slots);
	  sv->fill[k] = got > shm->n_slots ? shm->n_slots : got;
	}
    }
  seq = lb_rl_shm_out_commit (shm, f);
  if (seq_out)
    *seq_out = seq;
  return LB_RL_SHM_OK;
}

/* Seqlock copy of the frame committed with the highest seq in a ring.
 * latest_p: the ring's latest field; slot(seq) gives a frame; size bytes. */
static int
lb_rl_shm_read_frame (lb_rl_shm_t *shm, const uint64_t *latest_p, int is_out, void *dst,
		      uint64_t size)
{
  uint64_t latest, s1, s2;
  uint64_t cs_fail_seq = 0;
  const uint64_t *seqp;
  const void *src;
  int tries;
  for (tries = 0; tries < LB_RL_SHM_READ_RETRIES; tries++)
    {
      latest = lb_rl_shm_load_acq (latest_p);
      if (latest == 0)
	return lb_rl_shm_fail (LB_RL_SHM_E_NO_FRAME, "no frame committed yet");
      src = is_out ? (const void *) lb_rl_shm_out_slot (shm, latest)
		   : (const void *) lb_rl_shm_in_slot (shm, latest);
      seqp = (const uint64_t *) src;
      s1 = lb_rl_shm_load_acq (seqp);
      /* exactly the frame latest names: 0 = being rewritten, anything else =
       * lapped (a newer frame whose latest update we have not seen yet: taking
       * it would let a later read return an older seq) or corrupt */
      if (s1 != latest)
	{
	  shm->stats.retries++;
	  continue;
	}
      memcpy (dst, src, size);
      __atomic_thread_fence (__ATOMIC_ACQUIRE);
      s2 = __atomic_load_n (seqp, __ATOMIC_RELAXED);
      if (s2 != s1)
	{
	  shm->stats.retries++;
	  continue;
	}
      ((uint64_t *) dst)[0] = s1;
      if (lb_rl_shm_checksum (dst, size, s1) != ((const uint64_t *) dst)[1])
	{
	  /* impossible for a correct writer under the seqlock; a weakly ordered
	   * writer may expose a stable seq over a torn payload: retry, and report
	   * corruption only if the same frame keeps failing */
	  shm->stats.checksum_failures++;
	  if (cs_fail_seq == s1 && tries >= 3)
	    return lb_rl_shm_fail (LB_RL_SHM_E_CHECKSUM, "frame seq %llu fails its checksum",
				   (unsigned long long) s1);
	  cs_fail_seq = s1;
	  continue;
	}
      shm->stats.reads++;
      return LB_RL_SHM_OK;
    }
  if (cs_fail_seq)
    return lb_rl_shm_fail (LB_RL_SHM_E_CHECKSUM, "frame seq %llu fails its checksum",
			   (unsigned long long) cs_fail_seq);
  return lb_rl_shm_fail (LB_RL_SHM_E_BUSY, "frame changed during %d read attempts",
			 LB_RL_SHM_READ_RETRIES);
}

int
lb_rl_shm_read_out (lb_rl_shm_t *shm, lb_rl_shm_out_frame_t *dst, uint64_t dst_size)
{
  if (!shm || !dst)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "shm or dst is NULL");
  if (dst_size < shm->out_stride)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "dst_size %llu < out_frame_stride %llu",
			   (unsigned long long) dst_size, (unsigned long long) shm->out_stride);
  return lb_rl_shm_read_frame (shm, &shm->hdr->out_seq_latest, 1, dst, shm->out_stride);
}

/* ---- msg_in ---- */
int
lb_rl_shm_write_weights (lb_rl_shm_t *shm, const double *w, uint32_t n, double now_s,
			 double wall_s, uint64_t *seq_out)
{
  lb_rl_shm_in_frame_t *f;
  uint64_t seq;
  if (!shm || (!w && n))
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "shm or w is NULL");
  if (shm->role != LB_RL_SHM_ROLE_AGENT)
    return lb_rl_shm_fail (LB_RL_SHM_E_ROLE, "write_weights needs an AGENT handle");
  /* the frame holds S weights; the data plane judges n against its servers */
  if (n > shm->n_servers)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "n = %u > %u weights per frame (max_servers)", n,
			   shm->n_servers);
  seq = shm->in_next++;
  f = lb_rl_shm_in_slot (shm, seq);
  lb_rl_shm_invalidate (&f->seq, 0);
  memset ((uint8_t *) f + LB_RL_SHM_PAYLOAD_OFFSET, 0,
	  shm->in_stride - LB_RL_SHM_PAYLOAD_OFFSET);
  f->time_s = now_s;
  f->wall_s = wall_s;
  f->n = n;
  if (n)
    memcpy (f->weights, w, n * sizeof (double));
  f->checksum = lb_rl_shm_checksum (f, shm->in_stride, seq);
  lb_rl_shm_store_rel (&f->seq, seq);
  lb_rl_shm_store_rel (&shm->hdr->in_seq_latest, seq);
  if (seq_out)
    *seq_out = seq;
  return LB_RL_SHM_OK;
}

int
lb_rl_shm_read_in (lb_rl_shm_t *shm, lb_rl_shm_in_frame_t *dst, uint64_t dst_size)
{
  if (!shm || !dst)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "shm or dst is NULL");
  if (dst_size < shm->in_stride)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "dst_size %llu < in_frame_stride %llu",
			   (unsigned long long) dst_size, (unsigned long long) shm->in_stride);
  return lb_rl_shm_read_frame (shm, &shm->hdr->in_seq_latest, 0, dst, shm->in_stride);
}

void
lb_rl_shm_set_fallback_timeout (lb_rl_shm_t *shm, double timeout_s)
{
  lb_rl_shm_status_t *st;
  uint64_t g;
  if (!shm || shm->role != LB_RL_SHM_ROLE_DATAPLANE)
    return;
  shm->fallback_timeout_s = timeout_s;
  st = &shm->hdr->status;
  g = st->gen;
  lb_rl_shm_invalidate (&st->gen, g + 1);
  st->fallback_timeout_s = timeout_s;
  lb_rl_shm_store_rel (&st->gen, g + 2);
}

int
lb_rl_shm_poll_in (lb_rl_shm_t *shm, lb_rl_ctx_t *ctx, double now_s, double wall_s)
{
  lb_rl_shm_in_frame_t *fr;
  lb_rl_shm_status_t *st;
  uint64_t latest, g;
  int rc, verdict, result = LB_RL_SHM_POLL_NONE;
  if (!shm || !ctx)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "shm or ctx is NULL");
  if (shm->role != LB_RL_SHM_ROLE_DATAPLANE)
    return lb_rl_shm_fail (LB_RL_SHM_E_ROLE, "poll_in needs a DATAPLANE handle");
  st = &shm->hdr->status;
  fr = shm->in_scratch;
  if (!shm->have_advance)
    {
      /* the fallback clock starts at the first poll */
      shm->have_advance = 1;
      shm->last_advance_s = now_s;
    }
  latest = lb_rl_shm_load_acq (&shm->hdr->in_seq_latest);
  if (latest > shm->in_seen)
    {
      rc = lb_rl_shm_read_in (shm, fr, shm->in_stride);
      if (rc == LB_RL_SHM_E_BUSY)
	return LB_RL_SHM_POLL_BUSY;
      if (rc != LB_RL_SHM_OK && rc != LB_RL_SHM_E_CHECKSUM)
	return LB_RL_SHM_POLL_NONE;
      if (fr->seq <= shm->in_seen)
	return LB_RL_SHM_POLL_NONE;
      shm->in_seen = fr->seq;
      shm->last_advance_s = now_s;
      if (rc == LB_RL_SHM_E_CHECKSUM)
	verdict = LB_RL_SHM_W_CHECKSUM;
      else if (fr->n == 0 || fr->n > shm->n_servers)
	verdict = LB_RL_W_BAD_COUNT;
      else
	{
	  uint64_t present[LB_RL_MAX_BITMAP_WORDS]; /* 512 B */
	  uint32_t nw = lb_rl_servers_present (ctx, present, LB_RL_MAX_BITMAP_WORDS);
	  verdict = lb_rl_weights_validate (fr->weights, fr->n, present, nw);
	}
      if (verdict == LB_RL_W_OK)
	verdict = lb_rl_set_weights (ctx, fr->weights, fr->n);
      g = st->gen;
      lb_rl_shm_invalidate (&st->gen, g + 1);
      st->in_seq_seen = fr->seq;
      st->last_verdict = verdict;
      st->last_in_advance_time_s = now_s;
      if (verdict == LB_RL_W_OK)
	{
	  st->in_seq_applied = fr->seq;
	  st->weights_accepted++;
	  st->last_accept_time_s = now_s;
	  st->last_accept_wall_s = wall_s;
	  st->fallback_active = 0;
	  result = LB_RL_SHM_POLL_APPLIED;
	}
      else
	{
	  st->weights_rejected++;
	  result = LB_RL_SHM_POLL_REJECTED;
	}
      lb_rl_shm_store_rel (&st->gen, g + 2);
      return result;
    }
  if (shm->fallback_timeout_s > 0 && !st->fallback_active
      && now_s - shm->last_advance_s >= shm->fallback_timeout_s)
    {
      lb_rl_use_static_weights (ctx);
      g = st->gen;
      lb_rl_shm_invalidate (&st->gen, g + 1);
      st->fallback_active = 1;
      st->fallback_count++;
      lb_rl_shm_store_rel (&st->gen, g + 2);
      return LB_RL_SHM_POLL_FALLBACK;
    }
  return result;
}

int
lb_rl_shm_status (lb_rl_shm_t *shm, lb_rl_shm_status_t *out)
{
  const lb_rl_shm_status_t *st;
  uint64_t g1, g2;
  int tries;
  if (!shm || !out)
    return lb_rl_shm_fail (LB_RL_SHM_E_ARG, "shm or out is NULL");
  st = &shm->hdr->status;
  for (tries = 0; tries < LB_RL_SHM_READ_RETRIES; tries++)
    {
      g1 = lb_rl_shm_load_acq (&st->gen);
      if (g1 & 1)
	continue;
      memcpy (out, st, sizeof (*out));
      __atomic_thread_fence (__ATOMIC_ACQUIRE);
      g2 = __atomic_load_n (&st->gen, __ATOMIC_RELAXED);
      if (g1 == g2)
	return LB_RL_SHM_OK;
    }
  return lb_rl_shm_fail (LB_RL_SHM_E_BUSY, "status changed during %d read attempts",
			 LB_RL_SHM_READ_RETRIES);
}
