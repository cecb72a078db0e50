/*
 * lb_rl_core.c — lifecycle, server set, weights API and state readers of the
 * data-plane core. The per-packet path is in lb_rl_flow.c, the weight tables
 * and policies in lb_rl_tables.c / lb_rl_policy.c.
 */
#define _DEFAULT_SOURCE /* madvise, MADV_HUGEPAGE (Linux); harmless elsewhere */
#define _POSIX_C_SOURCE 200112L

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "lb_rl_hash.h"
#include "lb_rl_internal.h"

static LB_RL_THREAD_LOCAL const char *lb_rl_error_msg = "";

void
lb_rl_set_error (const char *msg)
{
  lb_rl_error_msg = msg;
}

const char *
lb_rl_last_error (void)
{
  return lb_rl_error_msg;
}

void
lb_rl_config_default (lb_rl_config_t *cfg)
{
  memset (cfg, 0, sizeof *cfg);
  cfg->max_servers = LB_RL_DEFAULT_MAX_SERVERS;
  cfg->table_size = 1u << 16;
  cfg->ecmp_buckets = 1024;
  cfg->reservoir_size = 128;
  cfg->sample_prob = 1.0;
  cfg->flow_timeout_s = 40.0;
  cfg->closed_linger_s = 2.0;
  cfg->syn_timeout_s = 3.0;
  cfg->policy = LB_RL_POLICY_SED;
  cfg->seed = 1;
}

static int
lb_rl_is_pow2 (uint32_t x)
{
  return x != 0 && (x & (x - 1)) == 0;
}

static const char *
lb_rl_config_check (const lb_rl_config_t *cfg)
{
  if (cfg->max_servers < 1 || cfg->max_servers > LB_RL_MAX_SERVERS)
    return "max_servers must be in 1..4096";
  if (!lb_rl_is_pow2 (cfg->table_size) || cfg->table_size > (1u << 30))
    return "table_size must be a power of two <= 2^30";
  if (!lb_rl_is_pow2 (cfg->ecmp_buckets) || cfg->ecmp_buckets > (1u << 24))
    return "ecmp_buckets must be a power of two <= 2^24";
  if (cfg->reservoir_size < 1 || cfg->reservoir_size > (1u << 20))
    return "reservoir_size must be in 1..2^20";
  if (!(cfg->sample_prob >= 0.0 && cfg->sample_prob <= 1.0))
    return "sample_prob must be in [0, 1]";
  if (!(cfg->flow_timeout_s > 0.0 && isfinite (cfg->flow_timeout_s)))
    return "flow_timeout_s must be finite and > 0";
  if (!(cfg->closed_linger_s >= 0.0 && isfinite (cfg->closed_linger_s)))
    return "closed_linger_s must be finite and >= 0";
  if (!(cfg->syn_timeout_s > 0.0 && isfinite (cfg->syn_timeout_s)))
    return "syn_timeout_s must be finite and > 0";
  if ((unsigned) cfg->policy >= LB_RL_N_POLICIES)
    return "unknown policy";
  return NULL;
}

/* Flow-table memory: 64-byte aligned; tables of 2 MiB or more are 2 MiB aligned and
 * advised as transparent huge pages where available, because a lookup is one
 * random access into table_size * 64 bytes and 4 KiB pages would add a TLB miss
 * to most of them. */
static void *
lb_rl_alloc_table (size_t bytes)
{
  void *p = NULL;
  size_t align = bytes >= (2u << 20) ? (2u << 20) : 64;
  if (posix_memalign (&p, align, bytes) != 0)
    return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (align == (2u << 20))
    (void) madvise (p, bytes, MADV_HUGEPAGE);
#endif
  return p;
}

/* Per-server arrays, the weight tables, the tree and the work arrays, all sized by
 * max_servers (0 on success). */
