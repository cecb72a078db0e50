/*
 * lb_rl_shm.h — the shared-memory protocol between a MARLLB data plane (VPP
 * plugin, local runner, simulator) and its agent. This header is the single
 * source of truth for the layout; simulator/shm.py mirrors it and
 * tests/shm/test_layout_pin.py pins the two together. SHM.md documents it.
 *
 * Region = header (256 B) | msg_out ring | msg_in ring, every part 64-byte
 * aligned; frames of both rings are sized by S = max_servers (1 .. 4096), all integers little-endian, all times f64 seconds, no pointers
 * (offsets only). One writer per direction: the data plane writes msg_out
 * frames and the status block, the agent writes msg_in frames. Each frame is
 * committed with a seqlock: its 64-bit sequence number is written LAST.
 *
 * NOTE: this header is also parsed by cffi: plain structs with natural
 * alignment (sizes/offsets are checked with _Static_assert in lb_rl_shm.c),
 * integer #defines only, no inline functions, no function-like macros.
 */
#ifndef LB_RL_SHM_H
#define LB_RL_SHM_H

#include <stdint.h>
#include "lb_rl_core.h"

/* "MARLLBSH" read as a little-endian u64. */
#define LB_RL_SHM_MAGIC 0x4853424c4c52414d
/* 3: up to 4096 servers (present set as a bitmap of words, msg_in sized by S);
 * 2: n_flow_pending and n_flow_untracked per server; 1: the first layout. */
#define LB_RL_SHM_VERSION 3
#define LB_RL_SHM_HEADER_SIZE 256
#define LB_RL_SHM_ALIGN 64
/* Upper bound on reservoir slots per (server, kind) in a frame. */
#define LB_RL_SHM_MAX_RES_SLOTS 128
/* Ring lengths allowed: 2 .. 64 frames. */
#define LB_RL_SHM_MIN_RING 2
#define LB_RL_SHM_MAX_RING 64
#define LB_RL_SHM_DEFAULT_RING 4
/* Default fallback timeout of the data plane, milliseconds. */
#define LB_RL_SHM_DEFAULT_FALLBACK_MS 1000
/* Bounded retries of a reader that sees a frame change under it. */
#define LB_RL_SHM_READ_RETRIES 64
/* Sizes of the fixed parts. */
#define LB_RL_SHM_OUT_FRAME_HDR_SIZE 128
/* In a msg_out frame the present-server bitmap follows the fixed part:
 * ceil(S/64) u64 words at this offset, then the server records (64-byte aligned). */
#define LB_RL_SHM_OUT_ACTIVE_OFFSET 128
#define LB_RL_SHM_SERVER_SIZE 96
/* Fixed part of a msg_in frame; S f64 weights follow, the frame is rounded up to 64 B. */
#define LB_RL_SHM_IN_FRAME_HDR_SIZE 64
/* Offset in a frame where the checksummed payload starts (after seq, checksum). */
#define LB_RL_SHM_PAYLOAD_OFFSET 16

/* Error codes (0 = ok). Distinct from the core's LB_RL_E_* codes. */
#define LB_RL_SHM_OK 0
#define LB_RL_SHM_E_ARG -20       /* bad argument or parameters out of range */
#define LB_RL_SHM_E_TOO_SMALL -21 /* region smaller than the header */
#define LB_RL_SHM_E_MAGIC -22     /* not a MARLLB shm region */
#define LB_RL_SHM_E_VERSION -23   /* layout version not supported */
#define LB_RL_SHM_E_HEADER -24    /* header fields inconsistent */
#define LB_RL_SHM_E_TRUNCATED -25 /* region shorter than header.total_size */
#define LB_RL_SHM_E_IO -26        /* open/stat/mmap/... failed (errno in message) */
#define LB_RL_SHM_E_NO_FRAME -27  /* no frame committed yet */
#define LB_RL_SHM_E_BUSY -28      /* frame kept changing during bounded retries */
#define LB_RL_SHM_E_CHECKSUM -29  /* committed frame fails its checksum */
#define LB_RL_SHM_E_MISMATCH -30  /* region/params/context do not fit together */
#define LB_RL_SHM_E_NOMEM -31
#define LB_RL_SHM_E_ROLE -32      /* operation not allowed for this handle's role */

/* Extra weight verdict used by the poll path besides the core's LB_RL_W_*. */
#define LB_RL_SHM_W_CHECKSUM 16 /* msg_in frame failed its checksum */

