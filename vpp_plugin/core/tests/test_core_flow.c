/*
 * test_core_flow.c — flow table and TCP state machine: stickiness (also across
 * weight, policy and server-set changes), n_flow_on through FIN, RST and
 * timeout (lazy and swept), closed linger, SYN on a closed/expired entry,
 * table-full and untracked forwarding, remove/drain semantics, no leaks.
 */
#include <stdlib.h>

#include "test_core_util.h"

#define SYN LB_RL_TCP_SYN
#define ACK LB_RL_TCP_ACK
#define FIN LB_RL_TCP_FIN
#define RST LB_RL_TCP_RST
#define PSH LB_RL_TCP_PSH

static void
test_tcp_transitions (void)
{
  lb_rl_ctx_t *ctx = tc_ctx (4, NULL, LB_RL_POLICY_SED, 1 << 10, 7);
  lb_rl_5tuple_t k = tc_key (1);
  int32_t s, srv = -1;
  double fs, ls;
  lb_rl_counters_t c;
  lb_rl_server_counters_t sc;

  CHECK_EQ_I (lb_rl_flow_get (ctx, &k, NULL, NULL, NULL), LB_RL_FLOW_NONE);
  s = lb_rl_process (ctx, 1.0, &k, SYN, 60);
  CHECK (s >= 0 && s < 4);
  CHECK_EQ_I (lb_rl_flow_get (ctx, &k, &srv, &fs, &ls), LB_RL_FLOW_SYN);
  CHECK_EQ_I (srv, s);
  CHECK_NEAR (fs, 1.0, 0);
  CHECK_EQ_I (tc_on (ctx, s), 0);
  /* retransmitted SYN: same server, no new decision */
  CHECK_EQ_I (lb_rl_process (ctx, 1.5, &k, SYN, 60), s);
  lb_rl_server_counters (ctx, s, &sc);
  CHECK_EQ_I (sc.n_flow_new, 1);
  /* first pure ACK establishes */
  CHECK_EQ_I (lb_rl_process (ctx, 2.0, &k, ACK, 52), s);
  CHECK_EQ_I (lb_rl_flow_get (ctx, &k, NULL, NULL, &ls), LB_RL_FLOW_EST);
  CHECK_NEAR (ls, 2.0, 0);
  CHECK_EQ_I (tc_on (ctx, s), 1);
  /* more ACK-bearing packets: still one flow on, flow_duration samples */
  CHECK_EQ_I (lb_rl_process (ctx, 3.0, &k, ACK | PSH, 1000), s);
  CHECK_EQ_I (lb_rl_process (ctx, 4.0, &k, ACK, 52), s);
  CHECK_EQ_I (tc_on (ctx, s), 1);
  lb_rl_server_counters (ctx, s, &sc);
  CHECK_EQ_I (sc.n_samples[LB_RL_RES_FLOW_DURATION], 2);
  CHECK_EQ_I (sc.packets, 5);
  CHECK_EQ_I (sc.bytes, 60 + 60 + 52 + 1000 + 52);
  /* FIN closes: -1, fct sample = 5 - 1 */
  CHECK_EQ_I (lb_rl_process (ctx, 5.0, &k, FIN | ACK, 52), s);
  CHECK_EQ_I (tc_on (ctx, s), 0);
  CHECK_EQ_I (lb_rl_flow_get (ctx, &k, NULL, NULL, &ls), LB_RL_FLOW_CLOSED);
  lb_rl_server_counters (ctx, s, &sc);
  CHECK_EQ_I (sc.n_flow_closed, 1);
  CHECK_EQ_I (sc.n_samples[LB_RL_RES_FCT], 1);
  {
    lb_rl_sample_t r[4];
    CHECK_EQ_I (lb_rl_reservoir_read (ctx, s, LB_RL_RES_FCT, r, 4), 1);
    CHECK_NEAR (r[0].t, 5.0, 0);
    CHECK_NEAR (r[0].v, 4.0, 0);
    CHECK_EQ_I (lb_rl_reservoir_read (ctx, s, LB_RL_RES_FLOW_DURATION, r, 4), 2);
    CHECK_NEAR (r[0].v, 2.0, 0);
    CHECK_NEAR (r[1].v, 3.0, 0);
  }
  /* last ACK within linger (default 2 s) reaches the same server, nothing changes */
  CHECK_EQ_I (lb_rl_process (ctx, 6.5, &k, ACK, 52), s);
  CHECK_EQ_I (tc_on (ctx, s), 0);
  CHECK_EQ_I (lb_rl_flow_get (ctx, &k, NULL, NULL, &ls), LB_RL_FLOW_CLOSED);
  CHECK_NEAR (ls, 5.0, 0); /* linger counts from the close */
  /* a second FIN inside linger does not decrement again */
  lb_rl_process (ctx, 6.6, &k, FIN | ACK, 52);
  CHECK_EQ_I (tc_on (ctx, s), 0);
  /* after linger: packet is untracked (miss), entry freed */
  c = tc_counters (ctx);
  CHECK_EQ_I (c.tracked_flows, 1);
  lb_rl_process (ctx, 7.5, &k, ACK, 52);
  c = tc_counters (ctx);
  CHECK_EQ_I (c.untracked_miss, 1);
  CHECK_EQ_I (c.tracked_flows, 0);
  CHECK_EQ_I (lb_rl_flow_get (ctx, &k, NULL, NULL, NULL), LB_RL_FLOW_NONE);

  /* RST on an established flow */
  k = tc_key (2);
  s = lb_rl_process (ctx, 10.0, &k, SYN, 60);
  lb_rl_process (ctx, 10.1, &k, ACK, 52);
  CHECK_EQ_I (tc_on (ctx, s), 1);
  lb_rl_process (ctx, 10.2, &k, RST | ACK, 40);
  CHECK_EQ_I (tc_on (ctx, s), 0);
  lb_rl_server_counters (ctx, s, &sc);
  CHECK_EQ_I (sc.n_flow_closed, 1 + (s == srv));
  /* RST during the handshake: closed, gauge untouched, no fct sample */
  k = tc_key (3);
  s = lb_rl_process (ctx, 11.0, &k, SYN, 60);
  lb_rl_server_counters (ctx, s, &sc);
  {
    uint64_t nfct = sc.n_samples[LB_RL_RES_FCT];
    lb_rl_process (ctx, 11.1, &k, RST, 40);
    CHECK_EQ_I (lb_rl_flow_get (ctx, &k, NULL, NULL, NULL), LB_RL_FLOW_CLOSED);
    lb_rl_server_counters (ctx, s, &sc);
    CHECK_EQ_I (sc.n_samples[LB_RL_RES_FCT], nfct);
    CHECK_EQ_I (sc.n_flow_on, 0);
  }
  /* SYN on a closed entry (within linger) starts a fresh flow */
  c = tc_counters (ctx);
  lb_rl_process (ctx, 11.2, &k, SYN, 60);
  CHECK_EQ_I (lb_rl_flow_get (ctx, &k, NULL, &fs, NULL), LB_RL_FLOW_SYN);
  CHECK_NEAR (fs, 11.2, 0);
  CHECK_EQ_I (tc_counters (ctx).new_flows, c.new_flows + 1);
  /* SYN|ACK or a plain ACK never create an entry */
  k = tc_key (4);
  lb_rl_process (ctx, 12.0, &k, SYN | ACK, 60);
  lb_rl_process (ctx, 12.0, &k, ACK, 60);
  CHECK_EQ_I (lb_rl_flow_get (ctx, &k, NULL, NULL, NULL), LB_RL_FLOW_NONE);
  lb_rl_destroy (ctx);
}

