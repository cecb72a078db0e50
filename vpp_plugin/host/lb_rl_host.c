/*
 * lb_rl_host.c — one MARLLB load balancer on a Linux interface: main, flags,
 * the packet loop and the shm step. See README.md.
 *
 * Data path: rx ring block -> parse (host_pkt) -> lb_rl_process_batch ->
 * rewrite destination MAC to the server's, source MAC to ours -> tx ring ->
 * one sendto per block (layer-2 direct server return).
 * Step (every --step s): lb_rl_expire, lb_rl_shm_publish, lb_rl_shm_poll_in,
 * as VPP's lb_rl does for a single-thread VIP.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <linux/if_packet.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "host_arp.h"
#include "host_pkt.h"
#include "host_ring.h"
#include "host_stats.h"
#include "lb_rl_core.h"
#include "lb_rl_shm.h"

#define EXIT_USAGE 2
#define EXPIRE_BUDGET 4096 /* as LB_RL_EXPIRE_BUDGET in VPP's lb_rl.h */
#define BATCH 256          /* packets per lb_rl_process_batch call */
#define ARP_TIMEOUT_MS 2000
#define ARP_RETRY_MS 200

typedef struct
{
  const char *ifname;
  host_vip_t vip;
  uint32_t n_servers;
  host_server_t servers[LB_RL_MAX_SERVERS];
  uint8_t need_arp[LB_RL_MAX_SERVERS];
  double weights[LB_RL_MAX_SERVERS];
  int have_weights;
  lb_rl_config_t cfg;
  int max_servers_set;
  double step_s, fallback_s;
  const char *shm_path, *stats_path;
  int forward_only, quiet;
  host_tx_mode_t tx_mode;
  host_rx_mode_t rx_mode;
} host_opts_t;

static volatile sig_atomic_t g_stop, g_dump;

static void
on_signal (int sig)
{
  if (sig == SIGUSR1)
    g_dump = 1;
  else
    g_stop = 1;
}

