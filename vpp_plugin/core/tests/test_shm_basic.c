/*
 * test_shm_basic.c — shm layout, format/attach round trips, every validation
 * error (region untouched), file open without truncation, publish from a real
 * core context, the poll path's weight validation, the fallback timer and
 * sequence continuation across writer restarts.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lb_rl_shm.h"
#include "test_shm_util.h"

static uint64_t
r64 (uint64_t x)
{
  return (x + 63) / 64 * 64;
}

/* Independent layout arithmetic (SHM.md "Strides"). */
static uint64_t
expect_servers_off (uint64_t S)
{
  return r64 (128 + 8 * ((S + 63) / 64));
}

static uint64_t
expect_stride (uint64_t S, uint64_t K)
{
  return r64 (r64 (expect_servers_off (S) + 96 * S) + S * 2 * K * 16);
}

static uint64_t
expect_in_stride (uint64_t S)
{
  return r64 (64 + 8 * S);
}

static void *
alloc_region (uint64_t size)
{
  void *p = NULL;
  if (posix_memalign (&p, 64, size ? size : 64) != 0)
    return NULL;
  memset (p, 0xA5, size);
  return p;
}

static lb_rl_shm_params_t
params (uint32_t S, uint32_t K, uint32_t no, uint32_t ni)
{
  lb_rl_shm_params_t p;
  p.max_servers = S;
  p.reservoir_slots = K;
  p.out_ring_len = no;
  p.in_ring_len = ni;
  return p;
}

static void
test_layout (void)
{
  lb_rl_shm_params_t p;
  uint32_t S, K;
  lb_rl_shm_params_default (&p);
  CHECK_EQ (p.max_servers, 64);
  CHECK_EQ (p.reservoir_slots, 128);
  /* hand-computed (SHM.md examples): bitmap 1 word, servers at r64(136) = 192,
   * samples at 192 + 64*96 = 6336, + 64*2*128*16 = 262144; msg_in r64(64 + 512) = 576 */
  CHECK_EQ (lb_rl_shm_out_stride (64, 128), 6336 + 262144);
  CHECK_EQ (lb_rl_shm_in_stride (64), 576);
  CHECK_EQ (lb_rl_shm_size (&p), 256 + 4 * (6336 + 262144) + 4 * 576);
  /* S=2, K=4: samples at r64(192+192)=384, stride r64(384+256)=640, msg_in 128 */
  CHECK_EQ (lb_rl_shm_out_stride (2, 4), 640);
  CHECK_EQ (lb_rl_shm_in_stride (2), 128);
  /* S=1024: 16 bitmap words, servers at 256, samples at 98560; msg_in 8256 */
  CHECK_EQ (lb_rl_shm_out_stride (1024, 128), 98560 + 4194304);
  CHECK_EQ (lb_rl_shm_in_stride (1024), 8256);
  /* S=4096: 64 words, servers at 640, samples at 393856; K=128 -> ~17 MB a frame */
  CHECK_EQ (lb_rl_shm_out_stride (4096, 128), 17171072);
  CHECK_EQ (lb_rl_shm_out_stride (4096, 16), 2491008);
  CHECK_EQ (lb_rl_shm_in_stride (4096), 32832);
  p = params (4096, 128, 4, 4);
  CHECK_EQ (lb_rl_shm_size (&p), 68815872ULL);
  for (S = 1; S <= 4096; S += (S < 130 ? 7 : 331))
    for (K = 1; K <= 128; K += 13)
      {
	p = params (S, K, 3, 5);
	CHECK_EQ (lb_rl_shm_out_stride (S, K), expect_stride (S, K));
	CHECK_EQ (lb_rl_shm_in_stride (S), expect_in_stride (S));
	CHECK_EQ (lb_rl_shm_size (&p), 256 + 3 * expect_stride (S, K) + 5 * expect_in_stride (S));
	CHECK_EQ (lb_rl_shm_out_stride (S, K) % 64, 0);
      }
  CHECK_EQ (lb_rl_shm_out_stride (0, 4), 0);
  CHECK_EQ (lb_rl_shm_out_stride (4097, 4), 0);
  CHECK_EQ (lb_rl_shm_in_stride (0), 0);
  CHECK_EQ (lb_rl_shm_in_stride (4097), 0);
  CHECK_EQ (lb_rl_shm_out_stride (4, 0), 0);
  CHECK_EQ (lb_rl_shm_out_stride (4, 129), 0);
  p = params (4, 4, 1, 4);
  CHECK_EQ (lb_rl_shm_size (&p), 0);
  p = params (4, 4, 4, 65);
  CHECK_EQ (lb_rl_shm_size (&p), 0);
  /* magic spells MARLLBSH in memory */
  {
    uint64_t m = LB_RL_SHM_MAGIC;
    CHECK (memcmp (&m, "MARLLBSH", 8) == 0);
  }
}

static void
test_checksum (void)
{
  uint8_t buf[64];
  uint64_t words[6] = { 1, 2, 3, 4, 5, 6 }, c, expect = 0;
  int j;
  memset (buf, 0, sizeof buf);
  memcpy (buf + 16, words, sizeof words);
  for (j = 0; j < 6; j++)
    expect += words[j] * (2 * (uint64_t) j + 1);
  expect += 7 * 0x9E3779B97F4A7C15ULL;
  c = lb_rl_shm_checksum (buf, 64, 7);
  CHECK (c == expect);
  /* the seq and checksum words are not covered, every payload word is */
  buf[0] ^= 1;
  buf[8] ^= 1;
  CHECK (lb_rl_shm_checksum (buf, 64, 7) == c);
  for (j = 16; j < 64; j++)
    {
      buf[j] ^= 0x80;
      CHECK (lb_rl_shm_checksum (buf, 64, 7) != c);
      buf[j] ^= 0x80;
    }
  CHECK (lb_rl_shm_checksum (buf, 64, 8) != c);
}

