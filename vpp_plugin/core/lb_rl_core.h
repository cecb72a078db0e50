/*
 * lb_rl_core.h — the MARLLB data-plane core: one implementation of the
 * per-packet load-balancing logic, shared by the VPP plugin, the local
 * AF_PACKET runner and the simulator (through a cffi binding).
 *
 * Plain C99, no VPP headers, no global state: everything hangs off one
 * lb_rl_ctx_t, so a VPP worker, a test or a simulated LB each own their own.
 *
 * Units: times are f64 seconds on the host's clock (VPP: vlib_time_now,
 * simulator: virtual time); lengths are bytes.
 *
 * NOTE: this header is parsed by cffi (simulator/_build_core.py): keep it to
 * plain declarations, integer #defines and no function-like macros.
 */
#ifndef LB_RL_CORE_H
#define LB_RL_CORE_H

#include <stdint.h>

/* Hard upper bound on servers per context: server indices fit in the u16 of a flow entry
 * and the bucket tables, with 0xFFFF left for "no server". */
#define LB_RL_MAX_SERVERS 4096
/* max_servers of lb_rl_config_default (and of the VPP/host defaults): per-server memory and
 * shm frames are sized by max_servers, so a context pays only for the servers it may have. */
#define LB_RL_DEFAULT_MAX_SERVERS 64
/* Eligible servers up to which LSQ/SED scan linearly; above it they keep a tournament tree
 * (O(log n) per load change, same picks and RNG draws as the scan). */
#define LB_RL_SCAN_MAX 64
/* u64 words of a server bitmap of max_servers bits: (max_servers + 63) / 64. */
#define LB_RL_MAX_BITMAP_WORDS 64

/* TCP flag bits as on the wire. */
#define LB_RL_TCP_FIN 1
#define LB_RL_TCP_SYN 2
#define LB_RL_TCP_RST 4
#define LB_RL_TCP_PSH 8
#define LB_RL_TCP_ACK 16

/* Return codes (0 = ok, negative = error). */
#define LB_RL_OK 0
#define LB_RL_E_INVALID -1      /* bad argument (index out of range, bad config) */
#define LB_RL_E_NO_SERVER -2    /* no active server with weight > 0 */
#define LB_RL_E_EXISTS -3       /* server already present */
#define LB_RL_E_ABSENT -4       /* server not present */
#define LB_RL_E_NOMEM -5

/* Flow-table probe bound: a flow lives within PROBE_LEN slots of its home slot. */
#define LB_RL_PROBE_LEN 16

/* Flow states reported by lb_rl_flow_get. */
#define LB_RL_FLOW_NONE 0   /* no entry (or a freed one) */
#define LB_RL_FLOW_SYN 1    /* SYN seen, not yet established */
#define LB_RL_FLOW_EST 2    /* established: counted in n_flow_on */
#define LB_RL_FLOW_CLOSED 3 /* FIN/RST seen, lingering for closed_linger_s */

/* Weight-validation verdicts (lb_rl_weights_validate). */
#define LB_RL_W_OK 0
#define LB_RL_W_NONFINITE 1     /* NaN or +-inf */
#define LB_RL_W_NEGATIVE 2
#define LB_RL_W_ALL_ZERO 3      /* no present server has weight > 0 */
#define LB_RL_W_ABSENT_SERVER 4 /* weight > 0 for a server that is not present */
#define LB_RL_W_BAD_COUNT 5     /* n == 0 or n > LB_RL_MAX_SERVERS */

typedef enum
{
  LB_RL_POLICY_ECMP = 0, /* hash of the 5-tuple into equal buckets */
  LB_RL_POLICY_WCMP = 1, /* weighted random: Vose alias table over weights */
  LB_RL_POLICY_LSQ = 2,  /* argmin n_flow_on + n_flow_pending (ties at random) */
  LB_RL_POLICY_SED = 3,  /* argmin (n_flow_on + n_flow_pending + 1) / w (ties at random) */
  LB_RL_POLICY_LSQ2 = 4, /* LSQ between two distinct random candidates */
  LB_RL_POLICY_SED2 = 5, /* SED between two distinct random candidates */
  LB_RL_N_POLICIES = 6
} lb_rl_policy_t;

/* Reservoir kinds. */
typedef enum
{
  LB_RL_RES_FLOW_DURATION = 0, /* on ACKs of established flows: now - first_seen */
  LB_RL_RES_FCT = 1,           /* on close (FIN/RST/timeout): close - first_seen */
  LB_RL_N_RES = 2
} lb_rl_res_kind_t;

/* Flow key. IPv4 addresses are stored v4-mapped (::ffff:a.b.c.d), network
 * byte order; ports in host byte order. */