static int
lb_rl_alloc_servers (lb_rl_ctx_t *ctx)
{
  uint32_t s = ctx->cfg.max_servers, cap = 1, k;
  ctx->n_words = (s + 63) / 64;
  ctx->present = calloc (ctx->n_words, sizeof (uint64_t));
  ctx->drained = calloc (ctx->n_words, sizeof (uint64_t));
  ctx->gen = calloc (s, sizeof (uint32_t));
  ctx->static_w = calloc (s, sizeof (double));
  ctx->cur_w = calloc (s, sizeof (double));
  ctx->n_on = calloc (s, sizeof (int64_t));
  ctx->n_load = calloc (s, sizeof (int64_t));
  ctx->sc = calloc (s, sizeof (lb_rl_server_counters_t));
  ctx->res_filled = calloc (s, sizeof *ctx->res_filled);
  ctx->ties = calloc (s, sizeof (uint16_t));
  if (!ctx->present || !ctx->drained || !ctx->gen || !ctx->static_w || !ctx->cur_w ||
      !ctx->n_on || !ctx->n_load || !ctx->sc || !ctx->res_filled || !ctx->ties)
    return -1;
  for (k = 0; k < 2; k++)
    {
      lb_rl_wtab_t *t = &ctx->wtab[k];
      t->elig = calloc (s, sizeof (uint16_t));
      t->alias = calloc (s, sizeof (uint16_t));
      t->thr = calloc (s, sizeof (uint64_t));
      t->inv_w = calloc (s, sizeof (double));
      t->ecmp = malloc ((size_t) ctx->cfg.ecmp_buckets * sizeof (uint16_t));
      t->wmap = malloc ((size_t) ctx->cfg.ecmp_buckets * sizeof (uint16_t));
      if (!t->elig || !t->alias || !t->thr || !t->inv_w || !t->ecmp || !t->wmap)
	return -1;
    }
  while (cap < s)
    cap <<= 1;
  ctx->tree.cap = cap;
  ctx->tree.key = calloc (2 * (size_t) cap, sizeof (double));
  ctx->tree.cnt = calloc (2 * (size_t) cap, sizeof (uint32_t));
  ctx->tree.pos = calloc (s, sizeof (uint16_t));
  if (!ctx->tree.key || !ctx->tree.cnt || !ctx->tree.pos)
    return -1;
  return lb_rl_work_alloc (&ctx->work, s);
}

lb_rl_ctx_t *
lb_rl_create (const lb_rl_config_t *cfg)
{
  lb_rl_ctx_t *ctx;
  const char *err = cfg ? lb_rl_config_check (cfg) : "cfg is NULL";
  void *flows = NULL;
  size_t nres;
  if (err)
    {
      lb_rl_set_error (err);
      return NULL;
    }
  ctx = calloc (1, sizeof *ctx);
  if (!ctx)
    goto nomem;
  ctx->cfg = *cfg;
  ctx->table_mask = cfg->table_size - 1;
  ctx->ecmp_mask = cfg->ecmp_buckets - 1;
  ctx->probe = cfg->table_size < LB_RL_PROBE_LEN ? cfg->table_size : LB_RL_PROBE_LEN;
  /* 64-byte aligned: a probe group of 16 tags (or hints) is exactly one cache line */
  ctx->tags = lb_rl_alloc_table ((size_t) cfg->table_size * sizeof (uint32_t));
  ctx->due = lb_rl_alloc_table ((size_t) cfg->table_size * sizeof (uint32_t));
  ctx->flows = flows = lb_rl_alloc_table ((size_t) cfg->table_size * sizeof (lb_rl_flow_t));
  nres = (size_t) cfg->max_servers * LB_RL_N_RES * cfg->reservoir_size;
  ctx->res = calloc (nres, sizeof (lb_rl_sample_t));
  if (!ctx->tags || !ctx->due || !ctx->flows || !ctx->res || lb_rl_alloc_servers (ctx) != 0)
    goto nomem;
  ctx->scan_max = LB_RL_SCAN_MAX;
  memset (ctx->flows, 0, (size_t) cfg->table_size * sizeof (lb_rl_flow_t));
  memset (ctx->tags, 0, (size_t) cfg->table_size * sizeof (uint32_t));
  memset (ctx->due, 0, (size_t) cfg->table_size * sizeof (uint32_t));
  lb_rl_rng_seed (&ctx->rng, cfg->seed);
  ctx->sample_all = cfg->sample_prob >= 1.0;
  /* P(next64 < thr) = thr / 2^64 = sample_prob (to within 2^-53). */
  ctx->sample_thr = ctx->sample_all ? UINT64_MAX
				    : (uint64_t) (cfg->sample_prob * 18446744073709551616.0);
  lb_rl_tables_rebuild (ctx);
  return ctx;

nomem:
  lb_rl_destroy (ctx);
  lb_rl_set_error ("out of memory");
  return NULL;
}

