/*
 * test_core_policy.c — new-flow policies on constructed states (LSQ, SED,
 * LSQ2, SED2 and their tie-breaking), eligibility (drain, weight 0), every
 * weight-validation verdict, set_weights keeping the last good set, and
 * determinism by seed.
 *
 * Proportions use the bound |X - Np| <= 4.5 sqrt(Np(1-p)) (two-sided
 * false-alarm 6.8e-6 per check); the seeds are fixed.
 */
#include <stdlib.h>

#include "lb_rl_internal.h"
#include "test_core_util.h"

static uint32_t flow_id = 0;

/* Establish q flows on each server i (forced), so n_flow_on[i] = q[i]. */
static void
set_load (lb_rl_ctx_t *ctx, const uint32_t *q, uint32_t n)
{
  uint32_t i, j;
  for (i = 0; i < n; i++)
    for (j = 0; j < q[i]; j++)
      tc_open (ctx, flow_id++, 1.0, (int32_t) i);
  for (i = 0; i < n; i++)
    CHECK_EQ_I (tc_on (ctx, i), q[i]);
}

static int
binom_ok (double x, double n, double p)
{
  double sd = sqrt (n * p * (1.0 - p));
  if (p == 0.0 || p == 1.0)
    return x == n * p;
  return fabs (x - n * p) <= 4.5 * sd;
}

/* Draw `draws` choices without changing state; check the distribution. */
static void
check_dist (lb_rl_ctx_t *ctx, const double *p, uint32_t n, const char *what)
{
  const uint32_t draws = 60000;
  uint32_t cnt[64] = { 0 }, d, i;
  int ok = 1;
  for (d = 0; d < draws; d++)
    {
      int32_t s = lb_rl_policy_choose (ctx, d);
      if (s < 0 || (uint32_t) s >= n)
	{
	  ok = 0;
	  break;
	}
      cnt[s]++;
    }
  for (i = 0; i < n && ok; i++)
    ok = binom_ok (cnt[i], draws, p[i]);
  if (!ok)
    {
      fprintf (stderr, "%s: counts", what);
      for (i = 0; i < n; i++)
	fprintf (stderr, " %u(%.0f)", cnt[i], p[i] * draws);
      fprintf (stderr, "\n");
    }
  CHECK (ok);
}

static void
test_lsq_sed (void)
{
  double w[4] = { 1.0, 2.0, 4.0, 1.0 };
  uint32_t q1[4] = { 3, 1, 2, 1 };
  lb_rl_ctx_t *ctx = tc_ctx (4, w, LB_RL_POLICY_LSQ, 1 << 10, 11);
  set_load (ctx, q1, 4);
  {
    /* LSQ: argmin n_flow_on = {1, 3}, tie at random */
    double p[4] = { 0, 0.5, 0, 0.5 };
    check_dist (ctx, p, 4, "lsq ties");
  }
  /* SED: (q+1)/w = (4, 1, 0.75, 2) -> server 2 */
  lb_rl_set_policy (ctx, LB_RL_POLICY_SED);
  {
    double p[4] = { 0, 0, 1, 0 };
    check_dist (ctx, p, 4, "sed");
  }
  /* SED with weights (4,1,3,2): (1, 2, 1, 1) -> tie {0, 2, 3} */
  {
    double w2[4] = { 4.0, 1.0, 3.0, 2.0 };
    double p[4] = { 1.0 / 3, 0, 1.0 / 3, 1.0 / 3 };
    CHECK_EQ_I (lb_rl_set_weights (ctx, w2, 4), LB_RL_W_OK);
    check_dist (ctx, p, 4, "sed ties");
  }
  /* LSQ2 with loads (3,1,2,1): pairs uniform over 6; the lighter wins,
   * equal loads {1,3} tie at random.
   * P(0)=0; P(1)= [ (0,1)+(1,2) + (1,3)/2 ]/6 = 2.5/6; P(3) = 2.5/6; P(2) = (0,2)/6 = 1/6. */
  lb_rl_set_policy (ctx, LB_RL_POLICY_LSQ2);
  {
    double p[4] = { 0, 2.5 / 6, 1.0 / 6, 2.5 / 6 };
    check_dist (ctx, p, 4, "lsq2");
  }
  /* SED2 with weights (4,1,3,2) and loads (3,1,2,1): scores (1,2,1,1).
   * Server 1 never wins; pairs among {0,2,3} tie at random:
   * P(0) = [(0,1) + (0,2)/2 + (0,3)/2]/6 = 2/6, same for 2 and 3. */
  lb_rl_set_policy (ctx, LB_RL_POLICY_SED2);
  {
    double p[4] = { 1.0 / 3, 0, 1.0 / 3, 1.0 / 3 };
    check_dist (ctx, p, 4, "sed2");
  }
  /* eligibility: drain 0 and weight 0 on 2 -> SED2 only over {1, 3}:
   * scores (2, 1) -> always 3; LSQ over {1,3} with loads (1,1) ties. */
  {
    double w3[4] = { 4.0, 1.0, 0.0, 2.0 };
    double p3[4] = { 0, 0, 0, 1 };
    double pl[4] = { 0, 0.5, 0, 0.5 };
    lb_rl_set_weights (ctx, w3, 4);
    lb_rl_server_drain (ctx, 0, 1);
    check_dist (ctx, p3, 4, "sed2 eligible");
    lb_rl_set_policy (ctx, LB_RL_POLICY_LSQ);
    check_dist (ctx, pl, 4, "lsq eligible");
    /* a single eligible server is always chosen, by every policy */
    lb_rl_server_drain (ctx, 1, 1);
    {
      double p1[4] = { 0, 0, 0, 1 };
      lb_rl_policy_t pol;
      for (pol = 0; pol < LB_RL_N_POLICIES; pol++)
	{
	  lb_rl_set_policy (ctx, pol);
	  check_dist (ctx, p1, 4, "single");
	}
    }
    CHECK_EQ_I (lb_rl_set_policy (ctx, LB_RL_N_POLICIES), LB_RL_E_INVALID);
  }
  lb_rl_destroy (ctx);
}