typedef struct
{
  uint8_t src[16];
  uint8_t dst[16];
  uint16_t src_port;
  uint16_t dst_port;
  uint8_t proto;
  uint8_t pad[3];
} lb_rl_5tuple_t;

typedef struct
{
  uint32_t max_servers;    /* server indices are 0 .. max_servers-1, 1 .. LB_RL_MAX_SERVERS
			    * (default LB_RL_DEFAULT_MAX_SERVERS); per-server state is sized by it */
  uint32_t table_size;     /* flow-table entries, power of two (default 1<<16) */
  uint32_t ecmp_buckets;   /* length of the ECMP and the untracked-flow bucket tables,
			    * power of two (default 1024; keep it >= 8 * servers, or some
			    * servers get no ECMP bucket at all) */
  uint32_t reservoir_size; /* K slots per reservoir (default 128) */
  double sample_prob;      /* probability a sample is offered to a reservoir (default 1.0) */
  double flow_timeout_s;   /* idle timeout of a tracked flow (default 40) */
  double closed_linger_s;  /* how long a FIN/RST-closed entry keeps forwarding (default 2) */
  double syn_timeout_s;    /* idle timeout of a pending (SYN seen, not established) flow
			    * (default 3: Linux's second SYN retransmission is due at 3 s) */
  lb_rl_policy_t policy;   /* new-flow policy (default SED) */
  uint64_t seed;           /* seeds the core's RNG (xoshiro256**) */
} lb_rl_config_t;

/* Per-server counters (monotonic unless noted). */
typedef struct
{
  int64_t n_flow_on;       /* established, not yet closed flows (gauge) */
  int64_t n_flow_pending;  /* SYN seen, not yet established nor timed out (gauge) */
  uint64_t n_flow_new;     /* flows assigned by the policy */
  uint64_t n_flow_closed;  /* FIN/RST closes of established flows */
  uint64_t n_flow_timeout; /* established flows ended by idle timeout */
  uint64_t n_flow_untracked; /* SYNs that found the table full, hash-forwarded here */
  uint64_t packets;
  uint64_t bytes;
  uint64_t n_samples[LB_RL_N_RES]; /* samples offered to each reservoir */
} lb_rl_server_counters_t;

/* Context-wide counters. */
typedef struct
{
  uint64_t packets;
  uint64_t new_flows;          /* SYNs that created a tracked flow */
  uint64_t untracked_full;     /* SYNs that found the flow table full (hash-forwarded) */
  uint64_t untracked_miss;     /* non-SYN packets with no entry (hash-forwarded) */
  uint64_t flows_lost;         /* entries dropped because their server was removed */
  uint64_t timeouts;           /* entries freed by idle timeout */
  uint64_t no_server;          /* packets dropped: no eligible server */
  uint64_t weight_updates;     /* accepted weight sets */
  uint64_t weight_rejects;     /* rejected weight sets (any verdict != LB_RL_W_OK) */
  uint32_t tracked_flows;      /* entries in use now (gauge) */
  uint32_t pad;
} lb_rl_counters_t;

typedef struct
{
  double t; /* sample time, s */
  double v; /* value, s */
} lb_rl_sample_t;

typedef struct lb_rl_ctx lb_rl_ctx_t;

/* --- lifecycle --- */
void lb_rl_config_default (lb_rl_config_t *cfg);
/* NULL on bad config (message via lb_rl_last_error) or out of memory. */
lb_rl_ctx_t *lb_rl_create (const lb_rl_config_t *cfg);
void lb_rl_destroy (lb_rl_ctx_t *ctx);
const char *lb_rl_last_error (void);

/* --- servers --- */
/* Add server idx with its static weight (used by WCMP/SED and as the fallback set). */
int lb_rl_server_add (lb_rl_ctx_t *ctx, uint32_t idx, double static_weight);
/* Add servers 0 .. n-1 with static_weights[i], rebuilding the tables once (n adds one
 * by one rebuild them n times: O(n^2) at thousands of servers). All or nothing: any
 * index present, n > max_servers or a bad weight changes nothing. */
int lb_rl_servers_add (lb_rl_ctx_t *ctx, const double *static_weights, uint32_t n);
/* Remove: no new flows; its tracked flows are dropped lazily (counted in flows_lost). */
int lb_rl_server_remove (lb_rl_ctx_t *ctx, uint32_t idx);
/* Drain (on=1): no new flows, established flows continue. on=0 undrains. */
int lb_rl_server_drain (lb_rl_ctx_t *ctx, uint32_t idx, int on);
/* 1 if server idx is present, else 0 (also for idx >= max_servers). */
int lb_rl_server_is_present (const lb_rl_ctx_t *ctx, uint32_t idx);
/* Copy the present-server bitmap (bit i of word i/64 = server i) into out[0 .. n_words-1],
 * zero-filling words beyond max_servers; returns the words the context uses,
 * (max_servers + 63) / 64. */