void
lb_rl_destroy (lb_rl_ctx_t *ctx)
{
  int k;
  if (!ctx)
    return;
  free (ctx->tags);
  free (ctx->due);
  free (ctx->flows);
  free (ctx->res);
  for (k = 0; k < 2; k++)
    {
      free (ctx->wtab[k].elig);
      free (ctx->wtab[k].alias);
      free (ctx->wtab[k].thr);
      free (ctx->wtab[k].inv_w);
      free (ctx->wtab[k].ecmp);
      free (ctx->wtab[k].wmap);
    }
  free (ctx->present);
  free (ctx->drained);
  free (ctx->gen);
  free (ctx->static_w);
  free (ctx->cur_w);
  free (ctx->n_on);
  free (ctx->n_load);
  free (ctx->sc);
  free (ctx->res_filled);
  free (ctx->ties);
  free (ctx->tree.key);
  free (ctx->tree.cnt);
  free (ctx->tree.pos);
  lb_rl_work_free (&ctx->work);
  free (ctx);
}

const lb_rl_config_t *
lb_rl_get_config (const lb_rl_ctx_t *ctx)
{
  return &ctx->cfg;
}

/* --- servers --- */

/* A (re-)added server starts afresh: counters and reservoirs reset. Entries of
 * an earlier incarnation carry an older generation and count as lost. The
 * caller rebuilds the tables. */
static void
lb_rl_server_init (lb_rl_ctx_t *ctx, uint32_t idx, double static_weight)
{
  memset (&ctx->sc[idx], 0, sizeof ctx->sc[idx]);
  ctx->n_on[idx] = 0;
  ctx->n_load[idx] = 0;
  ctx->res_filled[idx][0] = ctx->res_filled[idx][1] = 0;
  ctx->gen[idx]++;
  lb_rl_bit_set (ctx->present, idx);
  lb_rl_bit_clear (ctx->drained, idx);
  ctx->static_w[idx] = static_weight;
  ctx->cur_w[idx] = static_weight;
}

static int
lb_rl_weight_ok (double w)
{
  return w >= 0.0 && isfinite (w);
}

int
lb_rl_server_add (lb_rl_ctx_t *ctx, uint32_t idx, double static_weight)
{
  if (idx >= ctx->cfg.max_servers || !lb_rl_weight_ok (static_weight))
    return LB_RL_E_INVALID;
  if (lb_rl_bit (ctx->present, idx))
    return LB_RL_E_EXISTS;
  lb_rl_server_init (ctx, idx, static_weight);
  lb_rl_tables_rebuild (ctx);
  return LB_RL_OK;
}

int
lb_rl_servers_add (lb_rl_ctx_t *ctx, const double *static_weights, uint32_t n)
{
  uint32_t i;
  if (n > ctx->cfg.max_servers)
    return LB_RL_E_INVALID;
  for (i = 0; i < n; i++)
    {
      if (!lb_rl_weight_ok (static_weights[i]))
	return LB_RL_E_INVALID;
      if (lb_rl_bit (ctx->present, i))
	return LB_RL_E_EXISTS;
    }
  for (i = 0; i < n; i++)
    lb_rl_server_init (ctx, i, static_weights[i]);
  lb_rl_tables_rebuild (ctx);
  return LB_RL_OK;
}