static void
test_format_attach (void)
{
  lb_rl_shm_params_t p = params (3, 8, 4, 2);
  uint64_t size = lb_rl_shm_size (&p);
  void *mem = alloc_region (size);
  lb_rl_shm_t *shm = NULL;
  lb_rl_shm_header_t *h;
  CHECK_EQ (lb_rl_shm_format (mem, size - 1, &p), LB_RL_SHM_E_TOO_SMALL);
  CHECK_EQ (lb_rl_shm_format ((uint8_t *) mem + 4, size - 4, &p), LB_RL_SHM_E_ARG);
  CHECK_EQ (lb_rl_shm_format (mem, size, &p), LB_RL_SHM_OK);
  h = mem;
  CHECK (h->magic == (uint64_t) LB_RL_SHM_MAGIC);
  CHECK_EQ (h->version, LB_RL_SHM_VERSION);
  CHECK_EQ (h->total_size, size);
  CHECK_EQ (h->writer_pid, getpid ());
  CHECK (h->writer_start_wall_s > 1.5e9);
  CHECK_EQ (h->out_seq_latest, 0);
  CHECK_EQ (h->in_ring_offset, 256 + 4 * expect_stride (3, 8));
  CHECK (h->status.fallback_timeout_s == 1.0);
  CHECK_EQ (lb_rl_shm_validate (mem, size), LB_RL_SHM_OK);
  CHECK_EQ (lb_rl_shm_attach (mem, size, 7, &shm), LB_RL_SHM_E_ARG);
  CHECK (shm == NULL);
  CHECK_EQ (lb_rl_shm_attach (mem, size + 100, LB_RL_SHM_ROLE_READER, &shm), LB_RL_SHM_OK);
  CHECK (lb_rl_shm_header (shm) == h);
  {
    lb_rl_shm_out_frame_t *f = malloc (h->out_frame_stride);
    CHECK_EQ (lb_rl_shm_read_out (shm, f, h->out_frame_stride), LB_RL_SHM_E_NO_FRAME);
    CHECK_EQ (lb_rl_shm_read_out (shm, f, h->out_frame_stride - 1), LB_RL_SHM_E_ARG);
    CHECK (lb_rl_shm_out_begin (shm, NULL) == NULL); /* readers cannot write */
    free (f);
  }
  {
    double w = 1.0;
    CHECK_EQ (lb_rl_shm_write_weights (shm, &w, 1, 0, 0, NULL), LB_RL_SHM_E_ROLE);
  }
  lb_rl_shm_close (shm);
  free (mem);
}

/* Corrupt a copy of a good region with f(), expect err and an untouched region. */
static void
expect_invalid (const void *good, uint64_t size, uint64_t attach_size,
		void (*corrupt) (lb_rl_shm_header_t *), int err, const char *needle)
{
  void *mem = alloc_region (size);
  void *copy = alloc_region (size);
  lb_rl_shm_t *shm = (lb_rl_shm_t *) 1;
  int role;
  memcpy (mem, good, size);
  if (corrupt)
    corrupt (mem);
  memcpy (copy, mem, size);
  CHECK_EQ (lb_rl_shm_validate (mem, attach_size), err);
  for (role = 0; role < 3; role++)
    {
      CHECK_EQ (lb_rl_shm_attach (mem, attach_size, role, &shm), err);
      CHECK (shm == NULL);
      CHECK (strstr (lb_rl_shm_last_error (), needle) != NULL);
      if (!strstr (lb_rl_shm_last_error (), needle))
	fprintf (stderr, "  message was: %s\n", lb_rl_shm_last_error ());
    }
  CHECK (memcmp (mem, copy, size) == 0);
  free (mem);
  free (copy);
}

static void c_magic (lb_rl_shm_header_t *h) { h->magic ^= 1; }
static void c_version (lb_rl_shm_header_t *h) { h->version = 1; /* the 80-byte-record layout before n_flow_pending */ }
static void c_version2 (lb_rl_shm_header_t *h) { h->version = 2; /* 64 servers at most, one active word */ }
static void c_hsize (lb_rl_shm_header_t *h) { h->header_size = 128; }
static void c_servers0 (lb_rl_shm_header_t *h) { h->max_servers = 0; }
static void c_servers4097 (lb_rl_shm_header_t *h) { h->max_servers = 4097; }
static void c_srvoff (lb_rl_shm_header_t *h) { h->out_servers_offset = 128; /* version 2's */ }
static void c_instride (lb_rl_shm_header_t *h) { h->in_frame_stride = 576; /* version 2's */ }
static void c_slots (lb_rl_shm_header_t *h) { h->reservoir_slots = 129; }
static void c_ring (lb_rl_shm_header_t *h) { h->out_ring_len = 1; }
static void c_stride (lb_rl_shm_header_t *h) { h->out_frame_stride += 64; }
static void c_inoff (lb_rl_shm_header_t *h) { h->in_ring_offset -= 64; }
static void c_smpoff (lb_rl_shm_header_t *h) { h->out_samples_offset = 0; }
static void c_total (lb_rl_shm_header_t *h) { h->total_size += 64; }
/* a consistent header for more servers than the buffer holds: truncated */
static void c_more (lb_rl_shm_header_t *h)
{
  lb_rl_shm_params_t p = params (h->max_servers + 1, h->reservoir_slots, h->out_ring_len,
				 h->in_ring_len);
  uint64_t st = lb_rl_shm_out_stride (p.max_servers, p.reservoir_slots);
  h->max_servers = p.max_servers;
  h->out_frame_stride = st;
  h->out_servers_offset = (uint32_t) expect_servers_off (p.max_servers);
  h->out_samples_offset = (uint32_t) r64 (expect_servers_off (p.max_servers) + 96 * p.max_servers);
  h->in_ring_offset = 256 + p.out_ring_len * st;
  h->in_frame_stride = expect_in_stride (p.max_servers);
  h->total_size = lb_rl_shm_size (&p);
}

