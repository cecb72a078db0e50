/*
 * test_core_alias.c — WCMP's Vose alias table and the ECMP bucket table.
 *
 * Alias exactness: for several random weight vectors, 10^6 draws through the
 * WCMP policy; Pearson chi-square against the expected counts N w_i / sum w,
 * p-value by the Wilson-Hilferty approximation; the test rejects if
 * p < 1e-4. Power check: the same counts tested against weights with one
 * entry perturbed by 10% must be rejected (p < 1e-4), so the check can fail.
 * ECMP: every server gets floor(m/n) or ceil(m/n) buckets for all n, m tried,
 * and removing one server moves few of the other servers' buckets.
 */
#include <stdlib.h>

#include "lb_rl_internal.h"
#include "test_core_util.h"

static uint64_t xs = 0x243F6A8885A308D3ULL;
static double
urand (void)
{
  xs ^= xs << 13;
  xs ^= xs >> 7;
  xs ^= xs << 17;
  return (double) (xs >> 11) * (1.0 / 9007199254740992.0);
}

static double
chi2_p (const uint64_t *cnt, const double *w, uint32_t n, double total)
{
  double sum = 0, x2 = 0;
  uint32_t i, k = 0;
  for (i = 0; i < n; i++)
    sum += w[i];
  for (i = 0; i < n; i++)
    if (w[i] > 0)
      {
	double e = total * w[i] / sum, d = (double) cnt[i] - e;
	x2 += d * d / e;
	k++;
      }
    else if (cnt[i] != 0)
      return 0.0; /* a zero-weight server was drawn: impossible under H0 */
  return tc_chi2_sf (x2, (double) (k - 1));
}

static void
test_alias_chi2 (void)
{
  const uint32_t sizes[] = { 2, 3, 7, 24, 64, 64 };
  const uint32_t draws = 1000000;
  uint32_t v;
  for (v = 0; v < sizeof sizes / sizeof sizes[0]; v++)
    {
      uint32_t n = sizes[v], i, d;
      double w[64], wp[64];
      uint64_t cnt[64] = { 0 };
      lb_rl_ctx_t *ctx;
      double p, p_pert;
      for (i = 0; i < n; i++)
	{
	  /* weights spanning two decades; the last vector also has zeros */
	  w[i] = pow (10.0, 2.0 * urand ()) * 0.1;
	  if (v == 5 && i % 5 == 0)
	    w[i] = 0.0;
	}
      ctx = tc_ctx (n, w, LB_RL_POLICY_WCMP, 1 << 4, 1000 + v);
      for (d = 0; d < draws; d++)
	{
	  int32_t s = lb_rl_policy_choose (ctx, 0);
	  if (s >= 0 && (uint32_t) s < n)
	    cnt[s]++;
	}
      p = chi2_p (cnt, w, n, draws);
      for (i = 0; i < n; i++)
	wp[i] = w[i];
      wp[1] *= 1.10;
      p_pert = chi2_p (cnt, wp, n, draws);
      printf ("alias n=%u: chi2 p=%.4g (reject if < 1e-4); vs 10%%-perturbed weights p=%.3g\n",
	      n, p, p_pert);
      CHECK (p >= 1e-4);
      CHECK (p_pert < 1e-4);
      lb_rl_destroy (ctx);
    }
}

static void
test_alias_exact_small (void)
{
  /* Exact table check: the column probabilities reassemble the weights.
   * P(i) = sum_j (1/n) [thr_j/2^32 if idx_j == i] + (1/n)(1 - thr_j/2^32)[alias_j == i]. */
  double w[5] = { 1.0, 2.0, 3.0, 0.5, 10.0 };
  uint16_t idx[5] = { 0, 1, 2, 3, 4 }, alias[5];
  uint64_t thr[5];
  double prob[5] = { 0 }, sum = 16.5;
  uint32_t j;
  lb_rl_work_t wk;
  CHECK (lb_rl_work_alloc (&wk, 5) == 0);
  lb_rl_alias_build (w, idx, 5, thr, alias, &wk);
  lb_rl_work_free (&wk);
  for (j = 0; j < 5; j++)
    {
      double keep = (double) thr[j] / 4294967296.0;
      prob[idx[j]] += keep / 5.0;
      prob[alias[j]] += (1.0 - keep) / 5.0;
    }
  for (j = 0; j < 5; j++)
    CHECK_NEAR (prob[j], w[j] / sum, 1e-9);
}