int
lb_rl_server_remove (lb_rl_ctx_t *ctx, uint32_t idx)
{
  if (idx >= ctx->cfg.max_servers)
    return LB_RL_E_INVALID;
  if (!lb_rl_bit (ctx->present, idx))
    return LB_RL_E_ABSENT;
  lb_rl_bit_clear (ctx->present, idx);
  lb_rl_bit_clear (ctx->drained, idx);
  ctx->cur_w[idx] = 0.0;
  ctx->static_w[idx] = 0.0;
  /* Its flows are gone: the gauge drops now, entries are freed lazily (and scans
   * look at every entry's generation until the sweep has been round once). */
  ctx->n_on[idx] = 0;
  ctx->lost_scan = 1;
  ctx->lost_scan_left = ctx->cfg.table_size;
  ctx->n_load[idx] = 0;
  ctx->gen[idx]++;
  lb_rl_tables_rebuild (ctx);
  return LB_RL_OK;
}

int
lb_rl_server_drain (lb_rl_ctx_t *ctx, uint32_t idx, int on)
{
  if (idx >= ctx->cfg.max_servers)
    return LB_RL_E_INVALID;
  if (!lb_rl_bit (ctx->present, idx))
    return LB_RL_E_ABSENT;
  if (on)
    lb_rl_bit_set (ctx->drained, idx);
  else
    lb_rl_bit_clear (ctx->drained, idx);
  lb_rl_tables_rebuild (ctx);
  return LB_RL_OK;
}

int
lb_rl_server_is_present (const lb_rl_ctx_t *ctx, uint32_t idx)
{
  return idx < ctx->cfg.max_servers && lb_rl_bit (ctx->present, idx);
}

uint32_t
lb_rl_servers_present (const lb_rl_ctx_t *ctx, uint64_t *out, uint32_t n_words)
{
  uint32_t i;
  for (i = 0; i < n_words; i++)
    out[i] = i < ctx->n_words ? ctx->present[i] : 0;
  return ctx->n_words;
}

/* --- weights and policy --- */

int
lb_rl_weights_validate (const double *w, uint32_t n, const uint64_t *present,
			uint32_t n_words)
{
  uint32_t i;
  int any_pos = 0;
  if (!w || n == 0 || n > LB_RL_MAX_SERVERS)
    return LB_RL_W_BAD_COUNT;
  for (i = 0; i < n; i++)
    if (!isfinite (w[i]))
      return LB_RL_W_NONFINITE;
  for (i = 0; i < n; i++)
    if (w[i] < 0.0)
      return LB_RL_W_NEGATIVE;
  for (i = 0; i < n; i++)
    if (w[i] > 0.0)
      {
	if ((i >> 6) >= n_words || !present || !lb_rl_bit (present, i))
	  return LB_RL_W_ABSENT_SERVER;
	any_pos = 1;
      }
  return any_pos ? LB_RL_W_OK : LB_RL_W_ALL_ZERO;
}

int
lb_rl_set_weights (lb_rl_ctx_t *ctx, const double *w, uint32_t n)
{
  uint32_t i;
  int v = lb_rl_weights_validate (w, n, ctx->present, ctx->n_words);
  if (v == LB_RL_W_OK && n > ctx->cfg.max_servers)
    v = LB_RL_W_BAD_COUNT; /* unreachable: w > 0 beyond max_servers is ABSENT */
  if (v != LB_RL_W_OK)
    {
      ctx->c.weight_rejects++;
      return v;
    }
  for (i = 0; i < ctx->cfg.max_servers; i++)
    ctx->cur_w[i] = (i < n && lb_rl_bit (ctx->present, i)) ? w[i] : 0.0;
  ctx->c.weight_updates++;
  lb_rl_tables_rebuild (ctx);
  return LB_RL_W_OK;
}

int
lb_rl_use_static_weights (lb_rl_ctx_t *ctx)
{
  uint32_t i;
  for (i = 0; i < ctx->cfg.max_servers; i++)
    ctx->cur_w[i] = lb_rl_bit (ctx->present, i) ? ctx->static_w[i] : 0.0;
  lb_rl_tables_rebuild (ctx);
  return LB_RL_OK;
}