static void
test_validation_errors (void)
{
  lb_rl_shm_params_t p = params (5, 16, 4, 4);
  uint64_t size = lb_rl_shm_size (&p);
  void *good = alloc_region (size);
  lb_rl_shm_t *shm = (lb_rl_shm_t *) 1;
  CHECK_EQ (lb_rl_shm_format (good, size, &p), 0);
  CHECK_EQ (lb_rl_shm_attach (NULL, size, 0, &shm), LB_RL_SHM_E_ARG);
  expect_invalid (good, size, 0, NULL, LB_RL_SHM_E_TOO_SMALL, "smaller than the 256-byte");
  expect_invalid (good, size, 255, NULL, LB_RL_SHM_E_TOO_SMALL, "255 bytes");
  expect_invalid (good, size, size, c_magic, LB_RL_SHM_E_MAGIC, "bad magic");
  expect_invalid (good, size, size, c_version, LB_RL_SHM_E_VERSION, "layout version 1");
  expect_invalid (good, size, size, c_version2, LB_RL_SHM_E_VERSION,
		  "layout version 2 (this build reads 3)");
  expect_invalid (good, size, size, c_hsize, LB_RL_SHM_E_HEADER, "header_size 128");
  expect_invalid (good, size, size, c_servers0, LB_RL_SHM_E_HEADER, "max_servers 0");
  expect_invalid (good, size, size, c_servers4097, LB_RL_SHM_E_HEADER, "max_servers 4097");
  expect_invalid (good, size, size, c_srvoff, LB_RL_SHM_E_HEADER, "offsets/strides");
  expect_invalid (good, size, size, c_instride, LB_RL_SHM_E_HEADER, "offsets/strides");
  expect_invalid (good, size, size, c_slots, LB_RL_SHM_E_HEADER, "reservoir_slots 129");
  expect_invalid (good, size, size, c_ring, LB_RL_SHM_E_HEADER, "out_ring_len 1");
  expect_invalid (good, size, size, c_stride, LB_RL_SHM_E_HEADER, "offsets/strides");
  expect_invalid (good, size, size, c_inoff, LB_RL_SHM_E_HEADER, "offsets/strides");
  expect_invalid (good, size, size, c_smpoff, LB_RL_SHM_E_HEADER, "offsets/strides");
  expect_invalid (good, size, size, c_total, LB_RL_SHM_E_HEADER, "total_size");
  expect_invalid (good, size, size - 1, NULL, LB_RL_SHM_E_TRUNCATED, "truncated");
  expect_invalid (good, size, 256, NULL, LB_RL_SHM_E_TRUNCATED, "truncated: 256 bytes");
  expect_invalid (good, size, size, c_more, LB_RL_SHM_E_TRUNCATED, "header.total_size says");
  free (good);
}

/* ---- a real core context ---- */
static lb_rl_5tuple_t
key (uint32_t i)
{
  lb_rl_5tuple_t k;
  memset (&k, 0, sizeof k);
  k.src[10] = k.src[11] = k.dst[10] = k.dst[11] = 0xFF;
  k.src[12] = 10;
  k.src[14] = (uint8_t) (i >> 8);
  k.src[15] = (uint8_t) i;
  k.dst[12] = 10;
  k.dst[13] = 1;
  k.dst[15] = 1;
  k.src_port = (uint16_t) (1024 + i);
  k.dst_port = 80;
  k.proto = 6;
  return k;
}

static lb_rl_ctx_t *
make_ctx (uint32_t max_servers, uint32_t n_present, uint32_t K)
{
  lb_rl_config_t cfg;
  lb_rl_ctx_t *ctx;
  uint32_t i;
  lb_rl_config_default (&cfg);
  cfg.max_servers = max_servers;
  cfg.reservoir_size = K;
  cfg.table_size = 1024;
  cfg.policy = LB_RL_POLICY_SED;
  ctx = lb_rl_create (&cfg);
  if (!ctx)
    {
      fprintf (stderr, "lb_rl_create: %s\n", lb_rl_last_error ());
      exit (2);
    }
  for (i = 0; i < n_present; i++)
    lb_rl_server_add (ctx, i, 1.0 + i);
  return ctx;
}

/* Some traffic: flows open, carry ACKs, some close. */
static void
traffic (lb_rl_ctx_t *ctx, uint32_t n_flows)
{
  uint32_t i;
  for (i = 0; i < n_flows; i++)
    {
      lb_rl_5tuple_t k = key (i);
      double t = 0.01 * i;
      lb_rl_process (ctx, t, &k, LB_RL_TCP_SYN, 60);
      lb_rl_process (ctx, t + 0.001, &k, LB_RL_TCP_ACK, 52);
      lb_rl_process (ctx, t + 0.002, &k, LB_RL_TCP_ACK | LB_RL_TCP_PSH, 400);
      if (i % 3 == 0)
	lb_rl_process (ctx, t + 0.05, &k, LB_RL_TCP_FIN | LB_RL_TCP_ACK, 52);
    }
}