/* Roles of a handle: what it may write. */
#define LB_RL_SHM_ROLE_READER 0    /* writes nothing */
#define LB_RL_SHM_ROLE_DATAPLANE 1 /* writes msg_out frames and the status block */
#define LB_RL_SHM_ROLE_AGENT 2     /* writes msg_in frames */

/* lb_rl_shm_poll_in results. */
#define LB_RL_SHM_POLL_NONE 0     /* nothing new */
#define LB_RL_SHM_POLL_APPLIED 1  /* new weights accepted and applied */
#define LB_RL_SHM_POLL_REJECTED 2 /* new weights rejected, last good kept */
#define LB_RL_SHM_POLL_FALLBACK 3 /* agent silent too long: static weights now */
#define LB_RL_SHM_POLL_BUSY 4     /* msg_in frame changing; try at next poll */

/* Status block: written by the data plane only, under its own seqlock
 * (gen odd while an update is in progress). 128 bytes at header offset 128. */
typedef struct
{
  uint64_t gen;                  /* seqlock generation, even when stable */
  uint64_t in_seq_applied;       /* msg_in seq last accepted and applied (0 = none) */
  uint64_t in_seq_seen;          /* last msg_in seq examined (accepted or not) */
  uint64_t weights_accepted;     /* msg_in frames accepted */
  uint64_t weights_rejected;     /* msg_in frames rejected */
  int32_t last_verdict;          /* LB_RL_W_* / LB_RL_SHM_W_* of the last examined frame */
  uint32_t fallback_active;      /* 1 while static weights are in force by fallback */
  uint64_t fallback_count;       /* times the fallback was entered */
  double last_accept_time_s;     /* host clock of the last accepted frame (0 = never) */
  double last_accept_wall_s;     /* wall clock (s since epoch) of the same */
  double fallback_timeout_s;     /* configured timeout (<= 0: fallback disabled) */
  double last_in_advance_time_s; /* host clock when the agent seq last advanced */
  uint64_t reserved[5];
} lb_rl_shm_status_t;

/* Region header, 256 bytes at offset 0. Fields up to writer_start_wall_s are
 * written once by format; pids/start times are stamped at attach; the two
 * seq_latest fields are updated after each commit in their ring. */
typedef struct
{
  uint64_t magic;              /* LB_RL_SHM_MAGIC */
  uint32_t version;            /* LB_RL_SHM_VERSION */
  uint32_t header_size;        /* LB_RL_SHM_HEADER_SIZE */
  uint64_t total_size;         /* bytes of the whole region */
  uint32_t max_servers;        /* S: servers per frame, 1 .. LB_RL_MAX_SERVERS */
  uint32_t reservoir_slots;    /* K: slots per reservoir, 1 .. LB_RL_SHM_MAX_RES_SLOTS */
  uint32_t out_ring_len;       /* msg_out frames in the ring */
  uint32_t in_ring_len;        /* msg_in frames in the ring */
  uint64_t out_ring_offset;    /* from region start */
  uint64_t out_frame_stride;   /* bytes between msg_out frames */
  uint64_t in_ring_offset;     /* from region start */
  uint64_t in_frame_stride;    /* bytes between msg_in frames: round64 (64 + 8 S) */
  uint32_t out_servers_offset; /* in a msg_out frame: lb_rl_shm_server_t[S],
				* round64 (128 + 8 ceil(S/64)) */
  uint32_t out_samples_offset; /* in a msg_out frame: lb_rl_sample_t[S][LB_RL_N_RES][K] */
  int64_t writer_pid;          /* data-plane process (format or last DATAPLANE attach) */
  double writer_start_wall_s;  /* its wall clock at that moment */
  int64_t agent_pid;           /* last AGENT attach (0 = none yet) */
  double agent_start_wall_s;
  uint64_t out_seq_latest;     /* last committed msg_out seq (0 = none) */
  uint64_t in_seq_latest;      /* last committed msg_in seq (0 = none) */
  lb_rl_shm_status_t status;   /* offset 128 */
} lb_rl_shm_header_t;

/* Fixed first 128 bytes of a msg_out frame (data plane -> agent); the present-server
 * bitmap (u64 active[active_words], bit i of word i/64 = server i) follows at
 * LB_RL_SHM_OUT_ACTIVE_OFFSET. */
