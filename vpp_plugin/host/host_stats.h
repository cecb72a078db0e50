/*
 * host_stats.h — lb_rl_host's own counters and their JSON line (SIGUSR1,
 * exit, --stats-json).
 */
#ifndef HOST_STATS_H
#define HOST_STATS_H

#include <stdint.h>
#include <stdio.h>

#include "lb_rl_core.h"
#include "host_ring.h"

typedef struct
{
  uint32_t ip_be;     /* server address, network order */
  uint8_t mac[6];     /* where its frames go */
  uint8_t pad[2];
  uint64_t forwarded; /* frames sent to it (counted by the host, also in --forward-only) */
} host_server_t;

typedef struct
{
  uint64_t rx_frames;         /* frames read from the rx ring */
  uint64_t vip_frames;        /* IPv4 frames for the VIP (and port) */
  uint64_t forwarded;         /* VIP frames queued on the tx ring */
  uint64_t dropped_no_server; /* core returned LB_RL_E_NO_SERVER */
  uint64_t ignored;           /* not ours: not addressed to our MAC, or not for the VIP */
  uint64_t malformed;         /* for the VIP but headers inconsistent or truncated */
  uint64_t fragments;         /* VIP frames that were IPv4 fragments (keyed without ports) */
  uint64_t oversize;          /* VIP frames longer than a tx frame slot */
  uint64_t rx_blocks;         /* rx ring blocks processed */
  uint64_t shm_frames;        /* msg_out frames published */
  uint64_t shm_applied;       /* msg_in weight sets applied */
  uint64_t shm_rejected;      /* msg_in weight sets rejected */
  uint64_t shm_fallbacks;     /* times the silence fallback fired */
  uint64_t shm_errors;        /* publish / poll errors */
  uint64_t ticks;             /* steps run */
  double start_s;             /* CLOCK_MONOTONIC at start */
} host_counters_t;

/* One JSON object on one line (no newline inside), then '\n'. ctx may be NULL
 * (--forward-only): the core fields are then omitted. */
void host_stats_json (FILE *f, const char *event, const host_counters_t *c, const host_ring_t *r,
		      const lb_rl_ctx_t *ctx, const host_server_t *servers, uint32_t n_servers,
		      double now_s);

#endif /* HOST_STATS_H */