uint32_t lb_rl_servers_present (const lb_rl_ctx_t *ctx, uint64_t *out, uint32_t n_words);

/* --- weights and policy --- */
/* Pure validation of a weight vector of length n against the present-server bitmap
 * present[0 .. n_words-1] (bit i of word i/64 = server i; servers beyond it are absent). */
int lb_rl_weights_validate (const double *w, uint32_t n, const uint64_t *present,
			    uint32_t n_words);
/* Validate, build new tables off the fast path, swap them in. Returns LB_RL_W_* verdict;
 * on rejection the previous weights stay and weight_rejects is incremented. */
int lb_rl_set_weights (lb_rl_ctx_t *ctx, const double *w, uint32_t n);
/* Reinstate the static weights given at server_add. */
int lb_rl_use_static_weights (lb_rl_ctx_t *ctx);
/* Copy the weights in force (length max_servers). */
void lb_rl_get_weights (const lb_rl_ctx_t *ctx, double *out);
int lb_rl_set_policy (lb_rl_ctx_t *ctx, lb_rl_policy_t policy);

/* --- the fast path --- */
/* Process one client->server packet; returns the server index, or LB_RL_E_NO_SERVER.
 * A SYN (without ACK) with no live entry starts a tracked flow chosen by the policy. */
int32_t lb_rl_process (lb_rl_ctx_t *ctx, double now, const lb_rl_5tuple_t *key,
		       uint8_t tcp_flags, uint32_t len);
/* As lb_rl_process, but a flow this packet starts goes to new_flow_server
 * (if >= 0) instead of the policy's choice: for host-side oracle policies. */
int32_t lb_rl_process_ex (lb_rl_ctx_t *ctx, double now, const lb_rl_5tuple_t *key,
			  uint8_t tcp_flags, uint32_t len, int32_t new_flow_server);
/* Batch: n packets in time order; forced may be NULL (else per packet, -1 = policy). */
void lb_rl_process_batch (lb_rl_ctx_t *ctx, uint32_t n, const double *now,
			  const lb_rl_5tuple_t *keys, const uint8_t *tcp_flags,
			  const uint32_t *len, const int32_t *forced, int32_t *out_server);
/* Batch with keys by index: packet i's key is key_table[key_idx[i]] (the key bytes of a
 * flow are the same for all its packets, so a caller keeps one table of flow keys and
 * passes indices). Otherwise identical to lb_rl_process_batch. */
void lb_rl_process_batch_idx (lb_rl_ctx_t *ctx, uint32_t n, const double *now,
			      const lb_rl_5tuple_t *key_table, const uint32_t *key_idx,
			      const uint8_t *tcp_flags, const uint32_t *len,
			      const int32_t *forced, int32_t *out_server);
/* Free up to budget expired entries (idle > flow_timeout_s); returns how many. */
uint32_t lb_rl_expire (lb_rl_ctx_t *ctx, double now, uint32_t budget);

/* --- reading state --- */
int lb_rl_server_counters (const lb_rl_ctx_t *ctx, uint32_t idx, lb_rl_server_counters_t *out);
void lb_rl_counters (const lb_rl_ctx_t *ctx, lb_rl_counters_t *out);
/* Copy up to max filled samples of a reservoir; returns the count copied. */
uint32_t lb_rl_reservoir_read (const lb_rl_ctx_t *ctx, uint32_t idx, lb_rl_res_kind_t kind,
			       lb_rl_sample_t *out, uint32_t max);
const lb_rl_config_t *lb_rl_get_config (const lb_rl_ctx_t *ctx);
/* Read-only lookup (no side effects, no expiry): returns the stored LB_RL_FLOW_* state
 * of key's entry and, if non-NULL, its server, first_seen and last_seen (s).
 * For a CLOSED entry last_seen is the close time. */
int lb_rl_flow_get (const lb_rl_ctx_t *ctx, const lb_rl_5tuple_t *key, int32_t *server,
		    double *first_seen, double *last_seen);
/* The 64-bit 5-tuple hash the core uses (ECMP bucket = hash & (ecmp_buckets-1)). */
uint64_t lb_rl_key_hash (const lb_rl_5tuple_t *key);
/* Server in ECMP bucket b of the active table, or -1 if no eligible server. */
int32_t lb_rl_ecmp_bucket (const lb_rl_ctx_t *ctx, uint32_t b);
/* Server in bucket b of the table that forwards untracked flows (the weighted
 * table, or the ECMP table under the ECMP policy), or -1 if none eligible. */
int32_t lb_rl_untracked_bucket (const lb_rl_ctx_t *ctx, uint32_t b);

#endif /* LB_RL_CORE_H */
