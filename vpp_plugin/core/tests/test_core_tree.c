/*
 * test_core_tree.c — differential test of LSQ/SED at large n: the tournament tree
 * (context A, default: tree above LB_RL_SCAN_MAX eligible servers) against the
 * linear scan (context B, scan forced for any n) on identical random packet
 * sequences. Every packet must go to the same server in both, the RNG states
 * must stay identical (the tree draws exactly when and what the scan draws), and
 * every new flow must go to a server whose score was minimal (checked here from
 * the loads, independently of both implementations).
 *
 * Sequences mix SYNs of new flows, handshake ACKs, data ACKs, FIN/RST closes,
 * time jumps past the SYN timeout with lb_rl_expire sweeps, weight updates,
 * drain/undrain and LSQ <-> SED switches, at n = 65, 200, 1024 and 4096 eligible
 * servers (indices spread over a larger range, with absent, drained and
 * zero-weight servers in between).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lb_rl_internal.h"
#include "test_core_util.h"

static uint64_t tr_x = 0x2545F4914F6CDD1DULL;

static uint64_t
tr_rand (void)
{
  tr_x ^= tr_x << 13;
  tr_x ^= tr_x >> 7;
  tr_x ^= tr_x << 17;
  return tr_x;
}

/* Weights from the paper's discrete set {1.0, 1.2, ..., 2.0}: many SED ties. */
static double
tr_weight (void)
{
  return 1.0 + 0.2 * (double) (tr_rand () % 6);
}

/* The minimum score over the eligible servers and how many attain it, from the
 * loads (not from the tree nor the scan). */
static double
tr_min_score (const lb_rl_ctx_t *ctx, uint32_t *n_min)
{
  const lb_rl_wtab_t *t = ctx->wt;
  int sed = ctx->cfg.policy == LB_RL_POLICY_SED;
  double best = 0.0;
  uint32_t j;
  *n_min = 0;
  for (j = 0; j < t->n_elig; j++)
    {
      uint32_t s = t->elig[j];
      /* SED's score as defined: (load + 1) * (1/w), which can differ from (load + 1) / w
       * in the last bit */
      double q = sed ? (double) (ctx->n_load[s] + 1) * t->inv_w[s] : (double) ctx->n_load[s];
      if (*n_min == 0 || q < best)
	{
	  best = q;
	  *n_min = 0;
	}
      if (q == best)
	(*n_min)++;
    }
  return best;
}

/* Score of server s had its load been one less (before the flow just opened). */
static double
tr_score_before (const lb_rl_ctx_t *ctx, uint32_t s)
{
  if (ctx->cfg.policy == LB_RL_POLICY_SED)
    return (double) ctx->n_load[s] * ctx->wt->inv_w[s];
  return (double) (ctx->n_load[s] - 1);
}

typedef struct
{
  uint32_t key;
  uint8_t est;
} tr_flow_t;

typedef struct
{
  uint64_t packets, new_flows, tied_picks, tree_picks, mismatches, rng_diverged, not_min;
} tr_stats_t;