void
lb_rl_get_weights (const lb_rl_ctx_t *ctx, double *out)
{
  memcpy (out, ctx->cur_w, ctx->cfg.max_servers * sizeof (double));
}

int
lb_rl_set_policy (lb_rl_ctx_t *ctx, lb_rl_policy_t policy)
{
  if ((unsigned) policy >= LB_RL_N_POLICIES)
    return LB_RL_E_INVALID;
  ctx->cfg.policy = policy;
  lb_rl_tree_rebuild (ctx); /* the tree is kept for LSQ/SED only, keyed by the policy */
  return LB_RL_OK;
}

/* --- reading state --- */

int
lb_rl_server_counters (const lb_rl_ctx_t *ctx, uint32_t idx, lb_rl_server_counters_t *out)
{
  if (idx >= ctx->cfg.max_servers)
    return LB_RL_E_INVALID;
  *out = ctx->sc[idx];
  out->n_flow_on = ctx->n_on[idx];
  out->n_flow_pending = ctx->n_load[idx] - ctx->n_on[idx];
  return LB_RL_OK;
}

void
lb_rl_counters (const lb_rl_ctx_t *ctx, lb_rl_counters_t *out)
{
  *out = ctx->c;
}

uint32_t
lb_rl_reservoir_read (const lb_rl_ctx_t *ctx, uint32_t idx, lb_rl_res_kind_t kind,
		      lb_rl_sample_t *out, uint32_t max)
{
  uint32_t n, k = ctx->cfg.reservoir_size;
  if (idx >= ctx->cfg.max_servers || (unsigned) kind >= LB_RL_N_RES)
    return 0;
  n = ctx->res_filled[idx][kind];
  if (n > max)
    n = max;
  memcpy (out, &ctx->res[((uint64_t) idx * LB_RL_N_RES + kind) * k], n * sizeof *out);
  return n;
}

int
lb_rl_flow_get (const lb_rl_ctx_t *ctx, const lb_rl_5tuple_t *key, int32_t *server,
		double *first_seen, double *last_seen)
{
  uint64_t h = lb_rl_hash_5tuple (key);
  uint32_t tag = (uint32_t) (h >> 32) | 1u;
  uint32_t j, s;
  for (j = 0; j < ctx->probe; j++)
    {
      s = lb_rl_group_slot (ctx, (uint32_t) h & ctx->table_mask, j);
      if (ctx->tags[s] == tag && lb_rl_key_eq (&ctx->flows[s].key, key))
	{
	  const lb_rl_flow_t *e = &ctx->flows[s];
	  if (e->gen != ctx->gen[e->server])
	    return LB_RL_FLOW_NONE; /* its server was removed */
	  if (server)
	    *server = e->server;
	  if (first_seen)
	    *first_seen = e->first_seen;
	  if (last_seen)
	    *last_seen = e->last_seen;
	  return e->state;
	}
    }
  return LB_RL_FLOW_NONE;
}

uint64_t
lb_rl_key_hash (const lb_rl_5tuple_t *key)
{
  return lb_rl_hash_5tuple (key);
}

int32_t
lb_rl_ecmp_bucket (const lb_rl_ctx_t *ctx, uint32_t b)
{
  uint16_t s = ctx->wt->ecmp[b & ctx->ecmp_mask];
  return s == LB_RL_NO_SERVER_U16 ? -1 : (int32_t) s;
}

int32_t
lb_rl_untracked_bucket (const lb_rl_ctx_t *ctx, uint32_t b)
{
  const uint16_t *map = ctx->cfg.policy == LB_RL_POLICY_ECMP ? ctx->wt->ecmp : ctx->wt->wmap;
  uint16_t s = map[b & ctx->ecmp_mask];
  return s == LB_RL_NO_SERVER_U16 ? -1 : (int32_t) s;
}