static void
test_lsq2_distinct (void)
{
  /* 3 servers, loads (0,1,2): the loaded server 2 can never be picked, and
   * server 0 wins whenever it is a candidate: P(0)=2/3, P(1)=1/3. This fails
   * if the two candidates may coincide (then P(2) > 0). */
  uint32_t q[3] = { 0, 1, 2 };
  double p[3] = { 2.0 / 3, 1.0 / 3, 0 };
  lb_rl_ctx_t *ctx = tc_ctx (3, NULL, LB_RL_POLICY_LSQ2, 1 << 8, 21);
  set_load (ctx, q, 3);
  check_dist (ctx, p, 3, "lsq2 distinct");
  lb_rl_destroy (ctx);
}

static void
test_weights_validate (void)
{
  const double inf = 1.0 / 0.0, nan = 0.0 / 0.0;
  uint64_t present[1] = { 0x0B }; /* servers 0, 1, 3 */
  uint64_t all[LB_RL_MAX_BITMAP_WORDS], high[LB_RL_MAX_BITMAP_WORDS] = { 0 };
  static double big4k[LB_RL_MAX_SERVERS + 1];
  double ok[4] = { 1, 2, 0, 3 };
  double nonfin[4] = { 1, inf, 0, 3 };
  double nanv[4] = { 1, 1, 0, nan };
  double neg[4] = { 1, -0.5, 0, 3 };
  double negzero[4] = { 1, -0.0, 0, 3 };
  double zero[4] = { 0, 0, 0, 0 };
  double absent[4] = { 1, 1, 0.5, 1 };
  double both[4] = { -1, inf, 0, 0 };
  double absent_zero_present[4] = { 0, 0, 2, 0 };
  uint32_t i;
  for (i = 0; i < LB_RL_MAX_BITMAP_WORDS; i++)
    all[i] = ~0ULL;
  for (i = 0; i <= LB_RL_MAX_SERVERS; i++)
    big4k[i] = 1;
  CHECK_EQ_I (lb_rl_weights_validate (ok, 4, present, 1), LB_RL_W_OK);
  CHECK_EQ_I (lb_rl_weights_validate (nonfin, 4, present, 1), LB_RL_W_NONFINITE);
  CHECK_EQ_I (lb_rl_weights_validate (nanv, 4, present, 1), LB_RL_W_NONFINITE);
  CHECK_EQ_I (lb_rl_weights_validate (neg, 4, present, 1), LB_RL_W_NEGATIVE);
  CHECK_EQ_I (lb_rl_weights_validate (negzero, 4, present, 1), LB_RL_W_OK);
  CHECK_EQ_I (lb_rl_weights_validate (zero, 4, present, 1), LB_RL_W_ALL_ZERO);
  CHECK_EQ_I (lb_rl_weights_validate (absent, 4, present, 1), LB_RL_W_ABSENT_SERVER);
  CHECK_EQ_I (lb_rl_weights_validate (both, 4, present, 1), LB_RL_W_NONFINITE);
  CHECK_EQ_I (lb_rl_weights_validate (absent_zero_present, 4, present, 1),
	      LB_RL_W_ABSENT_SERVER);
  CHECK_EQ_I (lb_rl_weights_validate (ok, 0, present, 1), LB_RL_W_BAD_COUNT);
  CHECK_EQ_I (lb_rl_weights_validate (big4k, LB_RL_MAX_SERVERS + 1, all, LB_RL_MAX_BITMAP_WORDS),
	      LB_RL_W_BAD_COUNT);
  CHECK_EQ_I (lb_rl_weights_validate (big4k, LB_RL_MAX_SERVERS, all, LB_RL_MAX_BITMAP_WORDS),
	      LB_RL_W_OK);
  /* a bitmap of one word: servers 64.. are absent */
  CHECK_EQ_I (lb_rl_weights_validate (big4k, 65, all, 1), LB_RL_W_ABSENT_SERVER);
  CHECK_EQ_I (lb_rl_weights_validate (big4k, 64, all, 1), LB_RL_W_OK);
  /* only server 4000 present: bit 4000 % 64 of word 62 */
  high[4000 / 64] = 1ULL << (4000 % 64);
  memset (big4k, 0, sizeof big4k);
  big4k[4000] = 2.0;
  CHECK_EQ_I (lb_rl_weights_validate (big4k, 4001, high, LB_RL_MAX_BITMAP_WORDS), LB_RL_W_OK);
  big4k[3999] = 1.0;
  CHECK_EQ_I (lb_rl_weights_validate (big4k, 4001, high, LB_RL_MAX_BITMAP_WORDS),
	      LB_RL_W_ABSENT_SERVER);
  CHECK_EQ_I (lb_rl_weights_validate (NULL, 4, present, 1), LB_RL_W_BAD_COUNT);
  CHECK_EQ_I (lb_rl_weights_validate (ok, 2, present, 1), LB_RL_W_OK); /* shorter vector */
}

