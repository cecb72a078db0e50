/*
 * lb_rl_policy.c — new-flow server selection over the published weight
 * tables. Called once per new flow; reads only ctx->wt, the counters and the
 * RNG. No allocation, no division (SED multiplies by the precomputed 1/w).
 *
 * A server's load for LSQ/SED counts its established flows and its pending
 * ones (SYN seen, handshake not done): counting only the established ones
 * sends every SYN of a burst shorter than one RTT to the same server.
 *
 * LSQ/SED over up to scan_max (LB_RL_SCAN_MAX = 64) eligible servers scan the
 * eligible list; above that they read a tournament tree kept up to date on
 * every load change (lb_rl_load_add), which picks the same server with the
 * same RNG draws (tests/test_core_tree.c checks both side by side).
 */
#include <math.h>

#include "lb_rl_internal.h"

static inline int64_t
lb_rl_load (const lb_rl_ctx_t *ctx, uint32_t s)
{
  return ctx->n_load[s];
}

/* argmin over the eligible list of a per-server score, ties uniformly at
 * random: the tie set is collected in one pass, then one draw picks from it.
 * (A branch-free two-pass variant measured ~30% slower for SED at 64 servers:
 * its running minimum is a loop-carried minsd chain, while here a new minimum
 * is rare after the first few servers and the branch predicts well.) */
static int32_t
lb_rl_argmin_wide (lb_rl_ctx_t *ctx, const lb_rl_wtab_t *t);

/* Up to LB_RL_SCAN_MAX eligible servers the ties are eligible-list positions in a u8
 * stack array, mapped to the server at the end: the loop issue 10 measured (a u16 tie
 * array of server indices cost one more instruction per tie); above, only a scan forced
 * for a comparison with the tree (tests, benchmarks) runs, in lb_rl_argmin_wide. */
static int32_t
lb_rl_argmin_lsq (lb_rl_ctx_t *ctx, const lb_rl_wtab_t *t)
{
  uint8_t ties[LB_RL_SCAN_MAX];
  uint32_t nt = 0, j;
  int64_t best = INT64_MAX;
  if (LB_RL_UNLIKELY (t->n_elig > LB_RL_SCAN_MAX))
    return lb_rl_argmin_wide (ctx, t);
  for (j = 0; j < t->n_elig; j++)
    {
      int64_t q = lb_rl_load (ctx, t->elig[j]);
      if (q < best)
	{
	  best = q;
	  nt = 0;
	}
      if (q == best)
	ties[nt++] = (uint8_t) j;
    }
  return t->elig[nt == 1 ? ties[0] : ties[lb_rl_rng_bounded (&ctx->rng, nt)]];
}

static int32_t
lb_rl_argmin_sed (lb_rl_ctx_t *ctx, const lb_rl_wtab_t *t)
{
  uint8_t ties[LB_RL_SCAN_MAX];
  uint32_t nt = 0, j;
  double best = 0.0;
  if (LB_RL_UNLIKELY (t->n_elig > LB_RL_SCAN_MAX))
    return lb_rl_argmin_wide (ctx, t);
  for (j = 0; j < t->n_elig; j++)
    {
      uint16_t s = t->elig[j];
      double q = (double) (lb_rl_load (ctx, s) + 1) * t->inv_w[s];
      if (j == 0 || q < best)
	{
	  best = q;
	  nt = 0;
	}
      if (q == best)
	ties[nt++] = (uint8_t) j;
    }
  return t->elig[nt == 1 ? ties[0] : ties[lb_rl_rng_bounded (&ctx->rng, nt)]];
}

