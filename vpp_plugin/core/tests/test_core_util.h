/*
 * test_core_util.h — tiny check macros and helpers shared by the core's CTest
 * programs. A test program exits 0 iff every CHECK held.
 */
#ifndef TEST_CORE_UTIL_H
#define TEST_CORE_UTIL_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lb_rl_core.h"

static int tc_failures = 0;
static int tc_checks = 0;

#define CHECK(cond)                                                                      \
  do                                                                                     \
    {                                                                                    \
      tc_checks++;                                                                       \
      if (!(cond))                                                                       \
	{                                                                                \
	  tc_failures++;                                                                 \
	  fprintf (stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
	}                                                                                \
    }                                                                                    \
  while (0)

#define CHECK_EQ_I(a, b)                                                                 \
  do                                                                                     \
    {                                                                                    \
      long long _a = (long long) (a), _b = (long long) (b);                              \
      tc_checks++;                                                                       \
      if (_a != _b)                                                                      \
	{                                                                                \
	  tc_failures++;                                                                 \
	  fprintf (stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__,   \
		   __LINE__, #a, #b, _a, _b);                                            \
	}                                                                                \
    }                                                                                    \
  while (0)

#define CHECK_NEAR(a, b, tol)                                                            \
  do                                                                                     \
    {                                                                                    \
      double _a = (double) (a), _b = (double) (b);                                       \
      tc_checks++;                                                                       \
      if (!(fabs (_a - _b) <= (tol)))                                                    \
	{                                                                                \
	  tc_failures++;                                                                 \
	  fprintf (stderr, "%s:%d: CHECK failed: %s ~ %s (%.17g vs %.17g, tol %g)\n",    \
		   __FILE__, __LINE__, #a, #b, _a, _b, (double) (tol));                  \
	}                                                                                \
    }                                                                                    \
  while (0)

static inline int
tc_report (const char *name)
{
  printf ("%s: %d checks, %d failures\n", name, tc_checks, tc_failures);
  return tc_failures == 0 ? 0 : 1;
}

/* Flow key for client i: 10.0.(i>>8).(i&255):(1024 + i % 50000) -> 10.1.0.1:80 TCP, v4-mapped. */
static inline lb_rl_5tuple_t
tc_key (uint32_t i)
{
  lb_rl_5tuple_t k;
  uint32_t src = (10u << 24) | (i & 0xFFFFFF), dst = (10u << 24) | (1u << 16) | 1u;
  memset (&k, 0, sizeof k);
  k.src[10] = k.src[11] = 0xFF;
  k.dst[10] = k.dst[11] = 0xFF;
  k.src[12] = (uint8_t) (src >> 24);
  k.src[13] = (uint8_t) (src >> 16);
  k.src[14] = (uint8_t) (src >> 8);
  k.src[15] = (uint8_t) src;
  k.dst[12] = (uint8_t) (dst >> 24);
  k.dst[13] = (uint8_t) (dst >> 16);
  k.dst[14] = (uint8_t) (dst >> 8);
  k.dst[15] = (uint8_t) dst;
  k.src_port = (uint16_t) (1024 + (i >> 24) * 7 + i % 50000);
  k.dst_port = 80;
  k.proto = 6;
  return k;
}

/* A context with n servers of weight 1 (or w[i] if w != NULL). */
static inline lb_rl_ctx_t *
tc_ctx (uint32_t n, const double *w, lb_rl_policy_t policy, uint32_t table_size, uint64_t seed)
{
  lb_rl_config_t cfg;
  lb_rl_ctx_t *ctx;
  uint32_t i;
  lb_rl_config_default (&cfg);
  cfg.policy = policy;
  cfg.table_size = table_size;
  cfg.seed = seed;
  ctx = lb_rl_create (&cfg);
  if (!ctx)
    {
      fprintf (stderr, "lb_rl_create: %s\n", lb_rl_last_error ());
      return NULL;
    }
  for (i = 0; i < n; i++)
    lb_rl_server_add (ctx, i, w ? w[i] : 1.0);
  return ctx;
}

static inline int64_t
tc_on (lb_rl_ctx_t *ctx, uint32_t srv)
{
  lb_rl_server_counters_t c;
  lb_rl_server_counters (ctx, srv, &c);
  return c.n_flow_on;
}

static inline int64_t
tc_pending (lb_rl_ctx_t *ctx, uint32_t srv)
{
  lb_rl_server_counters_t c;
  lb_rl_server_counters (ctx, srv, &c);
  return c.n_flow_pending;
}

static inline lb_rl_counters_t
tc_counters (lb_rl_ctx_t *ctx)
{
  lb_rl_counters_t c;
  lb_rl_counters (ctx, &c);
  return c;
}

/* Open flow key(i) at time t with SYN then ACK (established); returns its server. */
static inline int32_t
tc_open (lb_rl_ctx_t *ctx, uint32_t i, double t, int32_t forced)
{
  lb_rl_5tuple_t k = tc_key (i);
  int32_t s = lb_rl_process_ex (ctx, t, &k, LB_RL_TCP_SYN, 60, forced);
  lb_rl_process (ctx, t + 1e-4, &k, LB_RL_TCP_ACK, 52);
  return s;
}

/* Normal upper tail P(Z > z). */
static inline double
tc_norm_sf (double z)
{
  return 0.5 * erfc (z / sqrt (2.0));
}

/* Chi-square upper-tail p-value by the Wilson-Hilferty cube-root normal
 * approximation (accurate to ~1e-3 relative for k >= 3 at these tails). */
static inline double
tc_chi2_sf (double x, double k)
{
  double a = 2.0 / (9.0 * k);
  double z = (cbrt (x / k) - (1.0 - a)) / sqrt (a);
  return tc_norm_sf (z);
}

#endif /* TEST_CORE_UTIL_H */
