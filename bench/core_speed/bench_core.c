/*
 * bench_core.c — speed of the lb_rl data-plane core on one core.
 *
 * Setup: 64 servers (--servers N to change; weights in [1, 2)), flow table 2^18, 100k
 * established concurrent flows. --scan-max N sets the LSQ/SED scan/tree threshold
 * (default LB_RL_SCAN_MAX: scan up to 64 eligible servers, tree above; 0 = always the
 * tree, a large N = always the scan). --only-new runs the references and the
 * new_/decide_ phases only. Phases (each prints one "RESULT <name> <packets> <ns>" line,
 * ns = thread CPU time of the timed loop, best of --reps repetitions):
 *   ref_hash_fwd    hash the 5-tuple, index a 1024-entry table, store the result
 *   ref_flow_load   hash, load the 64-byte slot hash & (2^18-1) of a 16 MiB array, store a byte
 *                   (the memory floor of any flow-table lookup at this size)
 *   est_batch       ACK packets of random established flows through lb_rl_process_batch (256/call)
 *   est_single      the same through one lb_rl_process call per packet
 *   new_<policy>    SYN packets of fresh flows (lookup miss + decision + insert), batch mode
 *   decide_<policy> the decision alone (lb_rl_policy_choose on the loaded state)
 *   mix_sed         lifecycle trace: SYN, ACK, 7 data ACKs, FIN|ACK per flow, ~100k
 *                   concurrent flows, 10 us between packets, lb_rl_expire every 100k packets
 *
 * With --callgrind the phases run under CALLGRIND_TOGGLE_COLLECT and end with
 * CALLGRIND_DUMP_STATS_AT(<name>); run under
 *   valgrind --tool=callgrind --collect-atstart=no ./bench_core --callgrind
 * and each dump's "totals" is that phase's instruction count.
 */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200112L

#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lb_rl_hash.h"
#include "lb_rl_internal.h"

#ifdef LB_RL_HAVE_CALLGRIND
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_TOGGLE_COLLECT
#define CALLGRIND_DUMP_STATS_AT(x) ((void) (x))
#endif

#define BATCH 256

static uint32_t n_servers = 64;
static uint32_t scan_max = LB_RL_SCAN_MAX;

static int cg_mode = 0;
static uint64_t xs = 0x9E3779B97F4A7C15ULL;

static uint64_t
xrand (void)
{
  xs ^= xs << 13;
  xs ^= xs >> 7;
  xs ^= xs << 17;
  return xs;
}

