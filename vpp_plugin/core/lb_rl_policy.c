/*
 * lb_rl_policy.c — new-flow server selection over the published weight
 * tables. Called once per new flow; reads only ctx->wt, the counters and the
 * RNG. No allocation, no division (SED multiplies by the precomputed 1/w).
 *
 * A server's load for LSQ/SED counts its established flows and its pending
 * ones (SYN seen, handshake not done): counting only the established ones
 * sends every SYN of a burst shorter than one RTT to the same server.
 */
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
lb_rl_argmin_lsq (lb_rl_ctx_t *ctx, const lb_rl_wtab_t *t)
{
  uint8_t ties[LB_RL_MAX_SERVERS];
  uint32_t nt = 0, j;
  int64_t best = INT64_MAX;
  for (j = 0; j < t->n_elig; j++)
    {
      uint8_t s = t->elig[j];
      int64_t q = lb_rl_load (ctx, s);
      if (q < best)
	{
	  best = q;
	  nt = 0;
	}
      if (q == best)
	ties[nt++] = s;
    }
  return nt == 1 ? ties[0] : ties[lb_rl_rng_bounded (&ctx->rng, nt)];
}

static int32_t
lb_rl_argmin_sed (lb_rl_ctx_t *ctx, const lb_rl_wtab_t *t)
{
  uint8_t ties[LB_RL_MAX_SERVERS];
  uint32_t nt = 0, j;
  double best = 0.0;
  for (j = 0; j < t->n_elig; j++)
    {
      uint8_t s = t->elig[j];
      double q = (double) (lb_rl_load (ctx, s) + 1) * t->inv_w[s];
      if (j == 0 || q < best)
	{
	  best = q;
	  nt = 0;
	}
      if (q == best)
	ties[nt++] = s;
    }
  return nt == 1 ? ties[0] : ties[lb_rl_rng_bounded (&ctx->rng, nt)];
}

/* Two distinct uniformly random eligible candidates (n >= 2). */
static void
lb_rl_two_choices (lb_rl_ctx_t *ctx, const lb_rl_wtab_t *t, uint8_t *a, uint8_t *b)
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
  uint8_t a, b;
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
      return n == 1 ? t->elig[0] : lb_rl_argmin_lsq (ctx, t);
    case LB_RL_POLICY_SED:
      return n == 1 ? t->elig[0] : lb_rl_argmin_sed (ctx, t);
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
