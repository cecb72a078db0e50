/*
 * fuzz_shm_weights.c — libFuzzer harness for the weights validator and the
 * data plane's poll path, checked against the validation rules as properties.
 *
 * Input: byte 0 = which of servers 0..7 are present, byte 1 = which of the
 * servers 63, 64, 255, 256, 299 are (bits 0..4) in a 300-server context (indices
 * beyond 255, a 5-word bitmap; the others are never present, and few toggles
 * keep table rebuilds per input few); bytes 2-3 = n (0..309, little-endian,
 * mod 310); then raw f64
 * bit patterns (NaN payloads, infinities, negatives, denormals, -0.0 ...),
 * repeated cyclically up to n. The harness
 *   1. computes the expected verdict from the rules written here again
 *      (non-finite > negative > absent-server > all-zero order of the core),
 *      and aborts if lb_rl_weights_validate disagrees;
 *   2. writes the vector as an agent msg_in frame and polls it as the data
 *      plane: applied iff the verdict is OK, the weights in force are then
 *      exactly the present servers' weights, otherwise they are unchanged and
 *      the reject counter moved by one; n > 300 must be refused by the writer.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I.. ../lb_rl_*.c fuzz_shm_weights.c -lm
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lb_rl_shm.h"

static void *
fz_alloc (size_t size)
{
  void *p = NULL;
  return posix_memalign (&p, 64, size) == 0 ? p : NULL;
}

#define FZ_SERVERS 300
#define FZ_WORDS ((FZ_SERVERS + 63) / 64)

static lb_rl_ctx_t *fz_ctx;
static lb_rl_shm_t *fz_dp, *fz_ag;
static uint8_t *fz_mem;

static void
fz_init (void)
{
  lb_rl_config_t cfg;
  lb_rl_shm_params_t p;
  uint64_t size;
  lb_rl_config_default (&cfg);
  cfg.max_servers = FZ_SERVERS;
  cfg.table_size = 256;
  cfg.reservoir_size = 4;
  fz_ctx = lb_rl_create (&cfg);
  p.max_servers = FZ_SERVERS;
  p.reservoir_slots = 4;
  p.out_ring_len = 2;
  p.in_ring_len = 2;
  size = lb_rl_shm_size (&p);
  fz_mem = fz_alloc (size);
  if (!fz_ctx || !fz_mem || lb_rl_shm_format (fz_mem, size, &p)
      || lb_rl_shm_attach (fz_mem, size, LB_RL_SHM_ROLE_DATAPLANE, &fz_dp)
      || lb_rl_shm_attach (fz_mem, size, LB_RL_SHM_ROLE_AGENT, &fz_ag))
    abort ();
  lb_rl_shm_set_fallback_timeout (fz_dp, 0.0);
}

/* The harness's own notion of "present", from the input bytes. */
static const uint32_t fz_high[5] = { 63, 64, 255, 256, 299 };

static int
fz_want (const uint8_t *data, uint32_t i)
{
  uint32_t k;
  if (i < 8)
    return (data[0] >> i) & 1;
  for (k = 0; k < 5; k++)
    if (i == fz_high[k])
      return (data[1] >> k) & 1;
  return 0;
}

static int
fz_expected (const double *w, uint32_t n, const uint8_t *data)
{
  uint32_t i;
  int any = 0;
  if (n == 0 || n > LB_RL_MAX_SERVERS)
    return LB_RL_W_BAD_COUNT;
  for (i = 0; i < n; i++)
    if (isnan (w[i]) || isinf (w[i]))
      return LB_RL_W_NONFINITE;
  for (i = 0; i < n; i++)
    if (w[i] < 0.0)
      return LB_RL_W_NEGATIVE;
  for (i = 0; i < n; i++)
    if (w[i] > 0.0)
      {
	if (i >= FZ_SERVERS || !fz_want (data, i))
	  return LB_RL_W_ABSENT_SERVER;
	any = 1;
      }
  return any ? LB_RL_W_OK : LB_RL_W_ALL_ZERO;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t len);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t len)
{
  static double w[FZ_SERVERS + 10], before[FZ_SERVERS], after[FZ_SERVERS];
  lb_rl_shm_status_t st0, st1;
  uint64_t present[FZ_WORDS];
  uint32_t n, i, avail;
  int expect, got, poll;
  if (!fz_ctx)
    fz_init ();
  if (len < 4)
    return 0;
  /* servers present as bytes 0-1 say */
  for (i = 0; i < FZ_SERVERS; i++)
    {
      int want = fz_want (data, i), has = lb_rl_server_is_present (fz_ctx, i);
      if (want && !has)
	lb_rl_server_add (fz_ctx, i, 1.0);
      else if (!want && has)
	lb_rl_server_remove (fz_ctx, i);
    }
  if (lb_rl_servers_present (fz_ctx, present, FZ_WORDS) != FZ_WORDS)
    abort ();
  for (i = 0; i < FZ_SERVERS; i++)
    if (((present[i / 64] >> (i % 64)) & 1) != (uint64_t) fz_want (data, i))
      abort ();
  n = (uint32_t) (data[2] | (data[3] << 8)) % (FZ_SERVERS + 10);
  avail = (uint32_t) ((len - 4) / 8);
  for (i = 0; i < n; i++)
    if (avail)
      memcpy (&w[i], data + 4 + 8 * (i % avail), 8);
    else
      w[i] = 0.0;

  expect = fz_expected (w, n, data);
  got = lb_rl_weights_validate (w, n, present, FZ_WORDS);
  if (got != expect)
    abort ();

  /* through the shm: agent frame -> data-plane poll; a frame holds FZ_SERVERS weights */
  if (n > FZ_SERVERS)
    {
      if (lb_rl_shm_write_weights (fz_ag, w, n, 0, 0, NULL) != LB_RL_SHM_E_ARG)
	abort ();
      return 0;
    }
  lb_rl_get_weights (fz_ctx, before);
  lb_rl_shm_status (fz_dp, &st0);
  if (lb_rl_shm_write_weights (fz_ag, w, n, 0, 0, NULL) != LB_RL_SHM_OK)
    abort ();
  poll = lb_rl_shm_poll_in (fz_dp, fz_ctx, 0, 0);
  lb_rl_get_weights (fz_ctx, after);
  lb_rl_shm_status (fz_dp, &st1);
  if (expect == LB_RL_W_OK)
    {
      if (poll != LB_RL_SHM_POLL_APPLIED || st1.weights_accepted != st0.weights_accepted + 1)
	abort ();
      for (i = 0; i < FZ_SERVERS; i++)
	if (after[i] != ((i < n && fz_want (data, i)) ? w[i] : 0.0))
	  abort ();
    }
  else
    {
      if (poll != LB_RL_SHM_POLL_REJECTED || st1.last_verdict != expect
	  || st1.weights_rejected != st0.weights_rejected + 1)
	abort ();
      if (memcmp (before, after, sizeof before) != 0)
	abort ();
    }
  return 0;
}
