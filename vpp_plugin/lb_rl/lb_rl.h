/*
 * lb_rl.h - the MARLLB load-balancer VPP plugin: VIPs, servers (ASs),
 * per-worker data-plane core contexts and the shm exchange with the agent.
 *
 * Threading model (see README.md):
 *  - every VIP owns one lb_rl_ctx_t per vlib thread (main + workers); the
 *    graph node on thread t touches only ctx[t], so the fast path shares no
 *    mutable state across threads. Flows stay on one thread because RSS
 *    hashes a 5-tuple to one RX queue;
 *  - control-plane changes (CLI, API) run on the main thread with the worker
 *    barrier held (VPP's default for non-mp-safe CLI commands and API
 *    messages), so they may mutate every thread's ctx;
 *  - the shm process node runs on the main thread every step_s; it takes
 *    the worker barrier while it reads counters and reservoirs of all
 *    contexts and applies new weights to each of them.
 */
#ifndef __included_lb_rl_h__
#define __included_lb_rl_h__

#include <vnet/vnet.h>
#include <vnet/ip/ip.h>
#include <vnet/fib/fib_table.h>
#include <vnet/dpo/dpo.h>
#include <vppinfra/error.h>

#include "../core/lb_rl_core.h"
#include "../core/lb_rl_shm.h"

#define LB_RL_PLUGIN_BUILD_VER "1.0"

/** Default period of the shm exchange process, s (the agent's step). */
#define LB_RL_DEFAULT_STEP_S 0.25
/** Default agent silence before static weights are reinstated, s. */
#define LB_RL_DEFAULT_FALLBACK_S (LB_RL_SHM_DEFAULT_FALLBACK_MS / 1e3)
/** Default idle timeout of a tracked flow, s (stock lb: 40 s). */
#define LB_RL_DEFAULT_FLOW_TIMEOUT_S 40.0
/** Default flow-table entries per VIP per thread (72 bytes each: a 64-byte
 *  entry, a 4-byte tag and a 4-byte due hint), i.e. 4.5 MiB per VIP and thread. */
#define LB_RL_DEFAULT_FLOW_TABLE_SIZE (1u << 16)
/** Largest flow table accepted (the core's bound; 72 GiB per context). */
#define LB_RL_MAX_FLOW_TABLE_SIZE (1u << 30)
/** Default directory of the per-VIP shm files. */
#define LB_RL_DEFAULT_SHM_DIR "/dev/shm"
/** Expired flow entries freed per context per process tick. */
#define LB_RL_EXPIRE_BUDGET 4096

/** Node counters (per packet outcomes of the lb_rl nodes):
 *  symbol, name (stats segment), description, severity. */
#define foreach_lb_rl_error                                                   \
  _ (FORWARDED, forwarded, "packets load-balanced", INFO)                     \
  _ (NO_SERVER, no_server, "no eligible server (dropped)", ERROR)             \
  _ (NOT_TCP_UDP, not_tcp_udp, "neither TCP nor UDP (hashed on addresses)",  \
     INFO)                                                                    \
  _ (FRAGMENT, fragment, "IP fragment (hashed on addresses)", INFO)           \
  _ (NO_VIP, no_vip, "stale VIP index (dropped)", ERROR)

typedef enum
{
#define _(sym, name, str, sev) LB_RL_ERROR_##sym,
  foreach_lb_rl_error
#undef _
    LB_RL_N_ERROR,
} lb_rl_error_t;

typedef enum
{
  LB_RL_NEXT_DROP,
  LB_RL_NEXT_IP4_LOOKUP,
  LB_RL_NEXT_IP6_LOOKUP,
  LB_RL_N_NEXT,
} lb_rl_next_t;

/** Encapsulation toward the servers. Values equal the API enum. */
typedef enum
{
  LB_RL_ENCAP_GRE4 = 0, /**< outer IPv4 + GRE; servers are IPv4 */
  LB_RL_ENCAP_GRE6 = 1, /**< outer IPv6 + GRE; servers are IPv6 */
  LB_RL_N_ENCAP,
} lb_rl_encap_t;

/** One server (application server, AS) of one VIP. */
typedef struct
{
  ip46_address_t address; /**< server address (IPv4 in ip4 of the union) */
  u32 vip_index;	  /**< owning VIP */
  u32 server_index;	  /**< index in the core and in shm frames,
			       0 .. the VIP's max_servers - 1 */
  f64 static_weight;	  /**< weight given at add time (> 0) */
} lb_rl_as_t;