static void
test_publish_read (void)
{
  lb_rl_shm_params_t p = params (6, 8, 4, 4);
  uint64_t size = lb_rl_shm_size (&p), seq = 0;
  void *mem = alloc_region (size);
  lb_rl_shm_t *dp = NULL, *rd = NULL;
  lb_rl_ctx_t *ctx = make_ctx (5, 4, 16), *big = make_ctx (7, 1, 8);
  lb_rl_shm_out_frame_t *f;
  lb_rl_server_counters_t sc;
  lb_rl_counters_t cc;
  lb_rl_sample_t ref[16];
  double w[LB_RL_MAX_SERVERS];
  uint32_t i, k, n;
  CHECK_EQ (lb_rl_shm_format (mem, size, &p), 0);
  CHECK_EQ (lb_rl_shm_attach (mem, size, LB_RL_SHM_ROLE_DATAPLANE, &dp), 0);
  CHECK_EQ (lb_rl_shm_attach (mem, size, LB_RL_SHM_ROLE_READER, &rd), 0);
  CHECK_EQ (lb_rl_shm_publish (dp, big, 0, 0, &seq), LB_RL_SHM_E_MISMATCH);
  CHECK_EQ (lb_rl_shm_publish (rd, ctx, 0, 0, &seq), LB_RL_SHM_E_ROLE);
  traffic (ctx, 200);
  CHECK_EQ (lb_rl_shm_publish (dp, ctx, 12.5, 1.7e9, &seq), 0);
  CHECK_EQ (seq, 1);
  f = malloc (lb_rl_shm_header (rd)->out_frame_stride);
  CHECK_EQ (lb_rl_shm_read_out (rd, f, lb_rl_shm_header (rd)->out_frame_stride), 0);
  CHECK_EQ (f->seq, 1);
  CHECK (f->time_s == 12.5 && f->wall_s == 1.7e9);
  CHECK_EQ (f->active_words, 1);
  CHECK_EQ (f->n_active, 4);
  CHECK_EQ (lb_rl_shm_frame_active (rd, f)[0], 0xF);
  CHECK_EQ (f->n_servers, 6);
  CHECK_EQ (f->reservoir_slots, 8);
  lb_rl_counters (ctx, &cc);
  CHECK_EQ (f->packets, cc.packets);
  CHECK_EQ (f->packets, 200 * 3 + 67);
  CHECK_EQ (f->new_flows, cc.new_flows);
  CHECK_EQ (f->tracked_flows, cc.tracked_flows);
  lb_rl_get_weights (ctx, w);
  for (i = 0; i < 6; i++)
    {
      lb_rl_shm_server_t *sv = lb_rl_shm_frame_server (rd, f, i);
      if (i >= 5)
	{
	  /* beyond the context's servers: all zero */
	  CHECK (sv->n_flow_on == 0 && sv->packets == 0 && sv->weight == 0.0);
	  CHECK (sv->fill[0] == 0 && sv->fill[1] == 0);
	  continue;
	}
      lb_rl_server_counters (ctx, i, &sc);
      CHECK_EQ (sv->n_flow_on, sc.n_flow_on);
      CHECK_EQ (sv->n_flow_new, sc.n_flow_new);
      CHECK_EQ (sv->n_flow_closed, sc.n_flow_closed);
      CHECK_EQ (sv->packets, sc.packets);
      CHECK_EQ (sv->bytes, sc.bytes);
      CHECK_EQ (sv->n_samples[0], sc.n_samples[0]);
      CHECK (sv->weight == w[i]);
      for (k = 0; k < LB_RL_N_RES; k++)
	{
	  lb_rl_sample_t *smp = lb_rl_shm_frame_samples (rd, f, i, k);
	  n = lb_rl_reservoir_read (ctx, i, (lb_rl_res_kind_t) k, ref, 8);
	  CHECK_EQ (sv->fill[k], n);
	  CHECK (memcmp (smp, ref, n * sizeof (lb_rl_sample_t)) == 0);
	  for (; n < 8; n++)
	    CHECK (smp[n].t == 0.0 && smp[n].v == 0.0);
	}
    }
  /* the context had 16-slot reservoirs and real traffic: snapshots are full */
  CHECK_EQ (lb_rl_shm_frame_server (rd, f, 0)->fill[LB_RL_RES_FLOW_DURATION], 8);
  CHECK (lb_rl_shm_frame_server (rd, f, 0)->n_samples[LB_RL_RES_FCT] > 0);
  CHECK (lb_rl_shm_frame_server (rd, f, 0)->n_flow_on > 0);
  CHECK (lb_rl_shm_frame_samples (rd, f, 6, 0) == NULL);
  CHECK (lb_rl_shm_frame_samples (rd, f, 0, 2) == NULL);
  CHECK (lb_rl_shm_frame_server (rd, f, 6) == NULL);

  /* ring: seqs 2..9 wrap around 4 slots; latest always readable */
  for (i = 2; i <= 9; i++)
    {
      CHECK_EQ (lb_rl_shm_publish (dp, ctx, 12.5 + i, 0, &seq), 0);
      CHECK_EQ (seq, i);
      CHECK_EQ (lb_rl_shm_read_out (rd, f, lb_rl_shm_header (rd)->out_frame_stride), 0);
      CHECK_EQ (f->seq, i);
      CHECK (f->time_s == 12.5 + i);
    }
  CHECK_EQ (lb_rl_shm_header (rd)->out_seq_latest, 9);
  /* corrupt one payload byte of the committed latest frame: checksum error */
  {
    uint8_t *slot = (uint8_t *) mem + 256 + (9 % 4) * lb_rl_shm_header (rd)->out_frame_stride;
    lb_rl_shm_read_stats_t rs;
    slot[200] ^= 0x10;
    CHECK_EQ (lb_rl_shm_read_out (rd, f, lb_rl_shm_header (rd)->out_frame_stride),
	      LB_RL_SHM_E_CHECKSUM);
    CHECK (strstr (lb_rl_shm_last_error (), "seq 9") != NULL);
    lb_rl_shm_read_stats (rd, &rs);
    CHECK (rs.checksum_failures >= 1);
    slot[200] ^= 0x10;
    CHECK_EQ (lb_rl_shm_read_out (rd, f, lb_rl_shm_header (rd)->out_frame_stride), 0);
  }
  /* only the frame latest names is returned: slot 9 % 4 holds seq 9, a latest of 5
   * names the same slot, and taking 9 there could let a later read go back to 6 */
  lb_rl_shm_header (dp)->out_seq_latest = 5;
  CHECK_EQ (lb_rl_shm_read_out (rd, f, lb_rl_shm_header (rd)->out_frame_stride),
	    LB_RL_SHM_E_BUSY);
  lb_rl_shm_header (dp)->out_seq_latest = 8;
  CHECK_EQ (lb_rl_shm_read_out (rd, f, lb_rl_shm_header (rd)->out_frame_stride), 0);
  CHECK_EQ (f->seq, 8);
  lb_rl_shm_header (dp)->out_seq_latest = 9;
    /* a frame caught mid-write (seq 0) is never returned */
  {
    lb_rl_shm_out_frame_t *slot
      = (lb_rl_shm_out_frame_t *) ((uint8_t *) mem + 256
				   + (9 % 4) * lb_rl_shm_header (rd)->out_frame_stride);
    slot->seq = 0;
    CHECK_EQ (lb_rl_shm_read_out (rd, f, lb_rl_shm_header (rd)->out_frame_stride),
	      LB_RL_SHM_E_BUSY);
    slot->seq = 9;
  }
  free (f);
  lb_rl_shm_close (dp);
  lb_rl_shm_close (rd);
  lb_rl_destroy (ctx);
  lb_rl_destroy (big);
  free (mem);
}