static void
tr_run (uint32_t n, lb_rl_policy_t policy, uint32_t n_ops, uint64_t seed)
{
  /* 2 absent, 2 drained, 2 zero-weight servers among the eligible ones, where the
   * index range allows (not at n = LB_RL_MAX_SERVERS) */
  const uint32_t extra = n + 6 <= LB_RL_MAX_SERVERS ? 6 : 0;
  uint32_t max_servers = n + extra, i, op, n_open = 0, next_key = 1, drained_by_test = UINT32_MAX;
  uint32_t absent[2], drained[2], zero[2];
  lb_rl_config_t cfg;
  lb_rl_ctx_t *a, *b;
  tr_flow_t *open = calloc (n_ops + 1, sizeof *open);
  double *w = calloc (max_servers, sizeof *w), t = 1.0;
  tr_stats_t st;
  memset (&st, 0, sizeof st);
  lb_rl_config_default (&cfg);
  cfg.max_servers = max_servers;
  cfg.table_size = 1u << 17;
  cfg.policy = policy;
  cfg.seed = seed;
  a = lb_rl_create (&cfg);
  b = lb_rl_create (&cfg);
  CHECK (a && b && open && w);
  if (!a || !b || !open || !w)
    return;
  lb_rl_set_scan_max (b, UINT32_MAX); /* B: always the linear scan */
  /* special indices spread over the range, distinct */
  for (i = 0; i < 2; i++)
    {
      absent[i] = extra ? (i * 2 + 1) * max_servers / 13 : UINT32_MAX;
      drained[i] = extra ? (i * 2 + 5) * max_servers / 13 : UINT32_MAX;
      zero[i] = extra ? (i * 2 + 9) * max_servers / 13 : UINT32_MAX;
    }
  for (i = 0; i < max_servers; i++)
    {
      if (i == absent[0] || i == absent[1])
	continue;
      w[i] = (i == zero[0] || i == zero[1]) ? 0.0 : tr_weight ();
      lb_rl_server_add (a, i, w[i]);
      lb_rl_server_add (b, i, w[i]);
    }
  for (i = 0; i < 2 && extra; i++)
    {
      lb_rl_server_drain (a, drained[i], 1);
      lb_rl_server_drain (b, drained[i], 1);
    }
  CHECK_EQ_I (a->wt->n_elig, n);
  CHECK (a->tree.on && !b->tree.on);

  for (op = 0; op < n_ops; op++)
    {
      uint32_t r = (uint32_t) (tr_rand () % 1000);
      t += 1e-3;
      if (r < 450 || n_open == 0)
	{
	  /* a new flow: both pick, and the pick has a minimal score */
	  lb_rl_5tuple_t k = tc_key (next_key);
	  uint32_t n_min;
	  double best = tr_min_score (a, &n_min), got;
	  int32_t sa, sb;
	  if (a->tree.on)
	    st.tree_picks++;
	  st.tied_picks += n_min > 1;
	  sa = lb_rl_process (a, t, &k, LB_RL_TCP_SYN, 60);
	  sb = lb_rl_process (b, t, &k, LB_RL_TCP_SYN, 60);
	  st.mismatches += sa != sb;
	  if (sa >= 0)
	    {
	      got = tr_score_before (a, (uint32_t) sa);
	      st.not_min += got != best;
	    }
	  st.packets++;
	  st.new_flows++;
	  open[n_open].key = next_key++;
	  open[n_open].est = 0;
	  n_open++;
	}
      else if (r < 800)
	{
	  /* ACK of a random open flow: completes the handshake or is a data ACK;
	   * one in 8 is a FIN or RST instead */
	  uint32_t f = (uint32_t) (tr_rand () % n_open);
	  lb_rl_5tuple_t k = tc_key (open[f].key);
	  uint8_t flags = LB_RL_TCP_ACK;
	  int close = tr_rand () % 8 == 0;
	  if (close)
	    flags = tr_rand () % 2 ? (LB_RL_TCP_FIN | LB_RL_TCP_ACK) : LB_RL_TCP_RST;
	  st.mismatches += lb_rl_process (a, t, &k, flags, 52) != lb_rl_process (b, t, &k, flags, 52);
	  st.packets++;
	  open[f].est = 1;
	  if (close)
	    open[f] = open[--n_open];
	}
      else if (r < 950)
	{
	  /* close a random open flow */
	  uint32_t f = (uint32_t) (tr_rand () % n_open);
	  lb_rl_5tuple_t k = tc_key (open[f].key);
	  st.mismatches += lb_rl_process (a, t, &k, LB_RL_TCP_FIN | LB_RL_TCP_ACK, 52) !=
			   lb_rl_process (b, t, &k, LB_RL_TCP_FIN | LB_RL_TCP_ACK, 52);
	  st.packets++;
	  open[f] = open[--n_open];
	}
      else if (r < 965)
	{
	  /* time jump past the SYN timeout: pending flows end (in the sweep, or lazily
	   * when their next packet finds them) */
	  uint32_t budget = 1 + (uint32_t) (tr_rand () % 2000);
	  t += 3.5;
	  CHECK_EQ_I (lb_rl_expire (a, t, budget), lb_rl_expire (b, t, budget));
	}
      else if (r < 980)
	{
	  /* new weights (the eligible set stays): tree rebuilt from the current loads */
	  for (i = 0; i < max_servers; i++)
	    if (w[i] > 0.0)
	      w[i] = tr_weight ();
	  CHECK_EQ_I (lb_rl_set_weights (a, w, max_servers), LB_RL_W_OK);
	  CHECK_EQ_I (lb_rl_set_weights (b, w, max_servers), LB_RL_W_OK);
	}
      else if (r < 992)
	{
	  /* drain one eligible server for a while (n - 1 eligible: at n = 65 the tree
	   * turns off and back on), or undrain it */
	  if (drained_by_test == UINT32_MAX)
	    {
	      drained_by_test = a->wt->elig[tr_rand () % a->wt->n_elig];
	      lb_rl_server_drain (a, drained_by_test, 1);
	      lb_rl_server_drain (b, drained_by_test, 1);
	    }
	  else
	    {
	      lb_rl_server_drain (a, drained_by_test, 0);
	      lb_rl_server_drain (b, drained_by_test, 0);
	      drained_by_test = UINT32_MAX;
	    }
	}
      else
	{
	  lb_rl_policy_t p = a->cfg.policy == LB_RL_POLICY_LSQ ? LB_RL_POLICY_SED : LB_RL_POLICY_LSQ;
	  lb_rl_set_policy (a, p);
	  lb_rl_set_policy (b, p);
	}
      if (memcmp (&a->rng, &b->rng, sizeof a->rng) != 0)
	{
	  st.rng_diverged++;
	  b->rng = a->rng; /* count each divergence once */
	}
    }
  for (i = 0; i < max_servers; i++)
    st.mismatches += a->n_load[i] != b->n_load[i] || a->n_on[i] != b->n_on[i];
  printf ("n=%u %s: %llu packets, %llu new flows (%llu by the tree, %llu with tied minima), "
	  "%llu mismatches, %llu RNG divergences, %llu non-minimal picks\n",
	  n, policy == LB_RL_POLICY_SED ? "SED" : "LSQ", (unsigned long long) st.packets,
	  (unsigned long long) st.new_flows, (unsigned long long) st.tree_picks,
	  (unsigned long long) st.tied_picks, (unsigned long long) st.mismatches,
	  (unsigned long long) st.rng_diverged, (unsigned long long) st.not_min);
  CHECK_EQ_I (st.mismatches, 0);
  CHECK_EQ_I (st.rng_diverged, 0);
  CHECK_EQ_I (st.not_min, 0);
  CHECK (st.tree_picks > st.new_flows / 4); /* the tree did much of the picking */
  CHECK (st.tied_picks > 0);		    /* and the tie-break draws were exercised */
  lb_rl_destroy (a);
  lb_rl_destroy (b);
  free (open);
  free (w);
}

