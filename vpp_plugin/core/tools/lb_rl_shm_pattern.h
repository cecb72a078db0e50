/*
 * lb_rl_shm_pattern.h — the deterministic frame contents used by the
 * cross-process conformance tests (C tools and tests/shm/test_conformance.py use the same
 * rule, written out in SHM.md "Conformance pattern"). Every field of a frame
 * with sequence q is a function of q, so a reader can tell a torn frame (parts
 * of two frames) from a whole one independently of the checksum.
 */
#ifndef LB_RL_SHM_PATTERN_H
#define LB_RL_SHM_PATTERN_H

#include "lb_rl_shm.h"

/* Word j of the present-server bitmap of seq q (S servers): q * (j + 1), with the bits
 * of the last word beyond server S-1 cleared. */
static uint64_t
lb_rl_shm_pattern_active (uint64_t q, uint32_t j, uint32_t S)
{
  uint64_t v = q * (j + 1);
  uint32_t left = S - 64 * j; /* servers in this word and beyond */
  return left >= 64 ? v : (v & ((1ULL << left) - 1));
}

static uint32_t
lb_rl_shm_pattern_n_active (uint64_t q, uint32_t S)
{
  uint32_t j, n = 0;
  for (j = 0; j < (S + 63) / 64; j++)
    n += (uint32_t) __builtin_popcountll (lb_rl_shm_pattern_active (q, j, S));
  return n;
}

/* Fill frame f (from lb_rl_shm_out_begin) with the pattern of seq q. */
static void
lb_rl_shm_pattern_fill_out (lb_rl_shm_t *shm, lb_rl_shm_out_frame_t *f, uint64_t q)
{
  const lb_rl_shm_header_t *h = lb_rl_shm_header (shm);
  uint32_t S = h->max_servers, K = h->reservoir_slots, i, k, j;
  lb_rl_shm_server_t *sv;
  lb_rl_sample_t *smp;
  uint64_t *active = lb_rl_shm_frame_active (shm, f);
  f->time_s = (double) q;
  f->wall_s = (double) q + 0.5;
  for (j = 0; j < (S + 63) / 64; j++)
    active[j] = lb_rl_shm_pattern_active (q, j, S);
  f->n_active = lb_rl_shm_pattern_n_active (q, S);
  f->active_words = (S + 63) / 64;
  f->in_seq_applied = q ^ 0x5555;
  f->fallback_active = (uint32_t) (q & 1);
  f->tracked_flows = (uint32_t) q;
  f->packets = q * 1;
  f->new_flows = q * 2;
  f->untracked_full = q * 3;
  f->untracked_miss = q * 4;
  f->flows_lost = q * 5;
  f->timeouts = q * 6;
  f->no_server = q * 7;
  f->weight_updates = q * 8;
  for (i = 0; i < S; i++)
    {
      sv = lb_rl_shm_frame_server (shm, f, i);
      sv->n_flow_on = (int64_t) (q + i);
      sv->n_flow_new = q * 2 + i;
      sv->n_flow_closed = q * 3 + i;
      sv->n_flow_timeout = q * 4 + i;
      sv->packets = q * 5 + i;
      sv->bytes = q * 6 + i;
      sv->weight = (double) q + 0.25 * i;
      sv->n_flow_pending = (int64_t) (q * 8 + i);
      sv->n_flow_untracked = q * 9 + i;
      for (k = 0; k < LB_RL_N_RES; k++)
	{
	  sv->n_samples[k] = q * 7 + i + k;
	  sv->fill[k] = (uint32_t) ((q + i + k) % (K + 1));
	  smp = lb_rl_shm_frame_samples (shm, f, i, k);
	  for (j = 0; j < K; j++)
	    {
	      smp[j].t = j < sv->fill[k] ? (double) (q + j) : 0.0;
	      smp[j].v = j < sv->fill[k] ? (double) (q * 2 + i + k) : 0.0;
	    }
	}
    }
}

/* 0 if frame f (a copy) holds exactly the pattern of its own seq. */
static int
lb_rl_shm_pattern_check_out (lb_rl_shm_t *shm, lb_rl_shm_out_frame_t *f)
{
  const lb_rl_shm_header_t *h = lb_rl_shm_header (shm);
  uint32_t S = h->max_servers, K = h->reservoir_slots, i, k, j, fill;
  uint64_t q = f->seq;
  const lb_rl_shm_server_t *sv;
  const lb_rl_sample_t *smp;
  const uint64_t *active = lb_rl_shm_frame_active (shm, f);
  int bad = 0;
  bad |= f->time_s != (double) q || f->wall_s != (double) q + 0.5;
  bad |= f->active_words != (S + 63) / 64 || f->n_active != lb_rl_shm_pattern_n_active (q, S);
  for (j = 0; j < (S + 63) / 64; j++)
    bad |= active[j] != lb_rl_shm_pattern_active (q, j, S);
  bad |= f->in_seq_applied != (q ^ 0x5555) || f->fallback_active != (uint32_t) (q & 1);
  bad |= f->tracked_flows != (uint32_t) q || f->n_servers != S || f->reservoir_slots != K;
  bad |= f->packets != q || f->new_flows != q * 2 || f->untracked_full != q * 3;
  bad |= f->untracked_miss != q * 4 || f->flows_lost != q * 5 || f->timeouts != q * 6;
  bad |= f->no_server != q * 7 || f->weight_updates != q * 8;
  for (i = 0; i < S && !bad; i++)
    {
      sv = lb_rl_shm_frame_server (shm, f, i);
      bad |= sv->n_flow_on != (int64_t) (q + i) || sv->n_flow_new != q * 2 + i;
      bad |= sv->n_flow_closed != q * 3 + i || sv->n_flow_timeout != q * 4 + i;
      bad |= sv->packets != q * 5 + i || sv->bytes != q * 6 + i;
      bad |= sv->weight != (double) q + 0.25 * i;
      bad |= sv->n_flow_pending != (int64_t) (q * 8 + i) || sv->n_flow_untracked != q * 9 + i;
      for (k = 0; k < LB_RL_N_RES; k++)
	{
	  fill = (uint32_t) ((q + i + k) % (K + 1));
	  bad |= sv->n_samples[k] != q * 7 + i + k || sv->fill[k] != fill;
	  smp = lb_rl_shm_frame_samples (shm, f, i, k);
	  for (j = 0; j < K; j++)
	    {
	      bad |= smp[j].t != (j < fill ? (double) (q + j) : 0.0);
	      bad |= smp[j].v != (j < fill ? (double) (q * 2 + i + k) : 0.0);
	    }
	}
    }
  return bad;
}

/* Weights of msg_in seq q for a region of S servers; returns n. */
static uint32_t
lb_rl_shm_pattern_in (uint64_t q, uint32_t S, double *w)
{
  uint32_t n = 1 + (uint32_t) (q % S), j;
  for (j = 0; j < n; j++)
    w[j] = (double) (q + j);
  return n;
}

/* 0 if msg_in frame f (a copy) holds exactly the pattern of its own seq. */
static int
lb_rl_shm_pattern_check_in (const lb_rl_shm_in_frame_t *f, uint32_t S)
{
  uint64_t q = f->seq;
  uint32_t n = 1 + (uint32_t) (q % S), j;
  int bad = f->time_s != (double) q || f->wall_s != (double) q + 0.5 || f->n != n;
  bad |= f->flags != 0;
  for (j = 0; j < S; j++)
    bad |= f->weights[j] != (j < n ? (double) (q + j) : 0.0);
  return bad;
}

#endif /* LB_RL_SHM_PATTERN_H */