/* ---- the poll path ---- */
struct poll_env
{
  void *mem;
  lb_rl_shm_t *dp, *ag;
  lb_rl_ctx_t *ctx;
};

static void
poll_env_init (struct poll_env *e)
{
  lb_rl_shm_params_t p = params (6, 4, 4, 4);
  uint64_t size = lb_rl_shm_size (&p);
  e->mem = alloc_region (size);
  CHECK_EQ (lb_rl_shm_format (e->mem, size, &p), 0);
  CHECK_EQ (lb_rl_shm_attach (e->mem, size, LB_RL_SHM_ROLE_DATAPLANE, &e->dp), 0);
  CHECK_EQ (lb_rl_shm_attach (e->mem, size, LB_RL_SHM_ROLE_AGENT, &e->ag), 0);
  /* servers 0..3 present with static weights 1, 2, 3, 4; 4 and 5 absent */
  e->ctx = make_ctx (6, 4, 4);
}

static void
poll_env_free (struct poll_env *e)
{
  lb_rl_shm_close (e->dp);
  lb_rl_shm_close (e->ag);
  lb_rl_destroy (e->ctx);
  free (e->mem);
}

static int
weights_equal (lb_rl_ctx_t *ctx, const double *expect, uint32_t n)
{
  double w[LB_RL_MAX_SERVERS];
  uint32_t i;
  lb_rl_get_weights (ctx, w);
  for (i = 0; i < n; i++)
    if (w[i] != expect[i])
      return 0;
  return 1;
}

static void
test_poll_validation (void)
{
  struct poll_env e;
  lb_rl_shm_status_t st;
  const double good[6] = { 2, 1, 1, 0.5, 0, 0 }, good2[6] = { 1, 1, 1, 1, 0, 0 };
  double bad[6];
  struct
  {
    double v;
    uint32_t at, n;
    int verdict;
  } cases[] = {
    { NAN, 1, 4, LB_RL_W_NONFINITE },
    { INFINITY, 0, 4, LB_RL_W_NONFINITE },
    { -INFINITY, 3, 4, LB_RL_W_NONFINITE },
    { -0.5, 2, 4, LB_RL_W_NEGATIVE },
    { 1.0, 4, 6, LB_RL_W_ABSENT_SERVER }, /* server 4 is not present */
    { 0.0, 0, 0, LB_RL_W_BAD_COUNT },     /* n = 0 */
  };
  uint32_t c, rejects = 0;
  uint64_t seq;
  poll_env_init (&e);
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 0.0, 0), LB_RL_SHM_POLL_NONE);
  CHECK_EQ (lb_rl_shm_poll_in (e.ag, e.ctx, 0.0, 0), LB_RL_SHM_E_ROLE);
  CHECK_EQ (lb_rl_shm_write_weights (e.ag, good, 4, 0.1, 100.0, &seq), 0);
  CHECK_EQ (seq, 1); /* the agent sequence starts at 1 */
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 0.1, 200.0), LB_RL_SHM_POLL_APPLIED);
  CHECK (weights_equal (e.ctx, good, 6));
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 0.2, 0), LB_RL_SHM_POLL_NONE);
  CHECK_EQ (lb_rl_shm_status (e.dp, &st), 0);
  CHECK_EQ (st.in_seq_applied, 1);
  CHECK_EQ (st.weights_accepted, 1);
  CHECK (st.last_accept_time_s == 0.1 && st.last_accept_wall_s == 200.0);
  CHECK_EQ (st.gen % 2, 0);

  for (c = 0; c < sizeof cases / sizeof cases[0]; c++)
    {
      memcpy (bad, good2, sizeof bad);
      bad[cases[c].at] = cases[c].v;
      CHECK_EQ (lb_rl_shm_write_weights (e.ag, bad, cases[c].n, 1.0 + c, 0, &seq), 0);
      CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 1.0 + c, 0), LB_RL_SHM_POLL_REJECTED);
      rejects++;
      CHECK (weights_equal (e.ctx, good, 6)); /* last good kept */
      CHECK_EQ (lb_rl_shm_status (e.dp, &st), 0);
      CHECK_EQ (st.last_verdict, cases[c].verdict);
      CHECK_EQ (st.weights_rejected, rejects);
      CHECK_EQ (st.in_seq_seen, seq);
      CHECK_EQ (st.in_seq_applied, 1);
    }
  /* all zero */
  memset (bad, 0, sizeof bad);
  CHECK_EQ (lb_rl_shm_write_weights (e.ag, bad, 6, 9, 0, &seq), 0);
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 9, 0), LB_RL_SHM_POLL_REJECTED);
  CHECK_EQ (lb_rl_shm_status (e.dp, &st), 0);
  CHECK_EQ (st.last_verdict, LB_RL_W_ALL_ZERO);
  CHECK_EQ (st.weights_rejected, ++rejects);
  /* n larger than the region's servers: our writer refuses it, and a frame that claims
   * it anyway (a foreign writer; checksum made to match) is rejected by the data plane */
  {
    double many[8] = { 1, 1, 1, 1, 0, 0, 0, 0 };
    lb_rl_shm_header_t *h = lb_rl_shm_header (e.dp);
    lb_rl_shm_in_frame_t *slot;
    CHECK_EQ (lb_rl_shm_write_weights (e.ag, many, 7, 10, 0, &seq), LB_RL_SHM_E_ARG);
    CHECK_EQ (lb_rl_shm_write_weights (e.ag, many, 6, 10, 0, &seq), 0);
    slot = (lb_rl_shm_in_frame_t *) ((uint8_t *) e.mem + h->in_ring_offset
				     + (seq % h->in_ring_len) * h->in_frame_stride);
    slot->n = 7;
    slot->checksum = lb_rl_shm_checksum (slot, h->in_frame_stride, seq);
    CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 10, 0), LB_RL_SHM_POLL_REJECTED);
    CHECK_EQ (lb_rl_shm_status (e.dp, &st), 0);
    CHECK_EQ (st.last_verdict, LB_RL_W_BAD_COUNT);
    CHECK_EQ (st.weights_rejected, ++rejects);
  }
  /* a committed frame that fails its checksum */
  {
    lb_rl_shm_header_t *h = lb_rl_shm_header (e.dp);
    lb_rl_shm_in_frame_t *slot;
    CHECK_EQ (lb_rl_shm_write_weights (e.ag, good2, 4, 11, 0, &seq), 0);
    slot = (lb_rl_shm_in_frame_t *) ((uint8_t *) e.mem + h->in_ring_offset
				     + (seq % h->in_ring_len) * h->in_frame_stride);
    slot->weights[2] = 7.0;
    CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 11, 0), LB_RL_SHM_POLL_REJECTED);
    CHECK_EQ (lb_rl_shm_status (e.dp, &st), 0);
    CHECK_EQ (st.last_verdict, LB_RL_SHM_W_CHECKSUM);
    CHECK_EQ (st.weights_rejected, ++rejects);
    CHECK (weights_equal (e.ctx, good, 6));
  }
  /* the core's own reject counter moved only for frames that reached set_weights:
   * our poll validates first, so it stayed put */
  {
    lb_rl_counters_t cc;
    lb_rl_counters (e.ctx, &cc);
    CHECK_EQ (cc.weight_updates, 1);
  }
  /* fresh good weights are applied again */
  CHECK_EQ (lb_rl_shm_write_weights (e.ag, good2, 4, 12, 0, &seq), 0);
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 12, 0), LB_RL_SHM_POLL_APPLIED);
  CHECK (weights_equal (e.ctx, good2, 6));
  CHECK_EQ (lb_rl_shm_status (e.dp, &st), 0);
  CHECK_EQ (st.in_seq_applied, seq);
  CHECK_EQ (st.last_verdict, LB_RL_W_OK);
  CHECK_EQ (st.weights_accepted, 2);
  /* several frames between polls: only the latest is examined */
  CHECK_EQ (lb_rl_shm_write_weights (e.ag, bad, 6, 13, 0, &seq), 0);
  CHECK_EQ (lb_rl_shm_write_weights (e.ag, good, 4, 13, 0, &seq), 0);
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 13, 0), LB_RL_SHM_POLL_APPLIED);
  CHECK (weights_equal (e.ctx, good, 6));
  poll_env_free (&e);
}