static double
now_mono (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static double
now_wall (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static void __attribute__ ((format (printf, 1, 2))) __attribute__ ((noreturn))
usage_error (const char *fmt, ...)
{
  va_list ap;
  fputs ("lb_rl_host: ", stderr);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputs (" (see --help)\n", stderr);
  exit (EXIT_USAGE);
}

static void
usage (FILE *f)
{
  fputs ("usage: lb_rl_host --interface IF --vip A.B.C.D [--vip-port P]\n"
	 "                  --server IP[=MAC] [--server ...] [--weights W0,W1,...]\n"
	 "                  [--policy ecmp|wcmp|lsq|sed|lsq2|sed2] [--step S] [--fallback S]\n"
	 "                  [--shm PATH] [--seed N] [--table-size N] [--flow-timeout S]\n"
	 "                  [--syn-timeout S]\n"
	 "                  [--reservoir-size K] [--sample-prob P] [--max-servers N]\n"
	 "                  [--forward-only] [--tx-mode copy|ring] [--rx-ring block|frame]\n"
	 "                  [--stats-json PATH] [--quiet]\n"
	 "One MARLLB load balancer on IF: IPv4 frames for the VIP go through the lb_rl core\n"
	 "and leave the same interface towards the chosen server's MAC (layer-2 DSR).\n"
	 "SIGUSR1 prints the counters as a JSON line; SIGTERM/SIGINT stop.\n",
	 f);
}

static double
parse_double (const char *flag, const char *s, double lo, double hi)
{
  char *end;
  double v;
  errno = 0;
  v = strtod (s, &end);
  if (errno || end == s || *end || !isfinite (v) || v < lo || v > hi)
    usage_error ("%s %s: expected a number in [%g, %g]", flag, s, lo, hi);
  return v;
}

static uint64_t
parse_u64 (const char *flag, const char *s, uint64_t lo, uint64_t hi)
{
  char *end;
  unsigned long long v;
  errno = 0;
  if (*s == '-' || *s == '+')
    usage_error ("%s %s: expected an integer in [%llu, %llu]", flag, s,
		 (unsigned long long) lo, (unsigned long long) hi);
  v = strtoull (s, &end, 0);
  if (errno || end == s || *end || v < lo || v > hi)
    usage_error ("%s %s: expected an integer in [%llu, %llu]", flag, s,
		 (unsigned long long) lo, (unsigned long long) hi);
  return v;
}

static uint32_t
parse_ip4 (const char *flag, const char *s)
{
  struct in_addr a;
  if (inet_pton (AF_INET, s, &a) != 1)
    usage_error ("%s %s: not an IPv4 address (A.B.C.D)", flag, s);
  return a.s_addr;
}

static int
parse_mac (const char *s, uint8_t mac[6])
{
  unsigned v[6];
  int i, n = 0;
  if (strlen (s) != 17)
    return -1;
  if (sscanf (s, "%2x:%2x:%2x:%2x:%2x:%2x%n", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &n) != 6
      || n != 17)
    return -1;
  for (i = 0; i < 6; i++)
    {
      if (s[i * 3] == ' ' || s[i * 3] == '+' || s[i * 3] == '-')
	return -1;
      mac[i] = (uint8_t) v[i];
    }
  return 0;
}

static void
add_server (host_opts_t *o, const char *arg)
{
  char ip[64];
  const char *eq = strchr (arg, '=');
  size_t l = eq ? (size_t) (eq - arg) : strlen (arg);
  host_server_t *s;
  if (o->n_servers >= LB_RL_MAX_SERVERS)
    usage_error ("--server %s: more than %d servers", arg, LB_RL_MAX_SERVERS);
  if (l >= sizeof ip)
    usage_error ("--server %s: not an IPv4 address", arg);
  memcpy (ip, arg, l);
  ip[l] = 0;
  s = &o->servers[o->n_servers];
  memset (s, 0, sizeof *s);
  s->ip_be = parse_ip4 ("--server", ip);
  if (eq)
    {
      if (parse_mac (eq + 1, s->mac) < 0)
	usage_error ("--server %s: bad MAC '%s' (expected xx:xx:xx:xx:xx:xx)", arg, eq + 1);
      o->need_arp[o->n_servers] = 0;
    }
  else
    o->need_arp[o->n_servers] = 1;
  o->n_servers++;
}

static uint32_t
parse_weights (const char *arg, double *w)
{
  char *buf = strdup (arg), *tok, *save = NULL; /* up to 4096 weights: any length */
  uint32_t n = 0;
  if (!buf)
    usage_error ("--weights: out of memory");
  for (tok = strtok_r (buf, ",", &save); tok; tok = strtok_r (NULL, ",", &save))
    {
      char *end;
      double v;
      if (n >= LB_RL_MAX_SERVERS)
	usage_error ("--weights %s: more than %d weights", arg, LB_RL_MAX_SERVERS);
      errno = 0;
      v = strtod (tok, &end);
      if (errno || end == tok || *end || !isfinite (v) || v < 0)
	usage_error ("--weights %s: '%s' is not a finite weight >= 0", arg, tok);
      w[n++] = v;
    }
  free (buf);
  if (!n)
    usage_error ("--weights '%s': empty list", arg);
  return n;
}

static lb_rl_policy_t
parse_policy (const char *s)
{
  static const char *names[] = { "ecmp", "wcmp", "lsq", "sed", "lsq2", "sed2" };
  int i;
  for (i = 0; i < LB_RL_N_POLICIES; i++)
    if (!strcmp (s, names[i]))
      return (lb_rl_policy_t) i;
  usage_error ("--policy %s: expected one of ecmp, wcmp, lsq, sed, lsq2, sed2", s);
}

static void
parse_flags (int argc, char **argv, host_opts_t *o)
{
  enum
  {
    O_IF = 1000, O_VIP, O_VIP_PORT, O_SERVER, O_WEIGHTS, O_POLICY, O_STEP, O_FALLBACK, O_SHM,
    O_SEED, O_TABLE, O_FLOW_TIMEOUT, O_SYN_TIMEOUT, O_RES, O_SAMPLE, O_MAXS, O_FWD, O_TXMODE, O_RXRING, O_STATS, O_QUIET, O_HELP
  };
  static const struct option opts[] = {
    { "interface", required_argument, 0, O_IF },
    { "vip", required_argument, 0, O_VIP },
    { "vip-port", required_argument, 0, O_VIP_PORT },
    { "server", required_argument, 0, O_SERVER },
    { "weights", required_argument, 0, O_WEIGHTS },
    { "policy", required_argument, 0, O_POLICY },
    { "step", required_argument, 0, O_STEP },
    { "fallback", required_argument, 0, O_FALLBACK },
    { "shm", required_argument, 0, O_SHM },
    { "seed", required_argument, 0, O_SEED },
    { "table-size", required_argument, 0, O_TABLE },
    { "flow-timeout", required_argument, 0, O_FLOW_TIMEOUT },
    { "syn-timeout", required_argument, 0, O_SYN_TIMEOUT },
    { "reservoir-size", required_argument, 0, O_RES },
    { "sample-prob", required_argument, 0, O_SAMPLE },
    { "max-servers", required_argument, 0, O_MAXS },
    { "forward-only", no_argument, 0, O_FWD },
    { "tx-mode", required_argument, 0, O_TXMODE },
    { "rx-ring", required_argument, 0, O_RXRING },
    { "stats-json", required_argument, 0, O_STATS },
    { "quiet", no_argument, 0, O_QUIET },
    { "help", no_argument, 0, O_HELP },
    { 0, 0, 0, 0 },
  };
  uint32_t n_weights = 0, i;
  int c, have_vip = 0;

  memset (o, 0, sizeof *o);
  lb_rl_config_default (&o->cfg);
  o->cfg.policy = LB_RL_POLICY_SED;
  o->step_s = 0.25;
  o->fallback_s = LB_RL_SHM_DEFAULT_FALLBACK_MS / 1e3; /* = VPP's LB_RL_DEFAULT_FALLBACK_S */
  opterr = 0;
  while ((c = getopt_long (argc, argv, ":", opts, NULL)) != -1)
    switch (c)
      {
      case O_IF:
	if (!*optarg)
	  usage_error ("--interface: empty name");
	o->ifname = optarg;
	break;
      case O_VIP:
	o->vip.vip = parse_ip4 ("--vip", optarg);
	have_vip = 1;
	break;
      case O_VIP_PORT:
	o->vip.port = (uint16_t) parse_u64 ("--vip-port", optarg, 1, 65535);
	o->vip.has_port = 1;
	break;
      case O_SERVER:
	add_server (o, optarg);
	break;
      case O_WEIGHTS:
	n_weights = parse_weights (optarg, o->weights);
	o->have_weights = 1;
	break;
      case O_POLICY:
	o->cfg.policy = parse_policy (optarg);
	break;
      case O_STEP:
	o->step_s = parse_double ("--step", optarg, 0.001, 3600);
	break;
      case O_FALLBACK:
	o->fallback_s = parse_double ("--fallback", optarg, -1e9, 1e9);
	break;
      case O_SHM:
	if (!*optarg)
	  usage_error ("--shm: empty path");
	o->shm_path = optarg;
	break;
      case O_SEED:
	o->cfg.seed = parse_u64 ("--seed", optarg, 0, UINT64_MAX);
	break;
      case O_TABLE:
	o->cfg.table_size = (uint32_t) parse_u64 ("--table-size", optarg, 1, 1u << 30);
	if (o->cfg.table_size & (o->cfg.table_size - 1))
	  usage_error ("--table-size %s: must be a power of two", optarg);
	break;
      case O_FLOW_TIMEOUT:
	o->cfg.flow_timeout_s = parse_double ("--flow-timeout", optarg, 1e-3, 1e9);
	break;
      case O_SYN_TIMEOUT:
	o->cfg.syn_timeout_s = parse_double ("--syn-timeout", optarg, 1e-3, 1e9);
	break;
      case O_RES:
	o->cfg.reservoir_size = (uint32_t) parse_u64 ("--reservoir-size", optarg, 1, 1u << 20);
	break;
      case O_SAMPLE:
	o->cfg.sample_prob = parse_double ("--sample-prob", optarg, 0, 1);
	break;
      case O_MAXS:
	o->cfg.max_servers =
	  (uint32_t) parse_u64 ("--max-servers", optarg, 1, LB_RL_MAX_SERVERS);
	o->max_servers_set = 1;
	break;
      case O_FWD:
	o->forward_only = 1;
	break;
      case O_TXMODE:
	if (!strcmp (optarg, "copy"))
	  o->tx_mode = HOST_TX_COPY;
	else if (!strcmp (optarg, "ring"))
	  o->tx_mode = HOST_TX_RING;
	else
	  usage_error ("--tx-mode %s: expected copy or ring", optarg);
	break;
      case O_RXRING:
	if (!strcmp (optarg, "block"))
	  o->rx_mode = HOST_RX_BLOCK;
	else if (!strcmp (optarg, "frame"))
	  o->rx_mode = HOST_RX_FRAME;
	else
	  usage_error ("--rx-ring %s: expected block or frame", optarg);
	break;
      case O_STATS:
	o->stats_path = optarg;
	break;
      case O_QUIET:
	o->quiet = 1;
	break;
      case O_HELP:
	usage (stdout);
	exit (0);
      case ':':
	usage_error ("%s: needs a value", argv[optind - 1]);
      default:
	usage_error ("unknown option %s", argv[optind - 1]);
      }
  if (optind < argc)
    usage_error ("unexpected argument '%s'", argv[optind]);
  if (!o->ifname)
    usage_error ("--interface is required");
  if (!have_vip)
    usage_error ("--vip is required");
  if (!o->n_servers)
    usage_error ("--server is required (at least one)");
  if (o->have_weights && n_weights != o->n_servers)
    usage_error ("--weights: %u weights given for %u --server entries", n_weights,
		 o->n_servers);
  if (!o->have_weights)
    for (i = 0; i < o->n_servers; i++)
      o->weights[i] = 1.0;
  /* default: as VPP's lb_rl VIPs (64 servers, the same region layout), or the servers given */
  if (!o->max_servers_set)
    o->cfg.max_servers =
      o->n_servers > LB_RL_DEFAULT_MAX_SERVERS ? o->n_servers : LB_RL_DEFAULT_MAX_SERVERS;
  else if (o->cfg.max_servers < o->n_servers)
    usage_error ("--max-servers %u: smaller than the %u --server entries", o->cfg.max_servers,
		 o->n_servers);
  for (i = 0; i < o->n_servers; i++)
    if (o->servers[i].ip_be == o->vip.vip)
      usage_error ("--server: address equals --vip");
  /* >= 8 ECMP buckets per server where the default 1024 is too few (> 128 servers) */
  while (o->cfg.ecmp_buckets < 8 * o->cfg.max_servers)
    o->cfg.ecmp_buckets <<= 1;
}

static void
print_startup (const host_opts_t *o, const host_ring_t *r)
{
  char a[INET_ADDRSTRLEN];
  uint32_t i;
  const uint8_t *m = r->mac;
  inet_ntop (AF_INET, &o->vip.vip, a, sizeof a);
  printf ("lb_rl_host: ready interface=%s mac=%02x:%02x:%02x:%02x:%02x:%02x vip=%s", o->ifname,
	  m[0], m[1], m[2], m[3], m[4], m[5], a);
  if (o->vip.has_port)
    printf (":%u", o->vip.port);
  printf (" mode=%s shm=%s servers=", o->forward_only ? "forward-only" : "core",
	  o->shm_path && !o->forward_only ? o->shm_path : "-");
  for (i = 0; i < o->n_servers; i++)
    {
      m = o->servers[i].mac;
      inet_ntop (AF_INET, &o->servers[i].ip_be, a, sizeof a);
      printf ("%s%u:%s=%02x:%02x:%02x:%02x:%02x:%02x/w%g", i ? "," : "", i, a, m[0], m[1], m[2],
	      m[3], m[4], m[5], o->weights[i]);
    }
  putchar ('\n');
  fflush (stdout);
}

/* ---- the packet path ---- */

typedef struct
{
  host_opts_t *o;
  host_ring_t ring;
  lb_rl_ctx_t *ctx;
  lb_rl_shm_t *shm;
  host_counters_t c;
  /* batch being assembled */
  uint32_t n;
  const uint8_t *data[BATCH];
  uint32_t len[BATCH];
  lb_rl_5tuple_t keys[BATCH];
  uint8_t flags[BATCH];
  uint32_t ip_len[BATCH];
  double now[BATCH];
  int32_t out[BATCH];
} host_lb_t;

static inline void
emit (host_lb_t *lb, const uint8_t *data, uint32_t len, uint32_t server)
{
  host_server_t *s = &lb->o->servers[server];
  uint8_t *slot;
  if (len > host_ring_tx_max (&lb->ring))
    {
      lb->c.oversize++;
      return;
    }
  slot = host_ring_tx_slot (&lb->ring);
  if (!slot)
    return; /* counted in tx_ring_full */
  memcpy (slot, s->mac, 6);
  memcpy (slot + 6, lb->ring.mac, 6);
  memcpy (slot + 12, data + 12, len - 12);
  host_ring_tx_commit (&lb->ring, len);
  s->forwarded++;
  lb->c.forwarded++;
}

static void
flush_batch (host_lb_t *lb)
{
  uint32_t i;
  if (!lb->n)
    return;
  if (lb->ctx)
    {
      lb_rl_process_batch (lb->ctx, lb->n, lb->now, lb->keys, lb->flags, lb->ip_len, NULL,
			   lb->out);
      for (i = 0; i < lb->n; i++)
	{
	  if (lb->out[i] < 0)
	    lb->c.dropped_no_server++;
	  else
	    emit (lb, lb->data[i], lb->len[i], (uint32_t) lb->out[i]);
	}
    }
  else
    for (i = 0; i < lb->n; i++)
      emit (lb, lb->data[i], lb->len[i], 0);
  lb->n = 0;
}

static void
process_block (host_lb_t *lb, host_rx_iter_t *it, double now)
{
  host_rx_pkt_t p;
  host_pkt_t hp;
  while (host_ring_rx_next_pkt (it, &p))
    {
      uint32_t k;
      int cls;
      lb->c.rx_frames++;
      if (p.pkttype != PACKET_HOST)
	{
	  lb->c.ignored++;
	  continue;
	}
      cls = host_pkt_classify (p.data, p.len, &lb->o->vip, &hp);
      if (cls != HOST_PKT_VIP)
	{
	  if (cls == HOST_PKT_MALFORMED)
	    lb->c.malformed++;
	  else
	    lb->c.ignored++;
	  continue;
	}
      lb->c.vip_frames++;
      lb->c.fragments += hp.fragment;
      k = lb->n++;
      lb->data[k] = p.data;
      lb->len[k] = p.len;
      lb->keys[k] = hp.key;
      lb->flags[k] = hp.tcp_flags;
      lb->ip_len[k] = hp.ip_len;
      lb->now[k] = now;
      if (lb->n == BATCH)
	flush_batch (lb);
    }
  flush_batch (lb);
}

/* ---- the step ---- */

static void
step (host_lb_t *lb, double now)
{
  double wall = now_wall ();
  int rv;
  lb->c.ticks++;
  if (!lb->ctx)
    return;
  lb_rl_expire (lb->ctx, now, EXPIRE_BUDGET);
  if (!lb->shm)
    return;
  rv = lb_rl_shm_publish (lb->shm, lb->ctx, now, wall, NULL);
  if (rv == LB_RL_SHM_OK)
    lb->c.shm_frames++;
  else
    lb->c.shm_errors++;
  rv = lb_rl_shm_poll_in (lb->shm, lb->ctx, now, wall);
  if (rv < 0)
    lb->c.shm_errors++;
  else if (rv == LB_RL_SHM_POLL_APPLIED)
    lb->c.shm_applied++;
  else if (rv == LB_RL_SHM_POLL_REJECTED)
    lb->c.shm_rejected++;
  else if (rv == LB_RL_SHM_POLL_FALLBACK)
    lb->c.shm_fallbacks++;
}

static void
dump (host_lb_t *lb, const char *event, FILE *f)
{
  host_ring_update_stats (&lb->ring);
  host_stats_json (f, event, &lb->c, &lb->ring, lb->ctx, lb->o->servers, lb->o->n_servers,
		   now_mono ());
}

static void
run (host_lb_t *lb)
{
  double step_s = lb->o->step_s, now = now_mono (), next_step = now;
  host_rx_iter_t it;

  while (!g_stop)
    {
      int busy = 0;
      while (host_ring_rx_next_block (&lb->ring, &it))
	{
	  now = now_mono ();
	  process_block (lb, &it, now);
	  host_ring_rx_release (&lb->ring);
	  host_ring_tx_kick (&lb->ring);
	  lb->c.rx_blocks++;
	  busy = 1;
	  if (now >= next_step || g_stop)
	    break;
	}
      now = now_mono ();
      if (now >= next_step)
	{
	  step (lb, now);
	  next_step += step_s;
	  if (next_step <= now)
	    next_step = now + step_s;
	}
      if (g_dump)
	{
	  g_dump = 0;
	  dump (lb, "sigusr1", stdout);
	}
      if (!busy)
	{
	  struct pollfd pfd = { lb->ring.rx_fd, POLLIN | POLLERR, 0 };
	  int ms = (int) ceil ((next_step - now) * 1e3);
	  (void) poll (&pfd, 1, ms < 0 ? 0 : ms);
	}
    }
}

int
main (int argc, char **argv)
{
  static host_opts_t o;
  static host_lb_t lb;
  char err[512];
  struct sigaction sa;
  uint32_t i;
  int rv;

  parse_flags (argc, argv, &o);
  lb.o = &o;

  /* everything that can fail on input is checked before anything is created */
  {
    int ifindex;
    uint8_t mac[6];
    if (host_if_info (o.ifname, &ifindex, mac, NULL, err, sizeof err) < 0)
      usage_error ("%s", err);
  }
  if (!o.forward_only)
    {
      lb.ctx = lb_rl_create (&o.cfg);
      if (!lb.ctx)
	usage_error ("invalid core configuration: %s", lb_rl_last_error ());
      for (i = 0; i < o.n_servers; i++)
	if (lb_rl_server_add (lb.ctx, i, o.weights[i]) != LB_RL_OK)
	  usage_error ("--server/--weights: core refused server %u (weight %g): %s", i,
		       o.weights[i], lb_rl_last_error ());
      {
	uint64_t present[LB_RL_MAX_BITMAP_WORDS];
	uint32_t nw = lb_rl_servers_present (lb.ctx, present, LB_RL_MAX_BITMAP_WORDS);
	if (lb_rl_weights_validate (o.weights, o.n_servers, present, nw) != LB_RL_W_OK)
	  usage_error ("--weights: need at least one weight > 0");
      }
    }
  {
    static uint32_t ips[LB_RL_MAX_SERVERS];
    static uint8_t macs[LB_RL_MAX_SERVERS][6];
    for (i = 0; i < o.n_servers; i++)
      {
	ips[i] = o.servers[i].ip_be;
	memcpy (macs[i], o.servers[i].mac, 6);
      }
    if (host_arp_resolve (o.ifname, ips, macs, o.need_arp, o.n_servers, ARP_TIMEOUT_MS,
			  ARP_RETRY_MS, err, sizeof err) < 0)
      {
	fprintf (stderr, "lb_rl_host: %s\n", err);
	lb_rl_destroy (lb.ctx);
	return EXIT_USAGE;
      }
    for (i = 0; i < o.n_servers; i++)
      memcpy (o.servers[i].mac, macs[i], 6);
  }
  if (host_ring_open (&lb.ring, o.ifname, o.vip.vip, o.tx_mode, o.rx_mode, err, sizeof err) < 0)
    {
      fprintf (stderr, "lb_rl_host: --interface %s: %s\n", o.ifname, err);
      host_ring_close (&lb.ring);
      lb_rl_destroy (lb.ctx);
      return 1;
    }
  if (o.shm_path && o.forward_only && !o.quiet)
    fprintf (stderr, "lb_rl_host: --forward-only: --shm %s ignored (no core)\n", o.shm_path);
  if (o.shm_path && !o.forward_only)
    {
      lb_rl_shm_params_t p;
      lb_rl_shm_params_default (&p);
      p.max_servers = o.cfg.max_servers;
      p.reservoir_slots = o.cfg.reservoir_size < LB_RL_SHM_MAX_RES_SLOTS
			    ? o.cfg.reservoir_size
			    : LB_RL_SHM_MAX_RES_SLOTS;
      rv = lb_rl_shm_open (o.shm_path, &p, LB_RL_SHM_ROLE_DATAPLANE, &lb.shm);
      if (rv != LB_RL_SHM_OK)
	{
	  fprintf (stderr, "lb_rl_host: --shm %s: %s (%s)\n", o.shm_path, lb_rl_shm_strerror (rv),
		   lb_rl_shm_last_error ());
	  host_ring_close (&lb.ring);
	  lb_rl_destroy (lb.ctx);
	  return EXIT_USAGE;
	}
      lb_rl_shm_set_fallback_timeout (lb.shm, o.fallback_s);
    }

  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGTERM, &sa, NULL);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGUSR1, &sa, NULL);

  lb.c.start_s = now_mono ();
  if (!o.quiet)
    print_startup (&o, &lb.ring);

  run (&lb);

  host_ring_tx_kick (&lb.ring);
  if (!o.quiet)
    dump (&lb, "exit", stdout);
  else
    host_ring_update_stats (&lb.ring);
  if (o.stats_path)
    {
      FILE *f = fopen (o.stats_path, "w");
      if (!f)
	fprintf (stderr, "lb_rl_host: --stats-json %s: %s\n", o.stats_path, strerror (errno));
      else
	{
	  host_stats_json (f, "exit", &lb.c, &lb.ring, lb.ctx, o.servers, o.n_servers,
			   now_mono ());
	  fclose (f);
	}
    }
  lb_rl_shm_close (lb.shm);
  host_ring_close (&lb.ring);
  lb_rl_destroy (lb.ctx);
  return 0;
}
