/*
 * test_core_batch_idx.c — lb_rl_process_batch_idx (keys gathered from a table by index)
 * equals one lb_rl_process_ex call per packet on an identically seeded context: same
 * server per packet, same context and per-server counters, same reservoirs. The trace
 * interleaves 300 flows (SYN, ACK, data, ACKs, FIN or RST), some forced, over 6 servers
 * with SED, so it exercises new-flow decisions, the RNG (ties, reservoir slots) and closes.
 */
#include <stdlib.h>

#include "test_core_util.h"

#define N_FLOWS 300
#define PER_FLOW 6
#define N_PKT (N_FLOWS * PER_FLOW)

/* xorshift for the trace only (independent of the core's RNG) */
static uint64_t trace_state = 0x9E3779B97F4A7C15ull;
static uint32_t
trace_rand (void)
{
  trace_state ^= trace_state << 13;
  trace_state ^= trace_state >> 7;
  trace_state ^= trace_state << 17;
  return (uint32_t) (trace_state >> 32);
}

static void
test_batch_idx_equals_singles (void)
{
  static lb_rl_5tuple_t table[N_FLOWS];
  static double now[N_PKT];
  static uint32_t idx[N_PKT], len[N_PKT];
  static uint8_t flags[N_PKT];
  static int32_t forced[N_PKT], out[N_PKT], single[N_PKT];
  uint32_t next[N_FLOWS] = { 0 };
  double w[6] = { 2, 2, 2, 4, 4, 4 };
  lb_rl_ctx_t *a = tc_ctx (6, w, LB_RL_POLICY_SED, 1 << 12, 99);
  lb_rl_ctx_t *b = tc_ctx (6, w, LB_RL_POLICY_SED, 1 << 12, 99);
  uint32_t i, f, n = 0, s;
  double t = 0.0;

  CHECK (a != NULL && b != NULL);
  if (!a || !b)
    return;
  for (f = 0; f < N_FLOWS; f++)
    table[f] = tc_key (f * 7 + 3);
  /* flows start in order; each packet goes to a random flow among the 40 newest that
   * have packets left, so flows overlap and n_flow_on varies */
  {
    uint32_t started = 0;
    while (n < N_PKT)
      {
	uint32_t lo = started > 40 ? started - 40 : 0, pick;
	if (started < N_FLOWS && (trace_rand () % 3 == 0 || started == lo))
	  pick = started++;
	else
	  {
	    pick = lo + trace_rand () % (started - lo);
	    if (next[pick] >= PER_FLOW)
	      {
		for (pick = lo; pick < started && next[pick] >= PER_FLOW; pick++)
		  ;
		if (pick == started)
		  {
		    if (started == N_FLOWS)
		      break;
		    pick = started++;
		  }
	      }
	  }
	t += 1e-3 * (trace_rand () % 10);
	now[n] = t;
	idx[n] = pick;
	switch (next[pick])
	  {
	  case 0: flags[n] = LB_RL_TCP_SYN; len[n] = 60; break;
	  case 1: flags[n] = LB_RL_TCP_ACK; len[n] = 52; break;
	  case 2: flags[n] = LB_RL_TCP_ACK | LB_RL_TCP_PSH; len[n] = 352; break;
	  case 5: flags[n] = (pick % 2 ? LB_RL_TCP_RST : LB_RL_TCP_FIN) | LB_RL_TCP_ACK; len[n] = 52; break;
	  default: flags[n] = LB_RL_TCP_ACK; len[n] = 52; break;
	  }
	forced[n] = (next[pick] == 0 && pick % 5 == 0) ? (int32_t) (pick % 6) : -1;
	next[pick]++;
	n++;
      }
  }
  CHECK (n > N_PKT / 2);

  lb_rl_process_batch_idx (a, n, now, table, idx, flags, len, forced, out);
  for (i = 0; i < n; i++)
    single[i] = lb_rl_process_ex (b, now[i], &table[idx[i]], flags[i], len[i], forced[i]);
  for (i = 0; i < n; i++)
    if (out[i] != single[i])
      {
	CHECK_EQ_I (out[i], single[i]);
	break;
      }
  for (i = 0; i < n; i++)
    if (forced[i] >= 0)
      CHECK_EQ_I (out[i], forced[i]);
  {
    lb_rl_counters_t ca = tc_counters (a), cb = tc_counters (b);
    CHECK (memcmp (&ca, &cb, sizeof ca) == 0);
    CHECK_EQ_I (ca.packets, n);
    CHECK (ca.new_flows > 100);
  }
  for (s = 0; s < 6; s++)
    {
      lb_rl_server_counters_t sa, sb;
      lb_rl_sample_t ra[128], rb[128];
      uint32_t k, na, nb;
      lb_rl_server_counters (a, s, &sa);
      lb_rl_server_counters (b, s, &sb);
      CHECK (memcmp (&sa, &sb, sizeof sa) == 0);
      for (k = 0; k < LB_RL_N_RES; k++)
	{
	  na = lb_rl_reservoir_read (a, s, (lb_rl_res_kind_t) k, ra, 128);
	  nb = lb_rl_reservoir_read (b, s, (lb_rl_res_kind_t) k, rb, 128);
	  CHECK_EQ_I (na, nb);
	  CHECK (na == nb && memcmp (ra, rb, na * sizeof ra[0]) == 0);
	}
    }
  /* an empty batch touches nothing */
  lb_rl_process_batch_idx (a, 0, now, table, idx, flags, len, NULL, out);
  CHECK_EQ_I (tc_counters (a).packets, n);
  lb_rl_destroy (a);
  lb_rl_destroy (b);
}

int
main (void)
{
  test_batch_idx_equals_singles ();
  return tc_report ("test_core_batch_idx");
}