/* Tree nodes by hand: 5 leaves (P = 8) with known loads under LSQ; the k-th tie. */
static void
test_tree_small_exact (void)
{
  lb_rl_ctx_t *ctx = tc_ctx (5, NULL, LB_RL_POLICY_LSQ, 1 << 8, 7);
  uint32_t i;
  lb_rl_set_scan_max (ctx, 0); /* tree at any n */
  CHECK (ctx->tree.on);
  CHECK_EQ_I (ctx->tree.leaves, 8);
  /* loads 3, 1, 2, 1, 1: minimum 1, three ties (servers 1, 3, 4) */
  ctx->n_load[0] = 3;
  ctx->n_load[1] = 1;
  ctx->n_load[2] = 2;
  ctx->n_load[3] = 1;
  ctx->n_load[4] = 1;
  for (i = 0; i < 5; i++)
    lb_rl_tree_update (ctx, i);
  CHECK (ctx->tree.key[1] == 1.0);
  CHECK_EQ_I (ctx->tree.cnt[1], 3);
  CHECK_EQ_I (ctx->tree.cnt[8 + 5], 0); /* padding */
  /* server 3 goes to 0: alone at the minimum, no draw */
  ctx->n_load[3] = 0;
  lb_rl_tree_update (ctx, 3);
  CHECK (ctx->tree.key[1] == 0.0);
  CHECK_EQ_I (ctx->tree.cnt[1], 1);
  {
    lb_rl_rng_t before = ctx->rng;
    CHECK_EQ_I (lb_rl_policy_choose (ctx, 0), 3);
    CHECK (memcmp (&before, &ctx->rng, sizeof before) == 0);
  }
  lb_rl_destroy (ctx);
}

int
main (void)
{
  test_tree_small_exact ();
  tr_run (65, LB_RL_POLICY_SED, 40000, 11);
  tr_run (65, LB_RL_POLICY_LSQ, 40000, 12);
  tr_run (200, LB_RL_POLICY_SED, 40000, 13);
  tr_run (200, LB_RL_POLICY_LSQ, 40000, 14);
  tr_run (1024, LB_RL_POLICY_SED, 30000, 15);
  tr_run (1024, LB_RL_POLICY_LSQ, 30000, 16);
  tr_run (4096, LB_RL_POLICY_SED, 20000, 17);
  tr_run (4096, LB_RL_POLICY_LSQ, 20000, 18);
  return tc_report ("test_core_tree");
}
