/*
 * test_core_reservoir.c — reservoir semantics: the first K samples fill slots
 * in order; later samples overwrite a uniformly random slot, so a sample
 * survives n later samples with probability (1 - 1/K)^n (recency-biased, not
 * Algorithm R); sample_prob thins the offered samples binomially.
 *
 * Statistics: each proportion check accepts |X - Np| <= 4.5 sqrt(Np(1-p))
 * (normal approximation of the binomial; two-sided false-alarm probability
 * 6.8e-6 per check). Seeds are fixed, so a run is deterministic.
 */
#include <stdlib.h>

#include "lb_rl_internal.h"
#include "test_core_util.h"

static int
binom_ok (const char *what, double x, double n, double p)
{
  double mu = n * p, sd = sqrt (n * p * (1.0 - p));
  int ok = fabs (x - mu) <= 4.5 * sd;
  printf ("%s: observed %.0f expected %.1f (sd %.1f, z %.2f)\n", what, x, mu, sd,
	  sd > 0 ? (x - mu) / sd : 0.0);
  return ok;
}

static int
res_contains (lb_rl_ctx_t *ctx, double v, lb_rl_sample_t *buf, uint32_t k)
{
  uint32_t i, n = lb_rl_reservoir_read (ctx, 0, LB_RL_RES_FLOW_DURATION, buf, k);
  for (i = 0; i < n; i++)
    if (buf[i].v == v)
      return 1;
  return 0;
}

static void
test_fill_order (void)
{
  lb_rl_config_t cfg;
  lb_rl_ctx_t *ctx;
  lb_rl_sample_t buf[8];
  uint32_t i;
  lb_rl_config_default (&cfg);
  cfg.reservoir_size = 8;
  ctx = lb_rl_create (&cfg);
  lb_rl_server_add (ctx, 0, 1.0);
  for (i = 0; i < 5; i++)
    lb_rl_res_add (ctx, 0, LB_RL_RES_FLOW_DURATION, i, 10.0 + i);
  CHECK_EQ_I (lb_rl_reservoir_read (ctx, 0, LB_RL_RES_FLOW_DURATION, buf, 8), 5);
  for (i = 0; i < 5; i++)
    {
      CHECK_NEAR (buf[i].t, i, 0);
      CHECK_NEAR (buf[i].v, 10.0 + i, 0);
    }
  CHECK_EQ_I (lb_rl_reservoir_read (ctx, 0, LB_RL_RES_FLOW_DURATION, buf, 3), 3);
  CHECK_EQ_I (lb_rl_reservoir_read (ctx, 0, LB_RL_RES_FCT, buf, 8), 0);
  for (i = 5; i < 100; i++)
    lb_rl_res_add (ctx, 0, LB_RL_RES_FLOW_DURATION, i, 10.0 + i);
  CHECK_EQ_I (lb_rl_reservoir_read (ctx, 0, LB_RL_RES_FLOW_DURATION, buf, 8), 8);
  /* the newest sample is always present right after it was added */
  CHECK (res_contains (ctx, 109.0, buf, 8));
  /* re-adding the server empties its reservoirs */
  lb_rl_server_remove (ctx, 0);
  lb_rl_server_add (ctx, 0, 1.0);
  CHECK_EQ_I (lb_rl_reservoir_read (ctx, 0, LB_RL_RES_FLOW_DURATION, buf, 8), 0);
  lb_rl_destroy (ctx);
}

