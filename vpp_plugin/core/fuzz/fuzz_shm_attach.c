/*
 * fuzz_shm_attach.c — libFuzzer harness for the shm attach + read path: every
 * byte a peer process could put in the region.
 *
 * Input byte 0 selects the mode:
 *   even: the rest of the input IS the region (raw: header parsing, sizes);
 *   odd:  bytes 1..4 pick a layout (S, K, ring lengths), a valid region is
 *         formatted, and the rest of the input is written over it from offset
 *         112 on (seq_latest fields, status block and both rings), so the frame
 *         readers, the poll path and the status reader see arbitrary frames.
 * Then: validate, attach with every role, read_out, read_in, status, the
 * frame accessors, poll_in into a real core context and publish. Sanitizers
 * (ASan/UBSan) catch out-of-bounds access; the harness also aborts if a read
 * that reports success returns a frame failing its own checksum.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I.. ../lb_rl_*.c fuzz_shm_attach.c -lm
 */
#define _POSIX_C_SOURCE 200809L
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

static lb_rl_ctx_t *
fz_ctx (void)
{
  static lb_rl_ctx_t *ctx;
  lb_rl_config_t cfg;
  uint32_t i;
  if (ctx)
    return ctx;
  lb_rl_config_default (&cfg);
  cfg.max_servers = 8;
  cfg.table_size = 256;
  cfg.reservoir_size = 4;
  ctx = lb_rl_create (&cfg);
  if (!ctx)
    abort ();
  for (i = 0; i < 5; i++)
    lb_rl_server_add (ctx, i, 1.0 + i);
  return ctx;
}

static void
fz_exercise (uint8_t *mem, uint64_t size)
{
  lb_rl_shm_t *shm = NULL;
  lb_rl_shm_status_t st;
  lb_rl_shm_in_frame_t *in;
  lb_rl_shm_out_frame_t *out;
  lb_rl_shm_header_t *h;
  uint64_t stride, seq;
  int role, rc;
  double w[2] = { 1.0, 2.0 };
  if (lb_rl_shm_validate (mem, size) != LB_RL_SHM_OK)
    {
      /* attach must agree with validate and hand out nothing */
      if (lb_rl_shm_attach (mem, size, LB_RL_SHM_ROLE_READER, &shm) == LB_RL_SHM_OK || shm)
	abort ();
      return;
    }
  for (role = 0; role < 3; role++)
    {
      rc = lb_rl_shm_attach (mem, size, role, &shm);
      if (rc != LB_RL_SHM_OK)
	{
	  /* only writers refuse, and only a sequence beyond 2^63 */
	  if (role == LB_RL_SHM_ROLE_READER || rc != LB_RL_SHM_E_HEADER || shm)
	    abort ();
	  continue;
	}
      h = lb_rl_shm_header (shm);
      stride = h->out_frame_stride;
      out = malloc (stride);
      /* exactly the stride: ASan sees a copy past the frame */
      in = malloc (h->in_frame_stride);
      rc = lb_rl_shm_read_out (shm, out, stride);
      if (rc == LB_RL_SHM_OK)
	{
	  if (lb_rl_shm_checksum (out, stride, out->seq) != out->checksum)
	    abort ();
	  /* accessors with in-range and out-of-range indices */
	  uint64_t *act = lb_rl_shm_frame_active (shm, out);
	  volatile uint64_t last_word = act[(h->max_servers - 1) / 64];
	  (void) last_word;
	  if (!lb_rl_shm_frame_server (shm, out, h->max_servers - 1)
	      || lb_rl_shm_frame_server (shm, out, h->max_servers)
	      || !lb_rl_shm_frame_samples (shm, out, 0, LB_RL_RES_FCT))
	    abort ();
	}
      rc = lb_rl_shm_read_in (shm, in, h->in_frame_stride);
      if (rc == LB_RL_SHM_OK
	  && lb_rl_shm_checksum (in, h->in_frame_stride, in->seq) != in->checksum)
	abort ();
      if (rc == LB_RL_SHM_OK && in->n >= 1 && in->n <= h->max_servers)
	{
	  volatile double last = in->weights[in->n - 1]; /* in bounds of the copy */
	  (void) last;
	}
      lb_rl_shm_status (shm, &st);
      if (role == LB_RL_SHM_ROLE_DATAPLANE)
	{
	  lb_rl_shm_poll_in (shm, fz_ctx (), 1.0, 1.0);
	  lb_rl_shm_poll_in (shm, fz_ctx (), 100.0, 1.0);
	  lb_rl_shm_publish (shm, fz_ctx (), 2.0, 2.0, &seq);
	  rc = lb_rl_shm_read_out (shm, out, stride);
	  /* right after our own publish the latest frame is whole, unless the
	   * region is so small that the context does not fit */
	  if (rc != LB_RL_SHM_OK && h->max_servers >= 8)
	    abort ();
	}
      if (role == LB_RL_SHM_ROLE_AGENT)
	lb_rl_shm_write_weights (shm, w, 2, 0.0, 0.0, &seq);
      free (out);
      free (in);
      lb_rl_shm_close (shm);
    }
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t len);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t len)
{
  lb_rl_shm_params_t p;
  uint8_t *mem;
  uint64_t size, off;
  if (len < 1)
    return 0;
  if ((data[0] & 1) == 0)
    {
      /* raw: exact size so ASan sees any read past the end */
      size = len - 1;
      mem = fz_alloc (size ? (size + 63) / 64 * 64 : 64);
      if (!mem)
	return 0;
      memcpy (mem, data + 1, size);
      fz_exercise (mem, size);
      free (mem);
      return 0;
    }
  if (len < 5)
    return 0;
  /* byte 1: S in 1..128, or with its top bit set one of the large layouts with K <= 2
   * (a 4096-server frame is then <= 0.66 MB) */
  p.max_servers = (data[1] & 0x80) ? (uint32_t[]){ 255, 256, 1024, 4096 }[data[1] & 3]
				  : 1u + (data[1] & 0x7F);
  p.reservoir_slots = 1 + data[2] % ((data[1] & 0x80) ? 2 : 16);
  p.out_ring_len = LB_RL_SHM_MIN_RING + data[3] % 4;
  p.in_ring_len = LB_RL_SHM_MIN_RING + data[4] % 4;
  size = lb_rl_shm_size (&p);
  mem = fz_alloc ((size + 63) / 64 * 64);
  if (!mem)
    return 0;
  if (lb_rl_shm_format (mem, size, &p) != LB_RL_SHM_OK)
    abort ();
  off = 112;
  if (len - 5 > 0)
    memcpy (mem + off, data + 5, (len - 5) < size - off ? (len - 5) : size - off);
  fz_exercise (mem, size);
  free (mem);
  return 0;
}