static void
test_timeouts (void)
{
  lb_rl_config_t cfg;
  lb_rl_ctx_t *ctx;
  lb_rl_5tuple_t k;
  lb_rl_server_counters_t sc;
  lb_rl_sample_t r[8];
  int32_t s, s2;
  uint32_t i;
  lb_rl_config_default (&cfg);
  cfg.table_size = 1 << 10;
  cfg.flow_timeout_s = 10.0;
  ctx = lb_rl_create (&cfg);
  lb_rl_server_add (ctx, 0, 1.0);
  lb_rl_server_add (ctx, 1, 1.0);

  /* lazy: a packet after the idle timeout ends the flow (fct = last - first) */
  k = tc_key (1);
  s = lb_rl_process (ctx, 0.0, &k, SYN, 60);
  lb_rl_process (ctx, 1.0, &k, ACK, 60);
  lb_rl_process (ctx, 3.0, &k, ACK, 60);
  CHECK_EQ_I (tc_on (ctx, s), 1);
  lb_rl_process (ctx, 12.9, &k, ACK, 60); /* idle 9.9 s: alive */
  CHECK_EQ_I (tc_on (ctx, s), 1);
  lb_rl_process (ctx, 23.0, &k, ACK, 60); /* idle 10.1 s: timed out, then untracked */
  CHECK_EQ_I (tc_on (ctx, s), 0);
  lb_rl_server_counters (ctx, s, &sc);
  CHECK_EQ_I (sc.n_flow_timeout, 1);
  CHECK_EQ_I (lb_rl_reservoir_read (ctx, s, LB_RL_RES_FCT, r, 8), 1);
  CHECK_NEAR (r[0].v, 12.9, 1e-12);
  CHECK_NEAR (r[0].t, 23.0, 0);
  CHECK_EQ_I (tc_counters (ctx).timeouts, 1);
  CHECK_EQ_I (tc_counters (ctx).untracked_miss, 1);
  CHECK_EQ_I (tc_counters (ctx).tracked_flows, 0);

  /* SYN meeting an expired entry starts a fresh flow */
  k = tc_key (2);
  lb_rl_process (ctx, 30.0, &k, SYN, 60);
  lb_rl_process (ctx, 30.1, &k, ACK, 60);
  s2 = lb_rl_process (ctx, 50.0, &k, SYN, 60);
  CHECK (s2 >= 0);
  CHECK_EQ_I (tc_on (ctx, 0) + tc_on (ctx, 1), 0);
  {
    double fs;
    CHECK_EQ_I (lb_rl_flow_get (ctx, &k, NULL, &fs, NULL), LB_RL_FLOW_SYN);
    CHECK_NEAR (fs, 50.0, 0);
  }
  lb_rl_process (ctx, 50.1, &k, RST, 40);

  /* sweep: 100 established + 20 half-open flows, all idle; expire with a budget */
  for (i = 0; i < 100; i++)
    tc_open (ctx, 100 + i, 100.0, -1);
  for (i = 0; i < 20; i++)
    {
      k = tc_key (300 + i);
      lb_rl_process (ctx, 100.0, &k, SYN, 60);
    }
  CHECK_EQ_I (tc_on (ctx, 0) + tc_on (ctx, 1), 100);
  CHECK_EQ_I (tc_pending (ctx, 0) + tc_pending (ctx, 1), 20);
  /* the RST-closed key(2) (linger 2 s) and the 20 half-open flows (SYN timeout 3 s) */
  CHECK_EQ_I (lb_rl_expire (ctx, 105.0, 1000), 21);
  CHECK_EQ_I (tc_pending (ctx, 0) + tc_pending (ctx, 1), 0);
  CHECK_EQ_I (lb_rl_expire (ctx, 109.0, 1000), 0);
  CHECK_EQ_I (lb_rl_expire (ctx, 111.0, 50), 50);
  CHECK_EQ_I (lb_rl_expire (ctx, 111.0, 1000), 50);
  CHECK_EQ_I (tc_on (ctx, 0) + tc_on (ctx, 1), 0);
  CHECK_EQ_I (tc_counters (ctx).tracked_flows, 0);
  lb_rl_server_counters (ctx, 0, &sc);
  {
    lb_rl_server_counters_t sc1;
    lb_rl_server_counters (ctx, 1, &sc1);
    CHECK_EQ_I (sc.n_flow_timeout + sc1.n_flow_timeout, 1 + 1 + 100);
  }
  lb_rl_destroy (ctx);
}