/* The same scan at any n (u16 positions in ctx->ties), LSQ or SED by the policy. */
static int32_t
lb_rl_argmin_wide (lb_rl_ctx_t *ctx, const lb_rl_wtab_t *t)
{
  int sed = ctx->cfg.policy == LB_RL_POLICY_SED;
  uint16_t *ties = ctx->ties;
  uint32_t nt = 0, j;
  double best = 0.0;
  for (j = 0; j < t->n_elig; j++)
    {
      uint16_t s = t->elig[j];
      double q = sed ? (double) (lb_rl_load (ctx, s) + 1) * t->inv_w[s]
		     : (double) lb_rl_load (ctx, s);
      if (j == 0 || q < best)
	{
	  best = q;
	  nt = 0;
	}
      if (q == best)
	ties[nt++] = (uint16_t) j;
    }
  return t->elig[nt == 1 ? ties[0] : ties[lb_rl_rng_bounded (&ctx->rng, nt)]];
}

/* --- the tournament tree --- */

/* A server's score: exactly the expression of the scans above, so ties and order agree
 * (LSQ's int64 loads are exact as doubles below 2^53). */
static inline double
lb_rl_tree_score (const lb_rl_ctx_t *ctx, const lb_rl_wtab_t *t, uint32_t s)
{
  return ctx->tree.sed ? (double) (lb_rl_load (ctx, s) + 1) * t->inv_w[s]
		       : (double) lb_rl_load (ctx, s);
}

/* Node i from its children: their minimum, and how many leaves attain it. */
static inline void
lb_rl_tree_merge (lb_rl_tree_t *tr, uint32_t i)
{
  double kl = tr->key[2 * i], kr = tr->key[2 * i + 1];
  if (kl < kr)
    {
      tr->key[i] = kl;
      tr->cnt[i] = tr->cnt[2 * i];
    }
  else if (kr < kl)
    {
      tr->key[i] = kr;
      tr->cnt[i] = tr->cnt[2 * i + 1];
    }
  else
    {
      tr->key[i] = kl;
      tr->cnt[i] = tr->cnt[2 * i] + tr->cnt[2 * i + 1];
    }
}

void
lb_rl_tree_rebuild (lb_rl_ctx_t *ctx)
{
  lb_rl_tree_t *tr = &ctx->tree;
  const lb_rl_wtab_t *t = ctx->wt;
  lb_rl_policy_t pol = ctx->cfg.policy;
  uint32_t n = t->n_elig, p = 1, j;
  tr->on = (pol == LB_RL_POLICY_LSQ || pol == LB_RL_POLICY_SED) && n > ctx->scan_max;
  tr->sed = pol == LB_RL_POLICY_SED;
  if (!tr->on)
    {
      tr->leaves = 0;
      return;
    }
  while (p < n)
    p <<= 1;
  tr->leaves = p;
  for (j = 0; j < ctx->cfg.max_servers; j++)
    tr->pos[j] = LB_RL_NO_SERVER_U16;
  for (j = 0; j < p; j++)
    {
      if (j < n)
	{
	  tr->pos[t->elig[j]] = (uint16_t) j;
	  tr->key[p + j] = lb_rl_tree_score (ctx, t, t->elig[j]);
	  tr->cnt[p + j] = 1;
	}
      else
	{
	  /* padding: count 0, so it adds nothing even where its +inf ties the minimum */
	  tr->key[p + j] = INFINITY;
	  tr->cnt[p + j] = 0;
	}
    }
  for (j = p - 1; j >= 1; j--)
    lb_rl_tree_merge (tr, j);
}

void
lb_rl_tree_update (lb_rl_ctx_t *ctx, uint32_t srv)
{
  lb_rl_tree_t *tr = &ctx->tree;
  uint32_t pos = tr->pos[srv], i;
  if (pos == LB_RL_NO_SERVER_U16)
    return; /* not eligible (drained, weight 0): not in the tree */
  i = tr->leaves + pos;
  tr->key[i] = lb_rl_tree_score (ctx, ctx->wt, srv);
  for (i >>= 1; i >= 1; i >>= 1)
    {
      double k = tr->key[i];
      uint32_t c = tr->cnt[i];
      lb_rl_tree_merge (tr, i);
      if (tr->key[i] == k && tr->cnt[i] == c)
	break; /* unchanged: nothing above changes either */
    }
}