static void
test_fallback (void)
{
  struct poll_env e;
  lb_rl_shm_status_t st;
  const double agent_w[6] = { 4, 3, 2, 1, 0, 0 }, static_w[6] = { 1, 2, 3, 4, 0, 0 };
  double bad[6] = { -1, 1, 1, 1, 0, 0 };
  poll_env_init (&e);
  lb_rl_shm_set_fallback_timeout (e.dp, 0.5);
  CHECK_EQ (lb_rl_shm_status (e.dp, &st), 0);
  CHECK (st.fallback_timeout_s == 0.5);
  CHECK_EQ (lb_rl_shm_write_weights (e.ag, agent_w, 4, 0, 0, NULL), 0);
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 10.0, 0), LB_RL_SHM_POLL_APPLIED);
  CHECK (weights_equal (e.ctx, agent_w, 6));
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 10.49, 0), LB_RL_SHM_POLL_NONE);
  CHECK (weights_equal (e.ctx, agent_w, 6));
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 10.5, 0), LB_RL_SHM_POLL_FALLBACK);
  CHECK (weights_equal (e.ctx, static_w, 6));
  CHECK_EQ (lb_rl_shm_status (e.dp, &st), 0);
  CHECK_EQ (st.fallback_active, 1);
  CHECK_EQ (st.fallback_count, 1);
  /* stays in fallback without counting again */
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 20.0, 0), LB_RL_SHM_POLL_NONE);
  CHECK_EQ (lb_rl_shm_status (e.dp, &st), 0);
  CHECK_EQ (st.fallback_count, 1);
  /* a rejected frame advances the seq but keeps the fallback weights */
  CHECK_EQ (lb_rl_shm_write_weights (e.ag, bad, 4, 0, 0, NULL), 0);
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 20.1, 0), LB_RL_SHM_POLL_REJECTED);
  CHECK (weights_equal (e.ctx, static_w, 6));
  CHECK_EQ (lb_rl_shm_status (e.dp, &st), 0);
  CHECK_EQ (st.fallback_active, 1);
  /* fresh good weights clear it */
  CHECK_EQ (lb_rl_shm_write_weights (e.ag, agent_w, 4, 0, 0, NULL), 0);
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 20.2, 0), LB_RL_SHM_POLL_APPLIED);
  CHECK (weights_equal (e.ctx, agent_w, 6));
  CHECK_EQ (lb_rl_shm_status (e.dp, &st), 0);
  CHECK_EQ (st.fallback_active, 0);
  CHECK (st.last_in_advance_time_s == 20.2);
  /* published frames report the fallback state */
  {
    uint64_t stride = lb_rl_shm_header (e.dp)->out_frame_stride;
    lb_rl_shm_out_frame_t *f = malloc (stride);
    CHECK_EQ (lb_rl_shm_publish (e.dp, e.ctx, 20.2, 0, NULL), 0);
    CHECK_EQ (lb_rl_shm_read_out (e.dp, f, stride), 0);
    CHECK_EQ (f->fallback_active, 0);
    CHECK_EQ (f->in_seq_applied, st.in_seq_applied);
    CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 20.75, 0), LB_RL_SHM_POLL_FALLBACK);
    CHECK_EQ (lb_rl_shm_publish (e.dp, e.ctx, 20.75, 0, NULL), 0);
    CHECK_EQ (lb_rl_shm_read_out (e.dp, f, stride), 0);
    CHECK_EQ (f->fallback_active, 1);
    CHECK (lb_rl_shm_frame_server (e.dp, f, 3)->weight == 4.0);
    free (f);
  }
  CHECK_EQ (lb_rl_shm_status (e.dp, &st), 0);
  CHECK_EQ (st.fallback_count, 2);
  /* timeout <= 0 disables the fallback */
  CHECK_EQ (lb_rl_shm_write_weights (e.ag, agent_w, 4, 0, 0, NULL), 0);
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 30.0, 0), LB_RL_SHM_POLL_APPLIED);
  lb_rl_shm_set_fallback_timeout (e.dp, 0.0);
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 1e6, 0), LB_RL_SHM_POLL_NONE);
  CHECK (weights_equal (e.ctx, agent_w, 6));
  poll_env_free (&e);
}