static void
test_set_weights_keeps_last_good (void)
{
  lb_rl_ctx_t *ctx = tc_ctx (3, NULL, LB_RL_POLICY_SED, 1 << 8, 1);
  double good[3] = { 1, 2, 3 }, bad[3] = { 1, -2, 3 }, got[64];
  double absent[5] = { 1, 1, 1, 0, 1 };
  lb_rl_counters_t c;
  CHECK_EQ_I (lb_rl_set_weights (ctx, good, 3), LB_RL_W_OK);
  CHECK_EQ_I (lb_rl_set_weights (ctx, bad, 3), LB_RL_W_NEGATIVE);
  CHECK_EQ_I (lb_rl_set_weights (ctx, absent, 5), LB_RL_W_ABSENT_SERVER);
  lb_rl_get_weights (ctx, got);
  CHECK (got[0] == 1 && got[1] == 2 && got[2] == 3);
  c = tc_counters (ctx);
  CHECK_EQ_I (c.weight_updates, 1);
  CHECK_EQ_I (c.weight_rejects, 2);
  /* a short vector sets the rest to 0 */
  CHECK_EQ_I (lb_rl_set_weights (ctx, good, 1), LB_RL_W_OK);
  lb_rl_get_weights (ctx, got);
  CHECK (got[0] == 1 && got[1] == 0 && got[2] == 0);
  lb_rl_use_static_weights (ctx);
  lb_rl_get_weights (ctx, got);
  CHECK (got[0] == 1 && got[1] == 1 && got[2] == 1);
  lb_rl_destroy (ctx);
}

static void
test_determinism (void)
{
  /* Same seed and packets => identical choices under every randomised
   * policy; a different seed gives a different sequence. */
  lb_rl_policy_t pols[4] = { LB_RL_POLICY_WCMP, LB_RL_POLICY_LSQ, LB_RL_POLICY_LSQ2,
			     LB_RL_POLICY_SED2 };
  double w[8] = { 1, 2, 3, 4, 1, 2, 3, 4 };
  uint32_t a, i, diff_same = 0, diff_other = 0;
  for (a = 0; a < 4; a++)
    {
      lb_rl_ctx_t *c1 = tc_ctx (8, w, pols[a], 1 << 12, 99);
      lb_rl_ctx_t *c2 = tc_ctx (8, w, pols[a], 1 << 12, 99);
      lb_rl_ctx_t *c3 = tc_ctx (8, w, pols[a], 1 << 12, 100);
      for (i = 0; i < 2000; i++)
	{
	  lb_rl_5tuple_t k = tc_key (i);
	  int32_t s1 = lb_rl_process (c1, i * 0.01, &k, LB_RL_TCP_SYN, 60);
	  int32_t s2 = lb_rl_process (c2, i * 0.01, &k, LB_RL_TCP_SYN, 60);
	  int32_t s3 = lb_rl_process (c3, i * 0.01, &k, LB_RL_TCP_SYN, 60);
	  lb_rl_process (c1, i * 0.01, &k, LB_RL_TCP_ACK, 60);
	  lb_rl_process (c2, i * 0.01, &k, LB_RL_TCP_ACK, 60);
	  lb_rl_process (c3, i * 0.01, &k, LB_RL_TCP_ACK, 60);
	  if (i % 3 == 0)
	    {
	      lb_rl_process (c1, i * 0.01, &k, LB_RL_TCP_RST, 60);
	      lb_rl_process (c2, i * 0.01, &k, LB_RL_TCP_RST, 60);
	      lb_rl_process (c3, i * 0.01, &k, LB_RL_TCP_RST, 60);
	    }
	  diff_same += s1 != s2;
	  diff_other += s1 != s3;
	}
      lb_rl_destroy (c1);
      lb_rl_destroy (c2);
      lb_rl_destroy (c3);
    }
  CHECK_EQ_I (diff_same, 0);
  CHECK (diff_other > 0);
}

int
main (void)
{
  test_lsq_sed ();
  test_lsq2_distinct ();
  test_weights_validate ();
  test_set_weights_keeps_last_good ();
  test_determinism ();
  return tc_report ("test_core_policy");
}