/* The scan's choice: draw only when the minimum is tied, then take the k-th tied
 * leaf from the left (eligible order), steering by the children's counts. */
static int32_t
lb_rl_tree_pick (lb_rl_ctx_t *ctx, const lb_rl_wtab_t *t)
{
  const lb_rl_tree_t *tr = &ctx->tree;
  uint32_t nt = tr->cnt[1], k = 0, i = 1;
  double best = tr->key[1];
  if (nt > 1)
    k = lb_rl_rng_bounded (&ctx->rng, nt);
  while (i < tr->leaves)
    {
      uint32_t l = 2 * i;
      if (tr->key[l] == best)
	{
	  if (k < tr->cnt[l])
	    {
	      i = l;
	      continue;
	    }
	  k -= tr->cnt[l];
	}
      i = l + 1;
    }
  return t->elig[i - tr->leaves];
}

void
lb_rl_set_scan_max (lb_rl_ctx_t *ctx, uint32_t scan_max)
{
  ctx->scan_max = scan_max;
  lb_rl_tree_rebuild (ctx);
}

/* Two distinct uniformly random eligible candidates (n >= 2). */
static void
lb_rl_two_choices (lb_rl_ctx_t *ctx, const lb_rl_wtab_t *t, uint16_t *a, uint16_t *b)
{
  uint32_t n = t->n_elig;
  uint32_t i = lb_rl_rng_bounded (&ctx->rng, n);
  uint32_t k = lb_rl_rng_bounded (&ctx->rng, n - 1);
  if (k >= i)
    k++;
  *a = t->elig[i];
  *b = t->elig[k];
}

int32_t
lb_rl_policy_choose (lb_rl_ctx_t *ctx, uint64_t hash)
{
  const lb_rl_wtab_t *t = LB_RL_ACQUIRE (ctx->wt);
  uint32_t n = t->n_elig;
  uint16_t a, b;
  if (LB_RL_UNLIKELY (n == 0))
    return -1;
  switch (ctx->cfg.policy)
    {
    case LB_RL_POLICY_ECMP:
      return t->ecmp[hash & ctx->ecmp_mask];
    case LB_RL_POLICY_WCMP:
      {
	uint64_t r = lb_rl_rng_next (&ctx->rng);
	uint32_t col = (uint32_t) (((r >> 32) * (uint64_t) n) >> 32);
	return ((uint64_t) (uint32_t) r < t->thr[col]) ? t->elig[col] : t->alias[col];
      }
    case LB_RL_POLICY_LSQ:
      if (n == 1)
	return t->elig[0];
      return LB_RL_UNLIKELY (ctx->tree.on) ? lb_rl_tree_pick (ctx, t) : lb_rl_argmin_lsq (ctx, t);
    case LB_RL_POLICY_SED:
      if (n == 1)
	return t->elig[0];
      return LB_RL_UNLIKELY (ctx->tree.on) ? lb_rl_tree_pick (ctx, t) : lb_rl_argmin_sed (ctx, t);
    case LB_RL_POLICY_LSQ2:
      {
	int64_t qa, qb;
	if (n == 1)
	  return t->elig[0];
	lb_rl_two_choices (ctx, t, &a, &b);
	qa = lb_rl_load (ctx, a);
	qb = lb_rl_load (ctx, b);
	if (qa != qb)
	  return qa < qb ? a : b;
	return (lb_rl_rng_next (&ctx->rng) >> 63) ? a : b;
      }
    case LB_RL_POLICY_SED2:
      {
	double qa, qb;
	if (n == 1)
	  return t->elig[0];
	lb_rl_two_choices (ctx, t, &a, &b);
	qa = (double) (lb_rl_load (ctx, a) + 1) * t->inv_w[a];
	qb = (double) (lb_rl_load (ctx, b) + 1) * t->inv_w[b];
	if (qa != qb)
	  return qa < qb ? a : b;
	return (lb_rl_rng_next (&ctx->rng) >> 63) ? a : b;
      }
    default:
      return -1;
    }
}