static void
test_ecmp_even (void)
{
  /* every n up to 64, then a few large server counts (indices beyond 255) */
  const uint32_t ms[] = { 64, 1024, 4096, 32768 };
  const uint32_t big_n[] = { 100, 256, 257, 1000, 1024, 4095, 4096 };
  uint32_t a, n, i, v;
  uint16_t elig[LB_RL_MAX_SERVERS];
  static uint32_t cnt[LB_RL_MAX_SERVERS];
  lb_rl_work_t wk;
  CHECK (lb_rl_work_alloc (&wk, LB_RL_MAX_SERVERS) == 0);
  for (i = 0; i < LB_RL_MAX_SERVERS; i++)
    elig[i] = (uint16_t) i;
  for (a = 0; a < 4; a++)
    {
      uint32_t m = ms[a];
      uint16_t *b = malloc (m * sizeof *b);
      int bad = 0;
      for (v = 0; v < 64 + 7; v++)
	{
	  n = v < 64 ? v + 1 : big_n[v - 64];
	  if (m == 32768 && n <= 64)
	    continue;
	  memset (cnt, 0, sizeof cnt);
	  lb_rl_ecmp_fill (b, m, elig, n, &wk);
	  for (i = 0; i < m; i++)
	    {
	      if (b[i] >= n)
		bad++;
	      else
		cnt[b[i]]++;
	    }
	  for (i = 0; i < n; i++)
	    if (cnt[i] != m / n && cnt[i] != (m + n - 1) / n)
	      bad++;
	}
      CHECK_EQ_I (bad, 0);
      free (b);
    }
  lb_rl_work_free (&wk);
}

static void
test_ecmp_disruption (void)
{
  /* 16 servers, 1024 buckets; remove server 5: count buckets of the other 15
   * servers that changed. Round-robin interleaving would move ~94% of them;
   * the Maglev fill should move far fewer (we require < 25%). */
  uint16_t elig[16], elig2[15], b1[1024], b2[1024];
  uint32_t i, moved = 0, others = 0;
  lb_rl_work_t wk;
  CHECK (lb_rl_work_alloc (&wk, 16) == 0);
  for (i = 0; i < 16; i++)
    elig[i] = (uint16_t) i;
  for (i = 0; i < 15; i++)
    elig2[i] = (uint16_t) (i < 5 ? i : i + 1);
  lb_rl_ecmp_fill (b1, 1024, elig, 16, &wk);
  lb_rl_ecmp_fill (b2, 1024, elig2, 15, &wk);
  lb_rl_work_free (&wk);
  for (i = 0; i < 1024; i++)
    if (b1[i] != 5)
      {
	others++;
	moved += b1[i] != b2[i];
      }
  printf ("ecmp: removing 1 of 16 servers moved %u of %u other buckets (%.1f%%)\n", moved,
	  others, 100.0 * moved / others);
  CHECK (moved * 4 < others);
}

static void
test_ecmp_through_ctx (void)
{
  /* The context's ECMP table covers exactly the eligible servers, evenly. */
  double w[6] = { 1, 1, 0, 1, 1, 1 };
  lb_rl_ctx_t *ctx = tc_ctx (6, w, LB_RL_POLICY_ECMP, 1 << 8, 1);
  uint32_t cnt[6] = { 0 }, b;
  lb_rl_server_drain (ctx, 4, 1);
  for (b = 0; b < 1024; b++)
    {
      int32_t s = lb_rl_ecmp_bucket (ctx, b);
      CHECK (s >= 0 && s < 6);
      if (s >= 0 && s < 6)
	cnt[s]++;
    }
  CHECK_EQ_I (cnt[2], 0);
  CHECK_EQ_I (cnt[4], 0);
  CHECK (cnt[0] == 256 && cnt[1] == 256 && cnt[3] == 256 && cnt[5] == 256);
  lb_rl_destroy (ctx);
}

int
main (void)
{
  test_alias_exact_small ();
  test_alias_chi2 ();
  test_ecmp_even ();
  test_ecmp_disruption ();
  test_ecmp_through_ctx ();
  return tc_report ("test_core_alias");
}