typedef struct
{
  uint64_t seq;            /* commit word: 0 while written, then the frame's seq (>= 1) */
  uint64_t checksum;       /* lb_rl_shm_checksum over bytes [16, stride) and seq */
  double time_s;           /* data plane's host clock at publish (monotonic / simulated) */
  double wall_s;           /* wall clock, s since epoch */
  uint32_t n_active;       /* present servers (bits set in the bitmap) */
  uint32_t active_words;   /* u64 words of the bitmap = ceil(S/64) */
  uint64_t in_seq_applied; /* msg_in seq of the weights in force at publish */
  uint32_t n_servers;      /* = header.max_servers */
  uint32_t reservoir_slots;/* = header.reservoir_slots */
  uint32_t fallback_active;/* 1 if static fallback weights were in force */
  uint32_t tracked_flows;  /* flow-table entries in use (gauge) */
  uint64_t packets;        /* context-wide counters, see lb_rl_counters_t */
  uint64_t new_flows;
  uint64_t untracked_full;
  uint64_t untracked_miss;
  uint64_t flows_lost;
  uint64_t timeouts;
  uint64_t no_server;
  uint64_t weight_updates;
} lb_rl_shm_out_frame_t;

/* Per-server record in a msg_out frame (96 bytes), see lb_rl_server_counters_t.
 * Version 2 appended n_flow_pending and n_flow_untracked to version 1's 80 bytes. */
typedef struct
{
  int64_t n_flow_on;
  uint64_t n_flow_new;
  uint64_t n_flow_closed;
  uint64_t n_flow_timeout;
  uint64_t packets;
  uint64_t bytes;
  uint64_t n_samples[LB_RL_N_RES]; /* samples offered to each reservoir (monotonic) */
  double weight;                   /* weight in force for this server */
  uint32_t fill[LB_RL_N_RES];      /* filled slots of each reservoir snapshot, <= K */
  int64_t n_flow_pending;          /* SYN seen, not established (gauge) */
  uint64_t n_flow_untracked;       /* SYNs hash-forwarded here with the table full */
} lb_rl_shm_server_t;

/* msg_in frame (agent -> data plane): this 64-byte header, then S f64 weights;
 * in_frame_stride = round64 (64 + 8 S) bytes. */
typedef struct
{
  uint64_t seq;      /* commit word: 0 while written, then the frame's seq (>= 1) */
  uint64_t checksum; /* lb_rl_shm_checksum over bytes [16, in_frame_stride) and seq */
  double time_s;     /* agent's clock */
  double wall_s;     /* wall clock, s since epoch */
  uint32_t n;        /* weights given, 1 .. header.max_servers */
  uint32_t flags;    /* 0 */
  uint64_t reserved[3];
  double weights[]; /* S entries: [0, n) used, rest 0 */
} lb_rl_shm_in_frame_t;

/* Layout parameters of a region. */
typedef struct
{
  uint32_t max_servers;
  uint32_t reservoir_slots;
  uint32_t out_ring_len;
  uint32_t in_ring_len;
} lb_rl_shm_params_t;

/* A handle on an attached region (opaque). */
typedef struct lb_rl_shm lb_rl_shm_t;

/* --- layout --- */
/* Fill defaults: LB_RL_DEFAULT_MAX_SERVERS (64) servers, 128 slots, rings of
 * LB_RL_SHM_DEFAULT_RING. */
void lb_rl_shm_params_default (lb_rl_shm_params_t *p);
/* Bytes needed for a region with these parameters; 0 if a parameter is out of range. */
uint64_t lb_rl_shm_size (const lb_rl_shm_params_t *p);
/* Bytes between msg_out frames for S servers and K slots (0 if out of range). */
uint64_t lb_rl_shm_out_stride (uint32_t max_servers, uint32_t reservoir_slots);
/* Bytes between msg_in frames for S servers (0 if out of range). */
uint64_t lb_rl_shm_in_stride (uint32_t max_servers);
/* Checksum of a frame: seq * 0x9E3779B97F4A7C15 + sum_j w_j * (2j + 1) mod 2^64 over
 * the little-endian u64 words w_j of bytes [16, frame_size). */
uint64_t lb_rl_shm_checksum (const void *frame, uint64_t frame_size, uint64_t seq);

/* --- region lifecycle --- */
/* Write a fresh header and zeroed rings into size bytes at base (any memory). */
int lb_rl_shm_format (void *base, uint64_t size, const lb_rl_shm_params_t *p);
/* Validate the region at base without writing to it. */
int lb_rl_shm_validate (const void *base, uint64_t size);
/* Validate and attach to memory owned by the caller. On error *out = NULL and
 * nothing is written; the DATAPLANE/AGENT roles stamp their pid at success. */
int lb_rl_shm_attach (void *base, uint64_t size, int role, lb_rl_shm_t **out);
/* Open the file at path: if absent and p != NULL, create and format it (created
 * under a temporary name and linked into place, so no one sees it half made);
 * if present, attach to it without truncating (p, if given, must match). On any
 * error the existing file is left unchanged. */