static double
now_ns (void)
{
  struct timespec ts;
  /* thread CPU time: time spent descheduled (shared machine) is not counted */
  clock_gettime (CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static lb_rl_5tuple_t
mk_key (uint32_t i)
{
  lb_rl_5tuple_t k;
  uint32_t src = 0x0A000000u + (i >> 12), dst = 0x0A640001u;
  memset (&k, 0, sizeof k);
  k.src[10] = k.src[11] = k.dst[10] = k.dst[11] = 0xFF;
  k.src[12] = (uint8_t) (src >> 24);
  k.src[13] = (uint8_t) (src >> 16);
  k.src[14] = (uint8_t) (src >> 8);
  k.src[15] = (uint8_t) src;
  k.dst[12] = (uint8_t) (dst >> 24);
  k.dst[13] = (uint8_t) (dst >> 16);
  k.dst[14] = (uint8_t) (dst >> 8);
  k.dst[15] = (uint8_t) dst;
  k.src_port = (uint16_t) (1024 + (i & 4095));
  k.dst_port = 80;
  k.proto = 6;
  return k;
}

static void
phase_begin (void)
{
  if (cg_mode)
    CALLGRIND_TOGGLE_COLLECT;
}

static void
phase_end (const char *name, uint64_t packets, double ns)
{
  if (cg_mode)
    {
      CALLGRIND_TOGGLE_COLLECT;
      CALLGRIND_DUMP_STATS_AT (name);
    }
  printf ("RESULT %s %llu %.0f\n", name, (unsigned long long) packets, ns);
  fflush (stdout);
}

typedef struct
{
  uint32_t n;
  double *now;
  lb_rl_5tuple_t *keys;
  uint8_t *flags;
  uint32_t *len;
  int32_t *out;
} pkts_t;

static pkts_t
pkts_alloc (uint32_t n)
{
  pkts_t p;
  p.n = n;
  p.now = malloc (n * sizeof *p.now);
  p.keys = malloc (n * sizeof *p.keys);
  p.flags = malloc (n);
  p.len = malloc (n * sizeof *p.len);
  p.out = malloc (n * sizeof *p.out);
  return p;
}

static void
pkts_free (pkts_t *p)
{
  free (p->now);
  free (p->keys);
  free (p->flags);
  free (p->len);
  free (p->out);
}

static void
run_batch (lb_rl_ctx_t *ctx, pkts_t *p)
{
  uint32_t i;
  for (i = 0; i < p->n; i += BATCH)
    {
      uint32_t m = p->n - i < BATCH ? p->n - i : BATCH;
      lb_rl_process_batch (ctx, m, p->now + i, p->keys + i, p->flags + i, p->len + i, NULL,
			   p->out + i);
    }
}

static lb_rl_ctx_t *
make_ctx (uint32_t flows, lb_rl_policy_t pol)
{
  lb_rl_config_t cfg;
  lb_rl_ctx_t *ctx;
  uint32_t i;
  lb_rl_config_default (&cfg);
  cfg.table_size = 1u << 18;
  cfg.policy = pol;
  cfg.seed = 42;
  cfg.max_servers = n_servers;
  /* >= 8 buckets per server (the default 1024 up to 128 servers) */
  while (cfg.ecmp_buckets < 8 * n_servers)
    cfg.ecmp_buckets <<= 1;
  ctx = lb_rl_create (&cfg);
  if (!ctx)
    {
      fprintf (stderr, "lb_rl_create: %s\n", lb_rl_last_error ());
      exit (1);
    }
  lb_rl_set_scan_max (ctx, scan_max);
  for (i = 0; i < n_servers; i++)
    lb_rl_server_add (ctx, i, 1.0 + (double) (xrand () >> 11) / 9007199254740992.0);
  for (i = 0; i < flows; i++)
    {
      lb_rl_5tuple_t k = mk_key (i);
      lb_rl_process (ctx, 0.0, &k, LB_RL_TCP_SYN, 60);
      lb_rl_process (ctx, 0.001, &k, LB_RL_TCP_ACK, 52);
    }
  return ctx;
}

int
main (int argc, char **argv)
{
  uint32_t flows = 100000, n_est = 2000000, n_new = 20000, reps = 5, n_mix = 2000000;
  int only_new = 0;
  uint32_t i, r, pol;
  static const char *pol_names[] = { "ecmp", "wcmp", "lsq", "sed", "lsq2", "sed2" };
  lb_rl_ctx_t *ctx;
  pkts_t est;
  double t0, best;
  for (i = 1; i < (uint32_t) argc; i++)
    {
      if (!strcmp (argv[i], "--callgrind"))
	cg_mode = 1;
      else if (!strcmp (argv[i], "--reps") && i + 1 < (uint32_t) argc)
	reps = (uint32_t) atoi (argv[++i]);
      else if (!strcmp (argv[i], "--servers") && i + 1 < (uint32_t) argc)
	n_servers = (uint32_t) atoi (argv[++i]);
      else if (!strcmp (argv[i], "--scan-max") && i + 1 < (uint32_t) argc)
	scan_max = (uint32_t) strtoul (argv[++i], NULL, 10);
      else if (!strcmp (argv[i], "--only-new"))
	only_new = 1;
    }
  if (cg_mode)
    {
      n_est = 100000;
      n_new = 5000;
      n_mix = 200000;
      reps = 1;
    }

  ctx = make_ctx (flows, LB_RL_POLICY_SED);
  {
    lb_rl_counters_t c;
    lb_rl_counters (ctx, &c);
    printf ("INFO tracked_flows %u untracked_full %llu\n", c.tracked_flows,
	    (unsigned long long) c.untracked_full);
  }

  /* established-flow packets: uniformly random flows, keys laid out as a stream */
  est = pkts_alloc (n_est);
  for (i = 0; i < n_est; i++)
    {
      est.keys[i] = mk_key ((uint32_t) (xrand () % flows));
      est.now[i] = 1.0 + i * 1e-7;
      est.flags[i] = LB_RL_TCP_ACK;
      est.len[i] = 1000;
    }

  /* reference 1: hash and forward through a 1024-entry table */
  {
    uint8_t table[1024];
    for (i = 0; i < 1024; i++)
      table[i] = (uint8_t) (i % 64);
    best = 1e300;
    for (r = 0; r < reps; r++)
      {
	phase_begin ();
	t0 = now_ns ();
	for (i = 0; i < n_est; i++)
	  est.out[i] = table[lb_rl_hash_5tuple (&est.keys[i]) & 1023];
	t0 = now_ns () - t0;
	if (cg_mode)
	  phase_end ("ref_hash_fwd", n_est, t0);
	best = t0 < best ? t0 : best;
      }
    if (!cg_mode)
      phase_end ("ref_hash_fwd", n_est, best);
  }
  /* reference 2: hash and load one 64-byte slot of a 16 MiB array */
  {
    uint32_t slots = 1u << 18;
    void *mem = NULL;
    uint8_t *big;
    /* same memory treatment as the core's flow table: 2 MiB aligned, THP advised */
    if (posix_memalign (&mem, 2u << 20, (size_t) slots * 64) != 0)
      return 1;
#ifdef MADV_HUGEPAGE
    (void) madvise (mem, (size_t) slots * 64, MADV_HUGEPAGE);
#endif
    big = mem;
    for (i = 0; i < slots; i++)
      big[(size_t) i * 64] = (uint8_t) (i % 64);
    best = 1e300;
    for (r = 0; r < reps; r++)
      {
	phase_begin ();
	t0 = now_ns ();
	for (i = 0; i < n_est; i++)
	  est.out[i] = big[(size_t) (lb_rl_hash_5tuple (&est.keys[i]) & (slots - 1)) * 64];
	t0 = now_ns () - t0;
	if (cg_mode)
	  phase_end ("ref_flow_load", n_est, t0);
	best = t0 < best ? t0 : best;
      }
    if (!cg_mode)
      phase_end ("ref_flow_load", n_est, best);
    free (big);
  }

  /* established-flow packets through the core */
  best = 1e300;
  for (r = 0; r < reps && !only_new; r++)
    {
      phase_begin ();
      t0 = now_ns ();
      run_batch (ctx, &est);
      t0 = now_ns () - t0;
      if (cg_mode)
	phase_end ("est_batch", n_est, t0);
      best = t0 < best ? t0 : best;
    }
  if (!cg_mode && !only_new)
    phase_end ("est_batch", n_est, best);
  best = 1e300;
  for (r = 0; r < reps && !only_new; r++)
    {
      phase_begin ();
      t0 = now_ns ();
      for (i = 0; i < n_est; i++)
	est.out[i] = lb_rl_process (ctx, est.now[i], &est.keys[i], est.flags[i], est.len[i]);
      t0 = now_ns () - t0;
      if (cg_mode)
	phase_end ("est_single", n_est, t0);
      best = t0 < best ? t0 : best;
    }
  if (!cg_mode && !only_new)
    phase_end ("est_single", n_est, best);
  for (i = 0; i < n_est && !only_new; i++)
    if (est.out[i] < 0)
      {
	fprintf (stderr, "established packet %u got no server\n", i);
	return 1;
      }

  /* new flows per policy: fresh keys, then RST + expire to restore the state */
  {
    pkts_t syn = pkts_alloc (n_new), rst = pkts_alloc (n_new);
    uint32_t next_key = flows;
    double t = 100.0;
    char name[32];
    for (pol = 0; pol < LB_RL_N_POLICIES; pol++)
      {
	double best_new = 1e300, best_dec = 1e300;
	lb_rl_set_policy (ctx, (lb_rl_policy_t) pol);
	for (r = 0; r < reps; r++)
	  {
	    for (i = 0; i < n_new; i++)
	      {
		syn.keys[i] = rst.keys[i] = mk_key (next_key++);
		syn.now[i] = t;
		rst.now[i] = t + 0.5;
		syn.flags[i] = LB_RL_TCP_SYN;
		rst.flags[i] = LB_RL_TCP_RST;
		syn.len[i] = rst.len[i] = 60;
	      }
	    phase_begin ();
	    t0 = now_ns ();
	    run_batch (ctx, &syn);
	    t0 = now_ns () - t0;
	    if (cg_mode)
	      {
		snprintf (name, sizeof name, "new_%s", pol_names[pol]);
		phase_end (name, n_new, t0);
	      }
	    best_new = t0 < best_new ? t0 : best_new;
	    run_batch (ctx, &rst);
	    t += 10.0;
	    lb_rl_expire (ctx, t, 1u << 30);
	    /* the decision alone, on the same loaded state */
	    phase_begin ();
	    t0 = now_ns ();
	    for (i = 0; i < n_new; i++)
	      syn.out[i] = lb_rl_policy_choose (ctx, lb_rl_hash_5tuple (&syn.keys[i]));
	    t0 = now_ns () - t0;
	    if (cg_mode)
	      {
		snprintf (name, sizeof name, "decide_%s", pol_names[pol]);
		phase_end (name, n_new, t0);
	      }
	    best_dec = t0 < best_dec ? t0 : best_dec;
	  }
	if (!cg_mode)
	  {
	    snprintf (name, sizeof name, "new_%s", pol_names[pol]);
	    phase_end (name, n_new, best_new);
	    snprintf (name, sizeof name, "decide_%s", pol_names[pol]);
	    phase_end (name, n_new, best_dec);
	  }
      }
    pkts_free (&syn);
    pkts_free (&rst);
  }
  lb_rl_destroy (ctx);
  pkts_free (&est);

  /* lifecycle mix under SED */
  if (!only_new)
  {
    const uint32_t per_flow = 10, warm = n_mix / 2;
    uint32_t total = warm + n_mix, *slot_flow, *slot_pos, next_flow = 0;
    pkts_t mix = pkts_alloc (total);
    lb_rl_config_t cfg;
    lb_rl_config_default (&cfg);
    cfg.table_size = 1u << 18;
    /* ~1 s between a flow's packets in this synthetic trace: keep its handshakes (which no
     * real client stretches over seconds) from ending by the 3 s pending timeout */
    cfg.syn_timeout_s = cfg.flow_timeout_s;
    cfg.policy = LB_RL_POLICY_SED;
    cfg.max_servers = n_servers;
    while (cfg.ecmp_buckets < 8 * n_servers)
      cfg.ecmp_buckets <<= 1;
    ctx = lb_rl_create (&cfg);
    lb_rl_set_scan_max (ctx, scan_max);
    for (i = 0; i < n_servers; i++)
      lb_rl_server_add (ctx, i, 1.0 + (i % 2));
    slot_flow = malloc (flows * sizeof *slot_flow);
    slot_pos = calloc (flows, sizeof *slot_pos);
    for (i = 0; i < flows; i++)
      slot_flow[i] = next_flow++;
    for (i = 0; i < total; i++)
      {
	uint32_t s = (uint32_t) (xrand () % flows), pos = slot_pos[s];
	mix.keys[i] = mk_key (1000000 + slot_flow[s]);
	mix.now[i] = i * 1e-5;
	mix.len[i] = 100;
	mix.flags[i] = pos == 0 ? LB_RL_TCP_SYN
		       : pos == per_flow - 1 ? (LB_RL_TCP_FIN | LB_RL_TCP_ACK)
		       : pos == 1 ? LB_RL_TCP_ACK
				  : (LB_RL_TCP_ACK | LB_RL_TCP_PSH);
	if (++slot_pos[s] == per_flow)
	  {
	    slot_pos[s] = 0;
	    slot_flow[s] = next_flow++;
	  }
      }
    {
      pkts_t w = mix, m = mix;
      const uint32_t chunk = 100000;
      w.n = warm;
      run_batch (ctx, &w);
      phase_begin ();
      t0 = now_ns ();
      for (i = warm; i < total; i += chunk)
	{
	  m.n = total - i < chunk ? total - i : chunk;
	  m.now = mix.now + i;
	  m.keys = mix.keys + i;
	  m.flags = mix.flags + i;
	  m.len = mix.len + i;
	  m.out = mix.out + i;
	  run_batch (ctx, &m);
	  lb_rl_expire (ctx, mix.now[i + m.n - 1], 1u << 30);
	}
      t0 = now_ns () - t0;
      phase_end ("mix_sed", n_mix, t0);
    }
    {
      lb_rl_counters_t c;
      lb_rl_counters (ctx, &c);
      printf ("INFO mix tracked_flows %u untracked_full %llu untracked_miss %llu new_flows %llu\n",
	      c.tracked_flows, (unsigned long long) c.untracked_full,
	      (unsigned long long) c.untracked_miss, (unsigned long long) c.new_flows);
    }
    free (slot_flow);
    free (slot_pos);
    pkts_free (&mix);
    lb_rl_destroy (ctx);
  }
  return 0;
}