static void
test_survival (void)
{
  /* K = 16. For each n: T trials of [add marked sample, add n others, check
   * whether the mark is still there]. Trials are independent because every
   * replacement slot is an independent uniform draw. */
  const uint32_t k = 16, trials = 20000;
  const uint32_t ns[] = { 1, 8, 16, 32, 64 };
  lb_rl_config_t cfg;
  lb_rl_ctx_t *ctx;
  lb_rl_sample_t buf[16];
  double val = 1.0;
  uint32_t a, t, j;
  lb_rl_config_default (&cfg);
  cfg.reservoir_size = k;
  cfg.seed = 12345;
  ctx = lb_rl_create (&cfg);
  lb_rl_server_add (ctx, 0, 1.0);
  for (j = 0; j < k; j++)
    lb_rl_res_add (ctx, 0, LB_RL_RES_FLOW_DURATION, 0.0, -1.0);
  for (a = 0; a < sizeof ns / sizeof ns[0]; a++)
    {
      uint32_t survived = 0;
      double p = pow (1.0 - 1.0 / k, ns[a]);
      char what[64];
      for (t = 0; t < trials; t++)
	{
	  double mark = val;
	  lb_rl_res_add (ctx, 0, LB_RL_RES_FLOW_DURATION, 0.0, mark);
	  val += 1.0;
	  for (j = 0; j < ns[a]; j++)
	    {
	      lb_rl_res_add (ctx, 0, LB_RL_RES_FLOW_DURATION, 0.0, val);
	      val += 1.0;
	    }
	  survived += res_contains (ctx, mark, buf, k);
	}
      snprintf (what, sizeof what, "survival K=16 n=%u", ns[a]);
      CHECK (binom_ok (what, survived, trials, p));
    }
  lb_rl_destroy (ctx);
}

static void
test_sample_prob (void)
{
  const uint32_t n = 200000;
  const double p = 0.3;
  lb_rl_config_t cfg;
  lb_rl_ctx_t *ctx;
  lb_rl_server_counters_t sc;
  uint32_t i;
  lb_rl_config_default (&cfg);
  cfg.sample_prob = p;
  cfg.seed = 77;
  ctx = lb_rl_create (&cfg);
  lb_rl_server_add (ctx, 0, 1.0);
  for (i = 0; i < n; i++)
    lb_rl_res_add (ctx, 0, LB_RL_RES_FCT, i, i);
  lb_rl_server_counters (ctx, 0, &sc);
  CHECK (binom_ok ("sample_prob 0.3", (double) sc.n_samples[LB_RL_RES_FCT], n, p));
  lb_rl_destroy (ctx);
  cfg.sample_prob = 0.0;
  ctx = lb_rl_create (&cfg);
  lb_rl_server_add (ctx, 0, 1.0);
  for (i = 0; i < 1000; i++)
    lb_rl_res_add (ctx, 0, LB_RL_RES_FCT, i, i);
  lb_rl_server_counters (ctx, 0, &sc);
  CHECK_EQ_I (sc.n_samples[LB_RL_RES_FCT], 0);
  lb_rl_destroy (ctx);
}

static void
test_packet_samples (void)
{
  /* flow_duration samples come from ACKs of established flows only, with
   * value now - first_seen and time now. */
  lb_rl_ctx_t *ctx = tc_ctx (1, NULL, LB_RL_POLICY_SED, 1 << 8, 1);
  lb_rl_5tuple_t key = tc_key (5);
  lb_rl_sample_t buf[8];
  lb_rl_process (ctx, 10.0, &key, LB_RL_TCP_SYN, 60);
  lb_rl_process (ctx, 10.5, &key, LB_RL_TCP_ACK, 60);		     /* establishes: no sample */
  lb_rl_process (ctx, 11.0, &key, LB_RL_TCP_ACK | LB_RL_TCP_PSH, 60); /* sample 1.0 */
  lb_rl_process (ctx, 11.0, &key, LB_RL_TCP_SYN, 60);		     /* retransmit: none */
  lb_rl_process (ctx, 12.25, &key, LB_RL_TCP_ACK, 60);		     /* sample 2.25 */
  CHECK_EQ_I (lb_rl_reservoir_read (ctx, 0, LB_RL_RES_FLOW_DURATION, buf, 8), 2);
  CHECK_NEAR (buf[0].t, 11.0, 0);
  CHECK_NEAR (buf[0].v, 1.0, 0);
  CHECK_NEAR (buf[1].t, 12.25, 0);
  CHECK_NEAR (buf[1].v, 2.25, 0);
  lb_rl_destroy (ctx);
}

int
main (void)
{
  test_fill_order ();
  test_survival ();
  test_sample_prob ();
  test_packet_samples ();
  return tc_report ("test_core_reservoir");
}