static void
test_stickiness (void)
{
  /* 2000 established flows; between rounds of packets change weights, policy,
   * drain a server and add a new one: no established flow ever moves. */
  const uint32_t nf = 2000;
  int32_t *srv = malloc (nf * sizeof *srv);
  lb_rl_ctx_t *ctx = tc_ctx (8, NULL, LB_RL_POLICY_SED, 1 << 14, 3);
  double w[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
  double t = 1.0;
  uint32_t i, round, moved = 0;
  for (i = 0; i < nf; i++)
    srv[i] = tc_open (ctx, i, t, -1);
  for (round = 0; round < 8; round++)
    {
      switch (round)
	{
	case 0:
	  CHECK_EQ_I (lb_rl_set_weights (ctx, w, 8), LB_RL_W_OK);
	  break;
	case 1:
	  lb_rl_set_policy (ctx, LB_RL_POLICY_WCMP);
	  break;
	case 2:
	  lb_rl_set_policy (ctx, LB_RL_POLICY_ECMP);
	  break;
	case 3:
	  lb_rl_server_drain (ctx, 3, 1);
	  break;
	case 4:
	  lb_rl_server_add (ctx, 9, 5.0);
	  lb_rl_set_policy (ctx, LB_RL_POLICY_LSQ2);
	  break;
	case 5:
	  w[0] = 0; /* weight 0 acts like drain for new flows */
	  CHECK_EQ_I (lb_rl_set_weights (ctx, w, 8), LB_RL_W_OK);
	  lb_rl_set_policy (ctx, LB_RL_POLICY_SED2);
	  break;
	case 6:
	  lb_rl_use_static_weights (ctx);
	  lb_rl_set_policy (ctx, LB_RL_POLICY_LSQ);
	  break;
	default:
	  break;
	}
      t += 1.0;
      for (i = 0; i < nf; i++)
	{
	  lb_rl_5tuple_t k = tc_key (i);
	  if (lb_rl_process (ctx, t, &k, ACK | PSH, 500) != srv[i])
	    moved++;
	}
      /* new flows in between keep the table busy */
      for (i = 0; i < 50; i++)
	tc_open (ctx, 100000 + round * 50 + i, t, -1);
    }
  CHECK_EQ_I (moved, 0);
  /* drained server 3 got no new flows after the drain */
  {
    lb_rl_server_counters_t sc;
    uint64_t before;
    lb_rl_server_counters (ctx, 3, &sc);
    before = sc.n_flow_new;
    for (i = 0; i < 500; i++)
      tc_open (ctx, 200000 + i, t, -1);
    lb_rl_server_counters (ctx, 3, &sc);
    CHECK_EQ_I (sc.n_flow_new, before);
  }
  free (srv);
  lb_rl_destroy (ctx);
}

static void
test_table_full (void)
{
  /* 8-slot table: probe window = whole table; 9th concurrent SYN is untracked
   * and forwarded by its bucket of the weighted table, as are its later packets. */
  lb_rl_ctx_t *ctx = tc_ctx (4, NULL, LB_RL_POLICY_LSQ, 8, 5);
  lb_rl_counters_t c;
  lb_rl_5tuple_t k;
  int32_t s;
  uint32_t i;
  uint64_t h;
  for (i = 0; i < 8; i++)
    tc_open (ctx, i, 1.0, -1);
  c = tc_counters (ctx);
  CHECK_EQ_I (c.tracked_flows, 8);
  CHECK_EQ_I (c.untracked_full, 0);
  k = tc_key (100);
  h = lb_rl_key_hash (&k);
  s = lb_rl_process (ctx, 1.5, &k, SYN, 60);
  c = tc_counters (ctx);
  CHECK_EQ_I (c.untracked_full, 1);
  CHECK_EQ_I (c.new_flows, 8);
  CHECK_EQ_I (s, lb_rl_untracked_bucket (ctx, (uint32_t) (h & 1023)));
  CHECK_EQ_I (lb_rl_flow_get (ctx, &k, NULL, NULL, NULL), LB_RL_FLOW_NONE);
  for (i = 0; i < 5; i++)
    CHECK_EQ_I (lb_rl_process (ctx, 1.6 + i, &k, ACK, 60), s);
  CHECK_EQ_I (tc_counters (ctx).untracked_miss, 5);
  CHECK_EQ_I (tc_on (ctx, 0) + tc_on (ctx, 1) + tc_on (ctx, 2) + tc_on (ctx, 3), 8);
  /* a closed entry past its linger is reclaimed by the next SYN */
  k = tc_key (0);
  lb_rl_process (ctx, 2.0, &k, FIN | ACK, 52);
  k = tc_key (101);
  lb_rl_process (ctx, 3.0, &k, SYN, 60);
  CHECK_EQ_I (tc_counters (ctx).untracked_full, 2); /* linger (2 s) not over at t=3 */
  lb_rl_process (ctx, 4.5, &k, SYN, 60);
  CHECK_EQ_I (lb_rl_flow_get (ctx, &k, NULL, NULL, NULL), LB_RL_FLOW_SYN);
  CHECK_EQ_I (tc_counters (ctx).untracked_full, 2);
  /* idle entries past the timeout are reclaimed too (and counted as timeouts) */
  k = tc_key (102);
  lb_rl_process (ctx, 100.0, &k, SYN, 60);
  CHECK_EQ_I (lb_rl_flow_get (ctx, &k, NULL, NULL, NULL), LB_RL_FLOW_SYN);
  CHECK_EQ_I (tc_counters (ctx).timeouts, 1);
  CHECK_EQ_I (tc_on (ctx, 0) + tc_on (ctx, 1) + tc_on (ctx, 2) + tc_on (ctx, 3), 6);
  lb_rl_destroy (ctx);
}

static void
test_remove_drain (void)
{
  lb_rl_ctx_t *ctx = tc_ctx (3, NULL, LB_RL_POLICY_LSQ, 1 << 10, 9);
  lb_rl_counters_t c;
  lb_rl_server_counters_t sc;
  uint32_t i, on1 = 0;
  int32_t s;
  CHECK_EQ_I (lb_rl_server_add (ctx, 1, 1.0), LB_RL_E_EXISTS);
  CHECK_EQ_I (lb_rl_server_add (ctx, 64, 1.0), LB_RL_E_INVALID);
  CHECK_EQ_I (lb_rl_server_add (ctx, 5, -1.0), LB_RL_E_INVALID);
  CHECK_EQ_I (lb_rl_server_remove (ctx, 7), LB_RL_E_ABSENT);
  CHECK_EQ_I (lb_rl_server_drain (ctx, 7, 1), LB_RL_E_ABSENT);
  {
    uint64_t bm[2] = { 0, 99 };
    CHECK_EQ_I (lb_rl_servers_present (ctx, bm, 2), 1); /* one word for 64 servers */
    CHECK_EQ_I (bm[0], 7);
    CHECK_EQ_I (bm[1], 0); /* beyond the context: zero-filled */
    CHECK_EQ_I (lb_rl_server_is_present (ctx, 2), 1);
    CHECK_EQ_I (lb_rl_server_is_present (ctx, 3), 0);
    CHECK_EQ_I (lb_rl_server_is_present (ctx, 100000), 0);
  }
  for (i = 0; i < 30; i++)
    tc_open (ctx, i, 1.0, -1);
  for (i = 0; i < 3; i++)
    CHECK_EQ_I (tc_on (ctx, i), 10);
  /* drain 1: its flows continue and close normally; new flows avoid it */
  CHECK_EQ_I (lb_rl_server_drain (ctx, 1, 1), LB_RL_OK);
  for (i = 30; i < 60; i++)
    CHECK (tc_open (ctx, i, 2.0, -1) != 1);
  for (i = 0; i < 30; i++)
    {
      lb_rl_5tuple_t k = tc_key (i);
      int32_t srv;
      lb_rl_flow_get (ctx, &k, &srv, NULL, NULL);
      if (srv == 1)
	{
	  CHECK_EQ_I (lb_rl_process (ctx, 3.0, &k, ACK, 52), 1);
	  on1++;
	}
    }
  CHECK_EQ_I (on1, 10);
  CHECK_EQ_I (tc_on (ctx, 1), 10);
  lb_rl_server_drain (ctx, 1, 0);
  /* forced onto a drained server is allowed (host oracle), absent is not */
  lb_rl_server_drain (ctx, 1, 1);
  CHECK_EQ_I (tc_open (ctx, 500, 3.0, 1), 1);
  CHECK_EQ_I (tc_on (ctx, 1), 11);
  CHECK (tc_open (ctx, 501, 3.0, 40) >= 0);
  lb_rl_server_drain (ctx, 1, 0);
  /* remove 0: gauge to 0 at once, its entries are lost lazily */
  CHECK_EQ_I (lb_rl_server_remove (ctx, 0), LB_RL_OK);
  CHECK_EQ_I (tc_on (ctx, 0), 0);
  {
    uint64_t bm = 0;
    lb_rl_servers_present (ctx, &bm, 1);
    CHECK_EQ_I (bm, 6);
  }
  c = tc_counters (ctx);
  for (i = 0; i < 30; i++)
    {
      lb_rl_5tuple_t k = tc_key (i);
      int32_t srv = -1;
      s = lb_rl_process (ctx, 4.0, &k, ACK, 52);
      CHECK (s == 1 || s == 2);
      (void) srv;
    }
  CHECK_EQ_I (tc_counters (ctx).flows_lost, c.flows_lost + 10);
  CHECK_EQ_I (tc_counters (ctx).untracked_miss, c.untracked_miss + 10);
  /* re-adding starts with fresh counters; old entries stay lost */
  CHECK_EQ_I (lb_rl_server_add (ctx, 0, 2.0), LB_RL_OK);
  lb_rl_server_counters (ctx, 0, &sc);
  CHECK_EQ_I (sc.packets, 0);
  CHECK_EQ_I (sc.n_flow_on, 0);
  /* removing every server: no server for new or unknown flows */
  lb_rl_server_remove (ctx, 0);
  lb_rl_server_remove (ctx, 1);
  lb_rl_server_remove (ctx, 2);
  {
    lb_rl_5tuple_t k = tc_key (999);
    c = tc_counters (ctx);
    CHECK_EQ_I (lb_rl_process (ctx, 5.0, &k, SYN, 60), LB_RL_E_NO_SERVER);
    CHECK_EQ_I (lb_rl_process (ctx, 5.0, &k, ACK, 60), LB_RL_E_NO_SERVER);
    CHECK_EQ_I (tc_counters (ctx).no_server, c.no_server + 2);
  }
  lb_rl_destroy (ctx);
}

static void
test_no_leak_random (void)
{
  /* Random lifecycles: 20000 flows over 8 servers in a 4096-slot table (so
   * some SYNs find it full), closed by FIN, RST, or left to time out. After
   * everything ends, every gauge is 0 and the counters reconcile. */
  lb_rl_config_t cfg;
  lb_rl_ctx_t *ctx;
  uint64_t x = 88172645463325252ULL;
  uint32_t i, srv;
  int64_t on_sum;
  lb_rl_counters_t c;
  uint64_t closed = 0, timeout = 0, newf = 0;
  lb_rl_config_default (&cfg);
  cfg.table_size = 4096;
  cfg.flow_timeout_s = 5.0;
  cfg.policy = LB_RL_POLICY_SED2;
  ctx = lb_rl_create (&cfg);
  for (srv = 0; srv < 8; srv++)
    lb_rl_server_add (ctx, srv, 1.0 + srv);
  for (i = 0; i < 20000; i++)
    {
      lb_rl_5tuple_t k = tc_key (i);
      double t = i * 0.001;
      uint32_t r;
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      r = (uint32_t) (x % 8);
      lb_rl_process (ctx, t, &k, SYN, 60);
      if (r == 0)
	continue; /* half-open, will time out */
      lb_rl_process (ctx, t + 0.0001, &k, ACK, 52);
      if (r < 4)
	lb_rl_process (ctx, t + 0.0002, &k, FIN | ACK, 52);
      else if (r < 6)
	lb_rl_process (ctx, t + 0.0002, &k, RST, 40);
      /* else: established, left to time out */
      if (i % 1000 == 0)
	lb_rl_expire (ctx, t, 100);
    }
  while (lb_rl_expire (ctx, 1000.0, 1u << 30) > 0)
    ;
  on_sum = 0;
  for (srv = 0; srv < 8; srv++)
    {
      lb_rl_server_counters_t sc;
      lb_rl_server_counters (ctx, srv, &sc);
      on_sum += sc.n_flow_on < 0 ? -1000000 : sc.n_flow_on;
      closed += sc.n_flow_closed;
      timeout += sc.n_flow_timeout;
      newf += sc.n_flow_new;
    }
  c = tc_counters (ctx);
  CHECK_EQ_I (on_sum, 0);
  CHECK_EQ_I (c.tracked_flows, 0);
  CHECK_EQ_I (newf, c.new_flows);
  CHECK_EQ_I (c.new_flows + c.untracked_full, 20000);
  CHECK (c.untracked_full > 0); /* the table did fill up at times */
  printf ("no_leak: new=%llu full=%llu closed=%llu timeout=%llu\n",
	  (unsigned long long) c.new_flows, (unsigned long long) c.untracked_full,
	  (unsigned long long) closed, (unsigned long long) timeout);
  lb_rl_destroy (ctx);
}

static void
test_config_errors (void)
{
  lb_rl_config_t cfg;
  lb_rl_config_default (&cfg);
  CHECK_EQ_I (cfg.table_size, 1 << 16);
  CHECK_EQ_I (cfg.reservoir_size, 128);
  CHECK_NEAR (cfg.flow_timeout_s, 40.0, 0);
  cfg.table_size = 1000;
  CHECK (lb_rl_create (&cfg) == NULL);
  CHECK (strstr (lb_rl_last_error (), "table_size") != NULL);
  lb_rl_config_default (&cfg);
  cfg.max_servers = 4097;
  CHECK (lb_rl_create (&cfg) == NULL);
  CHECK (strstr (lb_rl_last_error (), "max_servers") != NULL);
  lb_rl_config_default (&cfg);
  CHECK_EQ_I (cfg.max_servers, 64);
  cfg.max_servers = 0;
  CHECK (lb_rl_create (&cfg) == NULL);
  lb_rl_config_default (&cfg);
  cfg.ecmp_buckets = 3;
  CHECK (lb_rl_create (&cfg) == NULL);
  lb_rl_config_default (&cfg);
  cfg.sample_prob = 1.5;
  CHECK (lb_rl_create (&cfg) == NULL);
  lb_rl_config_default (&cfg);
  cfg.flow_timeout_s = 0.0 / 0.0;
  CHECK (lb_rl_create (&cfg) == NULL);
  lb_rl_config_default (&cfg);
  cfg.policy = (lb_rl_policy_t) 9;
  CHECK (lb_rl_create (&cfg) == NULL);
  lb_rl_config_default (&cfg);
  cfg.reservoir_size = 0;
  CHECK (lb_rl_create (&cfg) == NULL);
}

int
main (void)
{
  test_tcp_transitions ();
  test_timeouts ();
  test_stickiness ();
  test_table_full ();
  test_remove_drain ();
  test_no_leak_random ();
  test_config_errors ();
  return tc_report ("test_core_flow");
}
