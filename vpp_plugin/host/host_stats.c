/* host_stats.c — counters as one JSON line, see host_stats.h. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <inttypes.h>

#include "host_stats.h"

static void
mac_str (char *out, const uint8_t m[6])
{
  snprintf (out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

void
host_stats_json (FILE *f, const char *event, const host_counters_t *c, const host_ring_t *r,
		 const lb_rl_ctx_t *ctx, const host_server_t *servers, uint32_t n_servers,
		 double now_s)
{
  /* the weights in force, once per dump (max_servers of them, up to 4096) */
  static double w[LB_RL_MAX_SERVERS];
  uint32_t i;
  if (ctx)
    lb_rl_get_weights (ctx, w);
  fprintf (f,
	   "{\"event\":\"%s\",\"uptime_s\":%.3f,\"rx_frames\":%" PRIu64 ",\"vip_frames\":%" PRIu64
	   ",\"forwarded\":%" PRIu64 ",\"dropped_no_server\":%" PRIu64 ",\"ignored\":%" PRIu64
	   ",\"malformed\":%" PRIu64 ",\"fragments\":%" PRIu64 ",\"oversize\":%" PRIu64
	   ",\"tx_errors\":%" PRIu64 ",\"tx_ring_full\":%" PRIu64 ",\"tx_kicks\":%" PRIu64
	   ",\"rx_blocks\":%" PRIu64 ",\"ring_drops\":%" PRIu64 ",\"ring_freeze\":%" PRIu64
	   ",\"ticks\":%" PRIu64 ",\"shm_frames\":%" PRIu64 ",\"shm_applied\":%" PRIu64
	   ",\"shm_rejected\":%" PRIu64 ",\"shm_fallbacks\":%" PRIu64 ",\"shm_errors\":%" PRIu64,
	   event, now_s - c->start_s, c->rx_frames, c->vip_frames, c->forwarded,
	   c->dropped_no_server, c->ignored, c->malformed, c->fragments, c->oversize, r->tx_errors,
	   r->tx_ring_full, r->tx_kicks, c->rx_blocks, r->rx_drops, r->rx_freeze, c->ticks,
	   c->shm_frames, c->shm_applied, c->shm_rejected, c->shm_fallbacks, c->shm_errors);
  if (ctx)
    {
      lb_rl_counters_t k;
      lb_rl_counters (ctx, &k);
      fprintf (f,
	       ",\"core\":{\"packets\":%" PRIu64 ",\"new_flows\":%" PRIu64
	       ",\"untracked_full\":%" PRIu64 ",\"untracked_miss\":%" PRIu64
	       ",\"flows_lost\":%" PRIu64 ",\"timeouts\":%" PRIu64 ",\"no_server\":%" PRIu64
	       ",\"weight_updates\":%" PRIu64 ",\"weight_rejects\":%" PRIu64
	       ",\"tracked_flows\":%u}",
	       k.packets, k.new_flows, k.untracked_full, k.untracked_miss, k.flows_lost,
	       k.timeouts, k.no_server, k.weight_updates, k.weight_rejects, k.tracked_flows);
    }
  fputs (",\"servers\":[", f);
  for (i = 0; i < n_servers; i++)
    {
      char ip[INET_ADDRSTRLEN], mac[18];
      inet_ntop (AF_INET, &servers[i].ip_be, ip, sizeof ip);
      mac_str (mac, servers[i].mac);
      fprintf (f, "%s{\"index\":%u,\"ip\":\"%s\",\"mac\":\"%s\",\"forwarded\":%" PRIu64,
	       i ? "," : "", i, ip, mac, servers[i].forwarded);
      if (ctx)
	{
	  lb_rl_server_counters_t sc;
	  lb_rl_server_counters (ctx, i, &sc);
	  fprintf (f,
		   ",\"weight\":%.17g,\"n_flow_on\":%" PRId64 ",\"n_flow_pending\":%" PRId64
		   ",\"n_flow_new\":%" PRIu64 ",\"n_flow_closed\":%" PRIu64
		   ",\"n_flow_timeout\":%" PRIu64 ",\"n_flow_untracked\":%" PRIu64
		   ",\"packets\":%" PRIu64 ",\"bytes\":%" PRIu64,
		   w[i], sc.n_flow_on, sc.n_flow_pending, sc.n_flow_new, sc.n_flow_closed,
		   sc.n_flow_timeout, sc.n_flow_untracked, sc.packets, sc.bytes);
	}
      fputc ('}', f);
    }
  fputs ("]}\n", f);
  fflush (f);
}