/** One VIP. */
typedef struct
{
  fib_prefix_t prefix;	 /**< the FIB entry steering traffic to lb_rl */
  lb_rl_encap_t encap;
  u32 flow_table_size; /**< entries per thread's context */
  /** Server indices 0 .. max_servers-1 (1 .. LB_RL_MAX_SERVERS = 4096; default
   *  LB_RL_DEFAULT_MAX_SERVERS = 64): sizes the contexts and the shm frames. */
  u32 max_servers;
  /** AS pool index by server index (vec of max_servers), ~0 when free. */
  u32 *as_by_server;
  u32 n_as;
  /** One core context per vlib thread, indexed by thread index. */
  lb_rl_ctx_t **ctx_by_thread;
  /** Shared-memory exchange with the agent (NULL when shm is off). */
  lb_rl_shm_t *shm;
  u8 *shm_path;		   /**< C string, vec; empty when shm is off */
  u64 shm_frames_out;	   /**< msg_out frames committed */
  u64 shm_polls_applied;  /**< msg_in frames applied to all threads */
  u64 shm_polls_rejected; /**< msg_in frames rejected */
  u64 shm_fallbacks;	   /**< times static weights were reinstated */
  int shm_last_error;	   /**< last LB_RL_SHM_E_* seen (0 = none) */
} lb_rl_vip_t;

typedef struct
{
  /** API message ID base */
  u16 msg_id_base;

  lb_rl_vip_t *vips; /**< pool */
  lb_rl_as_t *ass;   /**< pool */

  /* configuration */
  lb_rl_policy_t policy;
  f64 flow_timeout_s;
  u32 flow_table_size; /**< default for new VIPs (startup flow-table-size) */
  u32 reservoir_size;  /**< K slots per reservoir (startup reservoir-size; 128) */
  f64 sample_prob;     /**< reservoir sampling probability (startup sample-prob) */
  f64 step_s;	  /**< period of the shm process */
  f64 fallback_s; /**< agent silence before static weights, 0 = never */
  ip4_address_t ip4_src_address;
  ip6_address_t ip6_src_address;
  u8 *shm_dir; /**< C string, vec; "" disables shm */
  u64 seed;    /**< base seed; thread t of VIP v seeds with seed+v*1000+t */

  /* registrations */
  dpo_type_t dpo_type;
  fib_source_t fib_src;
  u32 process_node_index;

  vlib_main_t *vlib_main;
  vnet_main_t *vnet_main;
} lb_rl_main_t;

extern lb_rl_main_t lb_rl_main;
extern vlib_node_registration_t lb_rl4_node;
extern vlib_node_registration_t lb_rl6_node;
extern vlib_node_registration_t lb_rl_process_node;

/* --- action functions: one per operation, shared by CLI and API;
 * each returns 0 or a VNET_API_ERROR_* code --- */
int lb_rl_conf (lb_rl_policy_t *policy, f64 flow_timeout_s, f64 step_s,
		f64 fallback_s, const ip4_address_t *ip4_src,
		const ip6_address_t *ip6_src, const char *shm_dir);
/** flow_table_size 0 = the default (startup flow-table-size); else a power
 *  of two in 1 .. LB_RL_MAX_FLOW_TABLE_SIZE (VNET_API_ERROR_INVALID_VALUE_2).
 *  max_servers 0 = LB_RL_DEFAULT_MAX_SERVERS; else 1 .. LB_RL_MAX_SERVERS
 *  (VNET_API_ERROR_INVALID_VALUE_3). */
int lb_rl_vip_add (const fib_prefix_t *pfx, lb_rl_encap_t encap,
		   u32 flow_table_size, u32 max_servers, u32 *vip_index);
/** NULL if n is a valid flow-table size, else why not. */
const char *lb_rl_flow_table_size_check (u64 n);
int lb_rl_vip_del (const fib_prefix_t *pfx);
int lb_rl_as_add (const fib_prefix_t *vip_pfx, const ip46_address_t *addr,
		  f64 static_weight);
int lb_rl_as_del (const fib_prefix_t *vip_pfx, const ip46_address_t *addr);
int lb_rl_vip_set_weights (const fib_prefix_t *vip_pfx, const f64 *w, u32 n,
			   int *verdict);

/* --- lookups and aggregation (main thread) --- */
lb_rl_vip_t *lb_rl_vip_find (const fib_prefix_t *pfx);
void lb_rl_vip_counters (const lb_rl_vip_t *vip, lb_rl_counters_t *out);
void lb_rl_vip_server_counters (const lb_rl_vip_t *vip, u32 server_index,
				lb_rl_server_counters_t *out);
/** One tick of the shm exchange for one VIP: expire, publish, poll. */
void lb_rl_vip_shm_tick (lb_rl_vip_t *vip, f64 now);

/* --- format / unformat --- */
format_function_t format_lb_rl_encap;
format_function_t format_lb_rl_policy;
format_function_t format_lb_rl_vip;
format_function_t format_lb_rl_as;
format_function_t format_lb_rl_counters;
format_function_t format_lb_rl_server_counters;
unformat_function_t unformat_lb_rl_policy;
unformat_function_t unformat_lb_rl_encap;
unformat_function_t unformat_lb_rl_prefix;
unformat_function_t unformat_lb_rl_address;

#endif /* __included_lb_rl_h__ */