int lb_rl_shm_open (const char *path, const lb_rl_shm_params_t *p, int role, lb_rl_shm_t **out);
/* Detach (and unmap what lb_rl_shm_open mapped). NULL is ignored. */
void lb_rl_shm_close (lb_rl_shm_t *shm);
lb_rl_shm_header_t *lb_rl_shm_header (lb_rl_shm_t *shm);
/* Seq the next frame written by this handle will carry (msg_out for DATAPLANE,
 * msg_in for AGENT; 0 for READER). */
uint64_t lb_rl_shm_next_seq (const lb_rl_shm_t *shm);
/* Text for an LB_RL_SHM_E_* code. */
const char *lb_rl_shm_strerror (int err);
/* Detail of the last error in this thread (file name, values). */
const char *lb_rl_shm_last_error (void);

/* --- msg_out: data plane -> agent --- */
/* Start a frame: invalidates the next slot and returns it for the caller to fill
 * (NULL if the role is not DATAPLANE); *seq_out (if not NULL) = the seq it will
 * carry. Fill, then lb_rl_shm_out_commit. */
lb_rl_shm_out_frame_t *lb_rl_shm_out_begin (lb_rl_shm_t *shm, uint64_t *seq_out);
/* Checksum and commit the frame from lb_rl_shm_out_begin; returns its seq. */
uint64_t lb_rl_shm_out_commit (lb_rl_shm_t *shm, lb_rl_shm_out_frame_t *f);
/* Publish the state of ctx as one frame (counters, weights, reservoir snapshots). */
int lb_rl_shm_publish (lb_rl_shm_t *shm, const lb_rl_ctx_t *ctx, double now_s, double wall_s,
		       uint64_t *seq_out);
/* Copy the latest committed msg_out frame into dst (dst_size >= out_frame_stride). */
int lb_rl_shm_read_out (lb_rl_shm_t *shm, lb_rl_shm_out_frame_t *dst, uint64_t dst_size);
/* Pointers into a frame (in the region or a copy of out_frame_stride bytes). */
uint64_t *lb_rl_shm_frame_active (const lb_rl_shm_t *shm, lb_rl_shm_out_frame_t *f);
lb_rl_shm_server_t *lb_rl_shm_frame_server (const lb_rl_shm_t *shm, lb_rl_shm_out_frame_t *f,
					    uint32_t idx);
lb_rl_sample_t *lb_rl_shm_frame_samples (const lb_rl_shm_t *shm, lb_rl_shm_out_frame_t *f,
					 uint32_t idx, uint32_t kind);

/* --- msg_in: agent -> data plane --- */
/* Agent: write weights [0, n) as the next msg_in frame; seq continues from the
 * highest seq found in the region (strictly increasing across agent restarts). */
int lb_rl_shm_write_weights (lb_rl_shm_t *shm, const double *w, uint32_t n, double now_s,
			     double wall_s, uint64_t *seq_out);
/* Copy the latest committed msg_in frame into dst (dst_size >= in_frame_stride). */
int lb_rl_shm_read_in (lb_rl_shm_t *shm, lb_rl_shm_in_frame_t *dst, uint64_t dst_size);
/* Data plane: set the fallback timeout (<= 0 disables the fallback). */
void lb_rl_shm_set_fallback_timeout (lb_rl_shm_t *shm, double timeout_s);
/* Data plane: apply a newer msg_in frame to ctx if one exists (validated against
 * the present servers; rejected sets keep the last good weights), else fall back
 * to static weights when the agent seq has not advanced for the timeout.
 * Never blocks. Returns LB_RL_SHM_POLL_* or a negative error. */
int lb_rl_shm_poll_in (lb_rl_shm_t *shm, lb_rl_ctx_t *ctx, double now_s, double wall_s);
/* Consistent copy of the status block. */
int lb_rl_shm_status (lb_rl_shm_t *shm, lb_rl_shm_status_t *out);

/* Reader statistics of this handle (read_out, read_in, poll_in). */
typedef struct
{
  uint64_t reads;             /* successful frame copies */
  uint64_t retries;           /* copies retried because the frame's seq changed */
  uint64_t checksum_failures; /* copies with a stable seq but a bad checksum (retried) */
} lb_rl_shm_read_stats_t;
void lb_rl_shm_read_stats (const lb_rl_shm_t *shm, lb_rl_shm_read_stats_t *out);

#endif /* LB_RL_SHM_H */