static void
test_fallback_no_agent (void)
{
  struct poll_env e;
  const double static_w[6] = { 1, 2, 3, 4, 0, 0 };
  poll_env_init (&e);
  /* the default timeout (1 s) counts from the first poll */
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 100.0, 0), LB_RL_SHM_POLL_NONE);
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 100.999, 0), LB_RL_SHM_POLL_NONE);
  CHECK_EQ (lb_rl_shm_poll_in (e.dp, e.ctx, 101.0, 0), LB_RL_SHM_POLL_FALLBACK);
  CHECK (weights_equal (e.ctx, static_w, 6));
  poll_env_free (&e);
}

static void
test_seq_restart (void)
{
  lb_rl_shm_params_t p = params (4, 4, 4, 4);
  uint64_t size = lb_rl_shm_size (&p), seq = 0;
  void *mem = alloc_region (size);
  lb_rl_shm_t *ag, *dp;
  lb_rl_shm_header_t *h;
  const double w[2] = { 1, 1 };
  lb_rl_ctx_t *ctx = make_ctx (4, 2, 4);
  int i;
  CHECK_EQ (lb_rl_shm_format (mem, size, &p), 0);
  h = mem;
  CHECK_EQ (lb_rl_shm_attach (mem, size, LB_RL_SHM_ROLE_AGENT, &ag), 0);
  CHECK_EQ (h->agent_pid, getpid ());
  for (i = 0; i < 3; i++)
    CHECK_EQ (lb_rl_shm_write_weights (ag, w, 2, i, 0, &seq), 0);
  CHECK_EQ (seq, 3);
  lb_rl_shm_close (ag);
  /* a restarted agent continues: 4, not 1 (the original's bug) */
  CHECK_EQ (lb_rl_shm_attach (mem, size, LB_RL_SHM_ROLE_AGENT, &ag), 0);
  CHECK_EQ (lb_rl_shm_write_weights (ag, w, 2, 0, 0, &seq), 0);
  CHECK_EQ (seq, 4);
  for (i = 0; i < 9; i++)
    CHECK_EQ (lb_rl_shm_write_weights (ag, w, 2, 0, 0, &seq), 0);
  CHECK_EQ (seq, 13);
  lb_rl_shm_close (ag);
  /* crash between frame commit and latest update: the slots still tell */
  h->in_seq_latest = 2;
  CHECK_EQ (lb_rl_shm_attach (mem, size, LB_RL_SHM_ROLE_AGENT, &ag), 0);
  CHECK_EQ (lb_rl_shm_write_weights (ag, w, 2, 0, 0, &seq), 0);
  CHECK_EQ (seq, 14);
  lb_rl_shm_close (ag);
  /* data plane saw seq 14; a region whose ring was wiped still continues above it */
  CHECK_EQ (lb_rl_shm_attach (mem, size, LB_RL_SHM_ROLE_DATAPLANE, &dp), 0);
  CHECK_EQ (lb_rl_shm_poll_in (dp, ctx, 0, 0), LB_RL_SHM_POLL_APPLIED);
  memset ((uint8_t *) mem + h->in_ring_offset, 0, 4 * h->in_frame_stride);
  h->in_seq_latest = 0;
  CHECK_EQ (lb_rl_shm_attach (mem, size, LB_RL_SHM_ROLE_AGENT, &ag), 0);
  CHECK_EQ (lb_rl_shm_write_weights (ag, w, 2, 0, 0, &seq), 0);
  CHECK_EQ (seq, 15);
  CHECK_EQ (lb_rl_shm_poll_in (dp, ctx, 0.1, 0), LB_RL_SHM_POLL_APPLIED);
  lb_rl_shm_close (ag);
  /* data-plane writer restart: msg_out seq continues too */
  for (i = 0; i < 6; i++)
    CHECK_EQ (lb_rl_shm_publish (dp, ctx, i, 0, &seq), 0);
  CHECK_EQ (seq, 6);
  lb_rl_shm_close (dp);
  CHECK_EQ (lb_rl_shm_attach (mem, size, LB_RL_SHM_ROLE_DATAPLANE, &dp), 0);
  CHECK_EQ (lb_rl_shm_publish (dp, ctx, 7, 0, &seq), 0);
  CHECK_EQ (seq, 7);
  /* a restarted data plane does not re-apply the frame it already examined */
  CHECK_EQ (lb_rl_shm_poll_in (dp, ctx, 7, 0), LB_RL_SHM_POLL_NONE);
  lb_rl_shm_close (dp);
  /* a corrupt sequence near 2^64 would wrap to 0: writers refuse, readers still attach */
  h->out_seq_latest = 1ULL << 63;
  h->in_seq_latest = ~0ULL;
  CHECK_EQ (lb_rl_shm_attach (mem, size, LB_RL_SHM_ROLE_DATAPLANE, &dp), LB_RL_SHM_E_HEADER);
  CHECK (strstr (lb_rl_shm_last_error (), "msg_out sequence") != NULL);
  CHECK_EQ (lb_rl_shm_attach (mem, size, LB_RL_SHM_ROLE_AGENT, &ag), LB_RL_SHM_E_HEADER);
  CHECK (strstr (lb_rl_shm_last_error (), "msg_in sequence") != NULL);
  CHECK_EQ (lb_rl_shm_attach (mem, size, LB_RL_SHM_ROLE_READER, &dp), LB_RL_SHM_OK);
  lb_rl_shm_close (dp);
  lb_rl_destroy (ctx);
  free (mem);
}

/* ---- files ---- */
static int
read_file (const char *path, uint8_t **buf, uint64_t *len)
{
  FILE *fp = fopen (path, "rb");
  long n;
  if (!fp)
    return -1;
  fseek (fp, 0, SEEK_END);
  n = ftell (fp);
  fseek (fp, 0, SEEK_SET);
  *buf = malloc (n ? (size_t) n : 1);
  *len = (uint64_t) n;
  if (n && fread (*buf, 1, (size_t) n, fp) != (size_t) n)
    n = -1;
  fclose (fp);
  return n < 0 ? -1 : 0;
}

static void
write_file (const char *path, const void *buf, uint64_t len)
{
  FILE *fp = fopen (path, "wb");
  if (len)
    fwrite (buf, 1, len, fp);
  fclose (fp);
}

static void
expect_file_error (const char *path, const void *content, uint64_t len,
		   const lb_rl_shm_params_t *p, int err)
{
  uint8_t *after;
  uint64_t after_len;
  lb_rl_shm_t *shm = (lb_rl_shm_t *) 1;
  int role;
  write_file (path, content, len);
  for (role = 0; role < 3; role++)
    {
      CHECK_EQ (lb_rl_shm_open (path, p, role, &shm), err);
      CHECK (shm == NULL);
      /* the message names the file */
      CHECK (strstr (lb_rl_shm_last_error (), path) != NULL);
    }
  CHECK_EQ (read_file (path, &after, &after_len), 0);
  CHECK_EQ (after_len, len);
  CHECK (len == 0 || memcmp (after, content, len) == 0);
  free (after);
}

static void
test_files (void)
{
  char dir[] = "/tmp/test_shm_XXXXXX", path[256];
  lb_rl_shm_params_t p = params (3, 4, 4, 4), other = params (4, 4, 4, 4);
  lb_rl_shm_t *dp, *ag;
  lb_rl_ctx_t *ctx = make_ctx (3, 3, 4);
  uint8_t *good, *bad;
  uint64_t len, seq, i;
  struct stat st;
  const double w[3] = { 1, 2, 3 };
  CHECK (mkdtemp (dir) != NULL);
  snprintf (path, sizeof path, "%s/region", dir);
  CHECK_EQ (lb_rl_shm_open (path, NULL, LB_RL_SHM_ROLE_READER, &dp), LB_RL_SHM_E_IO);
  CHECK (strstr (lb_rl_shm_last_error (), "No such file") != NULL);
  /* create + format */
  CHECK_EQ (lb_rl_shm_open (path, &p, LB_RL_SHM_ROLE_DATAPLANE, &dp), 0);
  CHECK_EQ (stat (path, &st), 0);
  CHECK_EQ (st.st_size, lb_rl_shm_size (&p));
  traffic (ctx, 20);
  CHECK_EQ (lb_rl_shm_publish (dp, ctx, 1, 0, &seq), 0);
  CHECK_EQ (lb_rl_shm_publish (dp, ctx, 2, 0, &seq), 0);
  /* attach from a second handle (an agent) without params: no truncation */
  CHECK_EQ (lb_rl_shm_open (path, NULL, LB_RL_SHM_ROLE_AGENT, &ag), 0);
  CHECK_EQ (lb_rl_shm_write_weights (ag, w, 3, 0, 0, &seq), 0);
  CHECK_EQ (lb_rl_shm_poll_in (dp, ctx, 0, 0), LB_RL_SHM_POLL_APPLIED);
  lb_rl_shm_close (ag);
  lb_rl_shm_close (dp);
  /* reopen with matching params: attaches, keeps frames, continues seq */
  CHECK_EQ (lb_rl_shm_open (path, &p, LB_RL_SHM_ROLE_DATAPLANE, &dp), 0);
  CHECK_EQ (lb_rl_shm_header (dp)->out_seq_latest, 2);
  CHECK_EQ (lb_rl_shm_publish (dp, ctx, 3, 0, &seq), 0);
  CHECK_EQ (seq, 3);
  lb_rl_shm_close (dp);
  CHECK_EQ (read_file (path, &good, &len), 0);
  /* mismatching params: error, file unchanged */
  expect_file_error (path, good, len, &other, LB_RL_SHM_E_MISMATCH);
  /* bad contents: each leaves the file byte-for-byte unchanged */
  bad = malloc (len);
  memcpy (bad, good, len);
  bad[0] ^= 0xFF;
  expect_file_error (path, bad, len, &p, LB_RL_SHM_E_MAGIC);
  memcpy (bad, good, len);
  bad[8] = 9;
  expect_file_error (path, bad, len, &p, LB_RL_SHM_E_VERSION);
  expect_file_error (path, good, 100, &p, LB_RL_SHM_E_TOO_SMALL);
  expect_file_error (path, good, 0, &p, LB_RL_SHM_E_TOO_SMALL);
  expect_file_error (path, good, len - 64, &p, LB_RL_SHM_E_TRUNCATED);
  memset (bad, 0, len);
  expect_file_error (path, bad, len, &p, LB_RL_SHM_E_MAGIC);
  /* a longer file is fine (page rounding); restore and attach */
  free (bad);
  bad = calloc (1, len + 4096);
  memcpy (bad, good, len);
  write_file (path, bad, len + 4096);
  CHECK_EQ (lb_rl_shm_open (path, NULL, LB_RL_SHM_ROLE_READER, &dp), 0);
  lb_rl_shm_close (dp);
  /* no temporary files left behind */
  for (i = 0; i < 3; i++)
    {
      char sub[300];
      snprintf (sub, sizeof sub, "%s/r%d", dir, (int) i);
      CHECK_EQ (lb_rl_shm_open (sub, &p, LB_RL_SHM_ROLE_DATAPLANE, &dp), 0);
      lb_rl_shm_close (dp);
      unlink (sub);
    }
  CHECK_EQ (rmdir (dir), -1); /* still holds "region" */
  unlink (path);
  CHECK_EQ (rmdir (dir), 0);  /* and nothing else */
  free (bad);
  free (good);
  lb_rl_destroy (ctx);
}

int
main (void)
{
  test_layout ();
  test_checksum ();
  test_format_attach ();
  test_validation_errors ();
  test_publish_read ();
  test_poll_validation ();
  test_fallback ();
  test_fallback_no_agent ();
  test_seq_restart ();
  test_files ();
  CHECK (strcmp (lb_rl_shm_strerror (LB_RL_SHM_E_MAGIC), "bad magic: not a MARLLB shm region")
	 == 0);
  CHECK (strcmp (lb_rl_shm_strerror (12345), "unknown shm error") == 0);
  return ts_report ("test_shm_basic");
}
