/*
 * lb_rl.c - MARLLB load-balancer plugin: registration, configuration, the
 * action functions shared by CLI and API, the FIB/DPO glue and the shm
 * exchange process.
 */
#include <vnet/vnet.h>
#include <vnet/plugin/plugin.h>
#include <vnet/fib/fib_table.h>
#include <vnet/fib/fib_source.h>
#include <vnet/dpo/dpo.h>
#include <vppinfra/time.h>
#include <vppinfra/random.h>
#include <vpp/app/version.h>

#include <math.h>
#include <unistd.h> /* unlink */

#include "lb_rl.h"

VLIB_PLUGIN_REGISTER () = {
  .version = VPP_BUILD_VER,
  .description = "MARLLB load balancer (lb_rl): RL-driven weights via shm",
};

lb_rl_main_t lb_rl_main;

/* ---------------------------------------------------------------------- */
/* DPO: the FIB entry of a VIP points at (lb_rl dpo type, VIP index).      */
/* ---------------------------------------------------------------------- */

static void
lb_rl_dpo_lock (dpo_id_t *dpo)
{
  /* VIP lifetime is managed by the plugin, not by FIB references. */
}

static void
lb_rl_dpo_unlock (dpo_id_t *dpo)
{
}

static u8 *
format_lb_rl_dpo (u8 *s, va_list *va)
{
  index_t index = va_arg (*va, index_t);
  CLIB_UNUSED (u32 indent) = va_arg (*va, u32);
  lb_rl_main_t *lbm = &lb_rl_main;

  if (pool_is_free_index (lbm->vips, index))
    return format (s, "lb_rl vip %u (deleted)", index);
  return format (s, "lb_rl %U", format_lb_rl_vip,
		 pool_elt_at_index (lbm->vips, index), 0);
}

static const dpo_vft_t lb_rl_dpo_vft = {
  .dv_lock = lb_rl_dpo_lock,
  .dv_unlock = lb_rl_dpo_unlock,
  .dv_format = format_lb_rl_dpo,
};

static const char *const lb_rl_dpo_ip4_nodes[] = { "lb_rl4", NULL };
static const char *const lb_rl_dpo_ip6_nodes[] = { "lb_rl6", NULL };
static const char *const *const lb_rl_dpo_nodes[DPO_PROTO_NUM] = {
  [DPO_PROTO_IP4] = lb_rl_dpo_ip4_nodes,
  [DPO_PROTO_IP6] = lb_rl_dpo_ip6_nodes,
};

/* ---------------------------------------------------------------------- */
/* format / unformat                                                       */
/* ---------------------------------------------------------------------- */

static const char *lb_rl_policy_names[LB_RL_N_POLICIES] = {
  [LB_RL_POLICY_ECMP] = "ecmp", [LB_RL_POLICY_WCMP] = "wcmp",
  [LB_RL_POLICY_LSQ] = "lsq",	[LB_RL_POLICY_SED] = "sed",
  [LB_RL_POLICY_LSQ2] = "lsq2", [LB_RL_POLICY_SED2] = "sed2",
};

static const char *lb_rl_encap_names[LB_RL_N_ENCAP] = {
  [LB_RL_ENCAP_GRE4] = "gre4",
  [LB_RL_ENCAP_GRE6] = "gre6",
};

u8 *
format_lb_rl_policy (u8 *s, va_list *args)
{
  u32 p = va_arg (*args, u32);
  if (p >= LB_RL_N_POLICIES)
    return format (s, "policy-%u", p);
  return format (s, "%s", lb_rl_policy_names[p]);
}

u8 *
format_lb_rl_encap (u8 *s, va_list *args)
{
  u32 e = va_arg (*args, u32);
  if (e >= LB_RL_N_ENCAP)
    return format (s, "encap-%u", e);
  return format (s, "%s", lb_rl_encap_names[e]);
}

uword
unformat_lb_rl_policy (unformat_input_t *input, va_list *args)
{
  lb_rl_policy_t *p = va_arg (*args, lb_rl_policy_t *);
  /* Longest names first: "lsq" must not match the prefix of "lsq2". */
  if (unformat (input, "lsq2"))
    *p = LB_RL_POLICY_LSQ2;
  else if (unformat (input, "sed2"))
    *p = LB_RL_POLICY_SED2;
  else if (unformat (input, "ecmp"))
    *p = LB_RL_POLICY_ECMP;
  else if (unformat (input, "wcmp"))
    *p = LB_RL_POLICY_WCMP;
  else if (unformat (input, "lsq"))
    *p = LB_RL_POLICY_LSQ;
  else if (unformat (input, "sed"))
    *p = LB_RL_POLICY_SED;
  else
    return 0;
  return 1;
}

uword
unformat_lb_rl_encap (unformat_input_t *input, va_list *args)
{
  lb_rl_encap_t *e = va_arg (*args, lb_rl_encap_t *);
  if (unformat (input, "gre4"))
    *e = LB_RL_ENCAP_GRE4;
  else if (unformat (input, "gre6"))
    *e = LB_RL_ENCAP_GRE6;
  else
    return 0;
  return 1;
}

/** unformat a prefix "a.b.c.d/len" or "x::y/len" into a fib_prefix_t
 *  (host bits are cleared). */
uword
unformat_lb_rl_prefix (unformat_input_t *input, va_list *args)
{
  fib_prefix_t *pfx = va_arg (*args, fib_prefix_t *);
  u32 len;

  clib_memset (pfx, 0, sizeof (*pfx));
  if (unformat (input, "%U/%u", unformat_ip4_address, &pfx->fp_addr.ip4,
		&len))
    {
      if (len > 32)
	return 0;
      pfx->fp_proto = FIB_PROTOCOL_IP4;
      pfx->fp_len = len;
    }
  else if (unformat (input, "%U/%u", unformat_ip6_address, &pfx->fp_addr.ip6,
		     &len))
    {
      if (len > 128)
	return 0;
      pfx->fp_proto = FIB_PROTOCOL_IP6;
      pfx->fp_len = len;
    }
  else
    return 0;
  fib_prefix_normalize (pfx, pfx);
  return 1;
}

/** unformat an IPv4 or IPv6 address into an ip46_address_t. */
uword
unformat_lb_rl_address (unformat_input_t *input, va_list *args)
{
  ip46_address_t *a = va_arg (*args, ip46_address_t *);
  clib_memset (a, 0, sizeof (*a));
  if (unformat (input, "%U", unformat_ip4_address, &a->ip4))
    return 1;
  if (unformat (input, "%U", unformat_ip6_address, &a->ip6))
    return 1;
  return 0;
}

u8 *
format_lb_rl_counters (u8 *s, va_list *args)
{
  lb_rl_counters_t *c = va_arg (*args, lb_rl_counters_t *);
  u32 indent = va_arg (*args, u32);
  s = format (s, "%Upackets %llu new-flows %llu tracked-flows %u\n",
	      format_white_space, indent, c->packets, c->new_flows,
	      c->tracked_flows);
  s = format (s,
	      "%Uuntracked-full %llu untracked-miss %llu flows-lost %llu "
	      "timeouts %llu no-server %llu\n",
	      format_white_space, indent, c->untracked_full, c->untracked_miss,
	      c->flows_lost, c->timeouts, c->no_server);
  s = format (s, "%Uweight-updates %llu weight-rejects %llu",
	      format_white_space, indent, c->weight_updates,
	      c->weight_rejects);
  return s;
}

u8 *
format_lb_rl_server_counters (u8 *s, va_list *args)
{
  lb_rl_server_counters_t *c = va_arg (*args, lb_rl_server_counters_t *);
  return format (s,
		 "n_flow_on %lld pending %lld new %llu closed %llu timeout %llu "
		 "untracked %llu packets %llu bytes %llu samples fd %llu fct %llu",
		 c->n_flow_on, c->n_flow_pending, c->n_flow_new, c->n_flow_closed,
		 c->n_flow_timeout, c->n_flow_untracked, c->packets, c->bytes,
		 c->n_samples[LB_RL_RES_FLOW_DURATION],
		 c->n_samples[LB_RL_RES_FCT]);
}

/** format an AS: args (lb_rl_as_t *, int verbose). */
u8 *
format_lb_rl_as (u8 *s, va_list *args)
{
  lb_rl_as_t *as = va_arg (*args, lb_rl_as_t *);
  int verbose = va_arg (*args, int);
  lb_rl_main_t *lbm = &lb_rl_main;
  lb_rl_vip_t *vip = pool_elt_at_index (lbm->vips, as->vip_index);
  f64 *w = 0; /* max_servers of them: a vec, not the CLI process's small stack */

  vec_validate (w, vip->max_servers - 1);
  lb_rl_get_weights (vip->ctx_by_thread[0], w);
  s = format (s, "server %u %U static-weight %.3f weight %.3f",
	      as->server_index, format_ip46_address, &as->address,
	      IP46_TYPE_ANY, as->static_weight, w[as->server_index]);
  vec_free (w);
  if (verbose)
    {
      lb_rl_server_counters_t c;
      lb_rl_vip_server_counters (vip, as->server_index, &c);
      s = format (s, "\n      %U", format_lb_rl_server_counters, &c);
    }
  return s;
}

/** format a VIP: args (lb_rl_vip_t *, int verbose). */
u8 *
format_lb_rl_vip (u8 *s, va_list *args)
{
  lb_rl_vip_t *vip = va_arg (*args, lb_rl_vip_t *);
  int verbose = va_arg (*args, int);
  lb_rl_main_t *lbm = &lb_rl_main;
  const lb_rl_config_t *cfg = lb_rl_get_config (vip->ctx_by_thread[0]);

  s = format (s, "vip %u %U encap %U servers %u policy %U flow-table-size %u",
	      (u32) (vip - lbm->vips),
	      format_fib_prefix, &vip->prefix, format_lb_rl_encap, vip->encap,
	      vip->n_as, format_lb_rl_policy, cfg->policy, cfg->table_size);
  if (verbose)
    {
      lb_rl_counters_t c;
      u32 i;
      lb_rl_vip_counters (vip, &c);
      s = format (s, "\n  max-servers %u shm %s\n%U", vip->max_servers,
		  vec_len (vip->shm_path) ? (char *) vip->shm_path : "(off)",
		  format_lb_rl_counters, &c, 2);
      for (i = 0; i < vec_len (vip->as_by_server); i++)
	if (vip->as_by_server[i] != ~0)
	  s = format (s, "\n    %U", format_lb_rl_as,
		      pool_elt_at_index (lbm->ass, vip->as_by_server[i]),
		      verbose);
    }
  return s;
}

/* ---------------------------------------------------------------------- */
/* lookups and aggregation                                                 */
/* ---------------------------------------------------------------------- */

lb_rl_vip_t *
lb_rl_vip_find (const fib_prefix_t *pfx)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  lb_rl_vip_t *vip;
  pool_foreach (vip, lbm->vips)
    {
      if (fib_prefix_cmp (&vip->prefix, pfx) == 0)
	return vip;
    }
  return NULL;
}

/** Sum the context-wide counters of every thread's context. The gauge
 *  tracked_flows is summed too (each thread owns its own flows). */
void
lb_rl_vip_counters (const lb_rl_vip_t *vip, lb_rl_counters_t *out)
{
  lb_rl_counters_t c;
  u32 t;
  clib_memset (out, 0, sizeof (*out));
  vec_foreach_index (t, vip->ctx_by_thread)
    {
      lb_rl_counters (vip->ctx_by_thread[t], &c);
      out->packets += c.packets;
      out->new_flows += c.new_flows;
      out->untracked_full += c.untracked_full;
      out->untracked_miss += c.untracked_miss;
      out->flows_lost += c.flows_lost;
      out->timeouts += c.timeouts;
      out->no_server += c.no_server;
      out->tracked_flows += c.tracked_flows;
    }
  /* Weight sets are applied to every context at once: report one, not
   * n_threads times the same set. */
  lb_rl_counters (vip->ctx_by_thread[0], &c);
  out->weight_updates = c.weight_updates;
  out->weight_rejects = c.weight_rejects;
}

void
lb_rl_vip_server_counters (const lb_rl_vip_t *vip, u32 server_index,
			   lb_rl_server_counters_t *out)
{
  lb_rl_server_counters_t c;
  u32 t, k;
  clib_memset (out, 0, sizeof (*out));
  vec_foreach_index (t, vip->ctx_by_thread)
    {
      if (lb_rl_server_counters (vip->ctx_by_thread[t], server_index, &c) !=
	  LB_RL_OK)
	continue;
      out->n_flow_on += c.n_flow_on;
      out->n_flow_pending += c.n_flow_pending;
      out->n_flow_untracked += c.n_flow_untracked;
      out->n_flow_new += c.n_flow_new;
      out->n_flow_closed += c.n_flow_closed;
      out->n_flow_timeout += c.n_flow_timeout;
      out->packets += c.packets;
      out->bytes += c.bytes;
      for (k = 0; k < LB_RL_N_RES; k++)
	out->n_samples[k] += c.n_samples[k];
    }
}

/* ---------------------------------------------------------------------- */
/* action functions                                                        */
/* ---------------------------------------------------------------------- */

/** Apply a weight vector to every thread's context. Runs on the main
 *  thread with workers stopped at the barrier (CLI/API default, or taken
 *  by the shm process), so no worker is inside lb_rl_process meanwhile.
 *  Returns the core's LB_RL_W_* verdict of thread 0 (the others see the
 *  same vector against the same present set). */
static int
lb_rl_vip_apply_weights (lb_rl_vip_t *vip, const f64 *w, u32 n)
{
  int verdict = lb_rl_set_weights (vip->ctx_by_thread[0], w, n);
  u32 t;
  if (verdict != LB_RL_W_OK)
    return verdict;
  for (t = 1; t < vec_len (vip->ctx_by_thread); t++)
    (void) lb_rl_set_weights (vip->ctx_by_thread[t], w, n);
  return verdict;
}

int
lb_rl_conf (lb_rl_policy_t *policy, f64 flow_timeout_s, f64 step_s,
	    f64 fallback_s, const ip4_address_t *ip4_src,
	    const ip6_address_t *ip6_src, const char *shm_dir)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  lb_rl_vip_t *vip;

  if (policy && (u32) *policy >= LB_RL_N_POLICIES)
    return VNET_API_ERROR_INVALID_VALUE;
  if (flow_timeout_s < 0 || step_s < 0 || !isfinite (flow_timeout_s) ||
      !isfinite (step_s) || !isfinite (fallback_s))
    return VNET_API_ERROR_INVALID_VALUE;
  if (step_s > 0 && (step_s < 1e-3 || step_s > 60))
    return VNET_API_ERROR_INVALID_VALUE_2;
  if (shm_dir && strlen (shm_dir) > 100)
    return VNET_API_ERROR_INVALID_VALUE_3;

  if (policy)
    {
      lbm->policy = *policy;
      pool_foreach (vip, lbm->vips)
	{
	  u32 t;
	  vec_foreach_index (t, vip->ctx_by_thread)
	    lb_rl_set_policy (vip->ctx_by_thread[t], *policy);
	}
    }
  if (flow_timeout_s > 0)
    lbm->flow_timeout_s = flow_timeout_s;
  if (step_s > 0)
    {
      lbm->step_s = step_s;
      /* wake the process so the new period applies at once */
      vlib_process_signal_event (lbm->vlib_main, lbm->process_node_index, 1,
				 0);
    }
  if (fallback_s >= 0)
    {
      lbm->fallback_s = fallback_s;
      pool_foreach (vip, lbm->vips)
	if (vip->shm)
	  lb_rl_shm_set_fallback_timeout (vip->shm, fallback_s);
    }
  if (ip4_src && ip4_src->as_u32 != 0)
    lbm->ip4_src_address = *ip4_src;
  if (ip6_src && !ip6_address_is_zero (ip6_src))
    lbm->ip6_src_address = *ip6_src;
  if (shm_dir && shm_dir[0])
    {
      vec_reset_length (lbm->shm_dir);
      lbm->shm_dir = format (lbm->shm_dir, "%s%c", shm_dir, 0);
    }
  return 0;
}

static void
lb_rl_vip_free_ctx (lb_rl_vip_t *vip)
{
  u32 t;
  vec_foreach_index (t, vip->ctx_by_thread)
    if (vip->ctx_by_thread[t])
      lb_rl_destroy (vip->ctx_by_thread[t]);
  vec_free (vip->ctx_by_thread);
}

const char *
lb_rl_flow_table_size_check (u64 n)
{
  if (n == 0 || (n & (n - 1)) != 0)
    return "flow-table-size must be a power of two";
  if (n > LB_RL_MAX_FLOW_TABLE_SIZE)
    return "flow-table-size must be at most 2^30";
  return 0;
}

int
lb_rl_vip_add (const fib_prefix_t *pfx, lb_rl_encap_t encap,
	       u32 flow_table_size, u32 max_servers, u32 *vip_index)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vlib_thread_main_t *tm = vlib_get_thread_main ();
  lb_rl_config_t cfg;
  lb_rl_vip_t *vip;
  dpo_id_t dpo = DPO_INVALID;
  u32 t, index;

  if ((u32) encap >= LB_RL_N_ENCAP)
    return VNET_API_ERROR_INVALID_VALUE;
  if (flow_table_size == 0)
    flow_table_size = lbm->flow_table_size;
  if (lb_rl_flow_table_size_check (flow_table_size))
    return VNET_API_ERROR_INVALID_VALUE_2;
  if (max_servers == 0)
    max_servers = LB_RL_DEFAULT_MAX_SERVERS;
  if (max_servers > LB_RL_MAX_SERVERS)
    return VNET_API_ERROR_INVALID_VALUE_3;
  if (lb_rl_vip_find (pfx))
    return VNET_API_ERROR_VALUE_EXIST;
  if (encap == LB_RL_ENCAP_GRE4 && lbm->ip4_src_address.as_u32 == 0)
    return VNET_API_ERROR_INVALID_SRC_ADDRESS; /* set `lb_rl conf ip4-src` */
  if (encap == LB_RL_ENCAP_GRE6 && ip6_address_is_zero (&lbm->ip6_src_address))
    return VNET_API_ERROR_INVALID_SRC_ADDRESS; /* set `lb_rl conf ip6-src` */

  pool_get_zero (lbm->vips, vip);
  index = vip - lbm->vips;
  vip->prefix = *pfx;
  vip->encap = encap;
  vip->flow_table_size = flow_table_size;
  vip->max_servers = max_servers;
  vec_validate_init_empty (vip->as_by_server, max_servers - 1, ~0);

  lb_rl_config_default (&cfg);
  cfg.max_servers = max_servers;
  /* >= 8 ECMP buckets per server (the default 1024 up to 128 servers) */
  while (cfg.ecmp_buckets < 8 * max_servers)
    cfg.ecmp_buckets <<= 1;
  if (lbm->reservoir_size)
    cfg.reservoir_size = lbm->reservoir_size;
  cfg.flow_timeout_s = lbm->flow_timeout_s;
  cfg.table_size = flow_table_size;
  cfg.sample_prob = lbm->sample_prob;
  cfg.policy = lbm->policy;
  vec_validate (vip->ctx_by_thread, tm->n_vlib_mains - 1);
  for (t = 0; t < tm->n_vlib_mains; t++)
    {
      cfg.seed = lbm->seed + (u64) index * 1000 + t;
      vip->ctx_by_thread[t] = lb_rl_create (&cfg);
      if (!vip->ctx_by_thread[t])
	{
	  /* out of memory for the flow table is the likely cause */
	  clib_warning ("lb_rl_create (flow-table-size %u): %s",
			flow_table_size, lb_rl_last_error ());
	  lb_rl_vip_free_ctx (vip);
	  vec_free (vip->as_by_server);
	  pool_put (lbm->vips, vip);
	  return VNET_API_ERROR_INIT_FAILED;
	}
    }

  if (lbm->shm_dir && lbm->shm_dir[0])
    {
      lb_rl_shm_params_t p;
      int rv;
      lb_rl_shm_params_default (&p);
      p.max_servers = cfg.max_servers;
      p.reservoir_slots = clib_min (cfg.reservoir_size,
				    LB_RL_SHM_MAX_RES_SLOTS);
      vip->shm_path =
	format (0, "%s/lb_rl_vip%u%c", lbm->shm_dir, index, 0);
      rv = lb_rl_shm_open ((char *) vip->shm_path, &p,
			   LB_RL_SHM_ROLE_DATAPLANE, &vip->shm);
      if (rv == LB_RL_SHM_E_MISMATCH || rv == LB_RL_SHM_E_VERSION)
	{
	  /* Our own file from an earlier VIP of this index with other
	   * max-servers / reservoir-size, or from a plugin of another layout
	   * version: it cannot serve this VIP, so replace it (an agent still
	   * mapping the old one must reopen). Anything else stays untouched. */
	  clib_warning ("lb_rl: shm %s: %s (%s); replacing it", vip->shm_path,
			lb_rl_shm_strerror (rv), lb_rl_shm_last_error ());
	  unlink ((char *) vip->shm_path);
	  rv = lb_rl_shm_open ((char *) vip->shm_path, &p,
			       LB_RL_SHM_ROLE_DATAPLANE, &vip->shm);
	}
      if (rv != LB_RL_SHM_OK)
	{
	  /* Forwarding works without the agent; report and carry on. */
	  clib_warning ("lb_rl: shm %s: %s (%s); VIP runs without shm",
			vip->shm_path, lb_rl_shm_strerror (rv),
			lb_rl_shm_last_error ());
	  vip->shm_last_error = rv;
	  vip->shm = NULL;
	  vec_reset_length (vip->shm_path);
	}
      else
	lb_rl_shm_set_fallback_timeout (vip->shm, lbm->fallback_s);
    }

  dpo_set (&dpo, lbm->dpo_type, fib_proto_to_dpo (pfx->fp_proto), index);
  fib_table_entry_special_dpo_add (0, pfx, lbm->fib_src,
				   FIB_ENTRY_FLAG_EXCLUSIVE, &dpo);
  dpo_reset (&dpo);

  if (vip_index)
    *vip_index = index;
  return 0;
}

int
lb_rl_vip_del (const fib_prefix_t *pfx)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  lb_rl_vip_t *vip = lb_rl_vip_find (pfx);

  if (!vip)
    return VNET_API_ERROR_NO_SUCH_ENTRY;
  if (vip->n_as)
    return VNET_API_ERROR_RSRC_IN_USE; /* delete its servers first */

  fib_table_entry_special_remove (0, pfx, lbm->fib_src);
  lb_rl_shm_close (vip->shm);
  vec_free (vip->shm_path);
  lb_rl_vip_free_ctx (vip);
  vec_free (vip->as_by_server);
  pool_put (lbm->vips, vip);
  return 0;
}

static lb_rl_as_t *
lb_rl_as_find (lb_rl_vip_t *vip, const ip46_address_t *addr)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  u32 i;
  for (i = 0; i < vec_len (vip->as_by_server); i++)
    if (vip->as_by_server[i] != ~0)
      {
	lb_rl_as_t *as = pool_elt_at_index (lbm->ass, vip->as_by_server[i]);
	if (ip46_address_cmp (&as->address, addr) == 0)
	  return as;
      }
  return NULL;
}

int
lb_rl_as_add (const fib_prefix_t *vip_pfx, const ip46_address_t *addr,
	      f64 static_weight)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  lb_rl_vip_t *vip = lb_rl_vip_find (vip_pfx);
  lb_rl_as_t *as;
  u32 slot, t;
  int is_ip4 = ip46_address_is_ip4 (addr);

  if (!vip)
    return VNET_API_ERROR_NO_SUCH_ENTRY;
  if (!isfinite (static_weight) || static_weight <= 0)
    return VNET_API_ERROR_INVALID_VALUE;
  if ((vip->encap == LB_RL_ENCAP_GRE4) != is_ip4)
    return VNET_API_ERROR_INVALID_ADDRESS_FAMILY;
  if (lb_rl_as_find (vip, addr))
    return VNET_API_ERROR_VALUE_EXIST;
  for (slot = 0; slot < vec_len (vip->as_by_server); slot++)
    if (vip->as_by_server[slot] == ~0)
      break;
  if (slot == vec_len (vip->as_by_server))
    return VNET_API_ERROR_TABLE_TOO_BIG; /* max_servers reached */

  vec_foreach_index (t, vip->ctx_by_thread)
    {
      int rv = lb_rl_server_add (vip->ctx_by_thread[t], slot, static_weight);
      if (rv != LB_RL_OK)
	{
	  while (t-- > 0)
	    lb_rl_server_remove (vip->ctx_by_thread[t], slot);
	  return VNET_API_ERROR_UNSPECIFIED;
	}
    }

  pool_get_zero (lbm->ass, as);
  as->address = *addr;
  as->vip_index = vip - lbm->vips;
  as->server_index = slot;
  as->static_weight = static_weight;
  vip->as_by_server[slot] = as - lbm->ass;
  vip->n_as++;
  return 0;
}

int
lb_rl_as_del (const fib_prefix_t *vip_pfx, const ip46_address_t *addr)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  lb_rl_vip_t *vip = lb_rl_vip_find (vip_pfx);
  lb_rl_as_t *as;
  u32 t;

  if (!vip)
    return VNET_API_ERROR_NO_SUCH_ENTRY;
  as = lb_rl_as_find (vip, addr);
  if (!as)
    return VNET_API_ERROR_NO_SUCH_ENTRY;
  vec_foreach_index (t, vip->ctx_by_thread)
    lb_rl_server_remove (vip->ctx_by_thread[t], as->server_index);
  vip->as_by_server[as->server_index] = ~0;
  vip->n_as--;
  pool_put (lbm->ass, as);
  return 0;
}

int
lb_rl_vip_set_weights (const fib_prefix_t *vip_pfx, const f64 *w, u32 n,
		       int *verdict)
{
  lb_rl_vip_t *vip = lb_rl_vip_find (vip_pfx);
  int v;

  if (!vip)
    return VNET_API_ERROR_NO_SUCH_ENTRY;
  v = lb_rl_vip_apply_weights (vip, w, n);
  if (verdict)
    *verdict = v;
  return v == LB_RL_W_OK ? 0 : VNET_API_ERROR_INVALID_VALUE;
}

/* ---------------------------------------------------------------------- */
/* shm exchange: one tick per VIP every step_s, on the main thread         */
/* ---------------------------------------------------------------------- */

/** Pick `take` of the `n` samples in s[] uniformly without replacement into
 *  out[] (partial Fisher-Yates on s, which is scratch). */
static void
lb_rl_pick_samples (lb_rl_sample_t *s, u32 n, u32 take, lb_rl_sample_t *out,
		    u32 *seed)
{
  u32 i;
  for (i = 0; i < take; i++)
    {
      u32 j = i + random_u32 (seed) % (n - i);
      lb_rl_sample_t tmp = s[i];
      s[i] = s[j];
      s[j] = tmp;
      out[i] = s[i];
    }
}

/** Merge one (server, kind) reservoir over threads into out[K]: thread t
 *  gets a share of the K slots proportional to the samples it was offered
 *  (n_samples), capped by what its reservoir holds, so the merged snapshot
 *  approximates one reservoir over the union of the threads' sample
 *  streams. With one thread this is a plain copy. Returns slots filled. */
static u32
lb_rl_merge_reservoir (lb_rl_vip_t *vip, u32 server, u32 kind, u32 K,
		       lb_rl_sample_t *out, u32 *seed)
{
  u32 n_threads = vec_len (vip->ctx_by_thread);
  lb_rl_sample_t scratch[LB_RL_SHM_MAX_RES_SLOTS];
  u32 fill[n_threads], quota[n_threads];
  u64 offered[n_threads], total = 0;
  u32 t, filled = 0, left;

  for (t = 0; t < n_threads; t++)
    {
      lb_rl_server_counters_t c;
      fill[t] = lb_rl_reservoir_read (vip->ctx_by_thread[t], server, kind,
				      scratch, K);
      offered[t] = 0;
      if (fill[t] &&
	  lb_rl_server_counters (vip->ctx_by_thread[t], server, &c) ==
	    LB_RL_OK)
	offered[t] = clib_max (c.n_samples[kind], (u64) fill[t]);
      total += offered[t];
      quota[t] = 0;
    }
  if (total == 0)
    return 0;
  /* proportional quotas, then hand out the remainder to threads with room */
  left = K;
  for (t = 0; t < n_threads; t++)
    {
      quota[t] = clib_min ((u32) ((f64) K * offered[t] / total), fill[t]);
      left -= quota[t];
    }
  while (left > 0)
    {
      u32 progress = 0;
      for (t = 0; t < n_threads && left > 0; t++)
	if (fill[t] > quota[t])
	  {
	    quota[t]++;
	    left--;
	    progress = 1;
	  }
      if (!progress)
	break;
    }
  for (t = 0; t < n_threads; t++)
    {
      if (!quota[t])
	continue;
      lb_rl_reservoir_read (vip->ctx_by_thread[t], server, kind, scratch, K);
      lb_rl_pick_samples (scratch, fill[t], quota[t], out + filled, seed);
      filled += quota[t];
    }
  return filled;
}

/** Publish one msg_out frame aggregated over all threads' contexts. */
static int
lb_rl_vip_publish (lb_rl_vip_t *vip, f64 now, f64 wall)
{
  lb_rl_shm_header_t *h = lb_rl_shm_header (vip->shm);
  lb_rl_shm_status_t st;
  lb_rl_shm_out_frame_t *f;
  lb_rl_counters_t c;
  static f64 *w; /* S weights; the process node's stack is too small for 4096 */
  u32 i, k, K = h->reservoir_slots, S = h->max_servers, n_active = 0;
  u32 seed = (u32) (now * 1e6);
  u64 *active;

  if (vec_len (vip->ctx_by_thread) == 1)
    return lb_rl_shm_publish (vip->shm, vip->ctx_by_thread[0], now, wall, 0);

  f = lb_rl_shm_out_begin (vip->shm, 0);
  if (!f)
    return LB_RL_SHM_E_ROLE;
  /* everything after the commit word and checksum starts at zero */
  clib_memset ((u8 *) f + LB_RL_SHM_PAYLOAD_OFFSET, 0,
	       h->out_frame_stride - LB_RL_SHM_PAYLOAD_OFFSET);
  lb_rl_vip_counters (vip, &c);
  vec_validate (w, S - 1);
  clib_memset (w, 0, S * sizeof (f64));
  lb_rl_get_weights (vip->ctx_by_thread[0], w);
  lb_rl_shm_status (vip->shm, &st);

  f->time_s = now;
  f->wall_s = wall;
  active = lb_rl_shm_frame_active (vip->shm, f);
  f->active_words = (S + 63) / 64;
  lb_rl_servers_present (vip->ctx_by_thread[0], active, f->active_words);
  for (i = 0; i < f->active_words; i++)
    n_active += count_set_bits (active[i]);
  f->n_active = n_active;
  f->in_seq_applied = st.in_seq_applied;
  f->n_servers = S;
  f->reservoir_slots = K;
  f->fallback_active = st.fallback_active;
  f->tracked_flows = c.tracked_flows;
  f->packets = c.packets;
  f->new_flows = c.new_flows;
  f->untracked_full = c.untracked_full;
  f->untracked_miss = c.untracked_miss;
  f->flows_lost = c.flows_lost;
  f->timeouts = c.timeouts;
  f->no_server = c.no_server;
  f->weight_updates = c.weight_updates;
  for (i = 0; i < S; i++)
    {
      lb_rl_shm_server_t *r = lb_rl_shm_frame_server (vip->shm, f, i);
      lb_rl_server_counters_t sc;
      lb_rl_vip_server_counters (vip, i, &sc);
      r->n_flow_on = sc.n_flow_on;
      r->n_flow_pending = sc.n_flow_pending;
      r->n_flow_untracked = sc.n_flow_untracked;
      r->n_flow_new = sc.n_flow_new;
      r->n_flow_closed = sc.n_flow_closed;
      r->n_flow_timeout = sc.n_flow_timeout;
      r->packets = sc.packets;
      r->bytes = sc.bytes;
      r->weight = w[i];
      for (k = 0; k < LB_RL_N_RES; k++)
	{
	  lb_rl_sample_t *dst = lb_rl_shm_frame_samples (vip->shm, f, i, k);
	  r->n_samples[k] = sc.n_samples[k];
	  r->fill[k] = lb_rl_merge_reservoir (vip, i, k, K, dst, &seed);
	  if (r->fill[k] < K)
	    clib_memset (dst + r->fill[k], 0,
			 (K - r->fill[k]) * sizeof (lb_rl_sample_t));
	}
    }
  lb_rl_shm_out_commit (vip->shm, f);
  return LB_RL_SHM_OK;
}

/** Poll msg_in once against thread 0's context (the shm code validates,
 *  applies or falls back there), then copy the outcome to the other
 *  threads' contexts so every worker uses the same weights. */
static void
lb_rl_vip_poll (lb_rl_vip_t *vip, f64 now, f64 wall)
{
  int rv = lb_rl_shm_poll_in (vip->shm, vip->ctx_by_thread[0], now, wall);
  u32 t;

  if (rv < 0)
    {
      vip->shm_last_error = rv;
      return;
    }
  if (rv == LB_RL_SHM_POLL_APPLIED)
    {
      static f64 *w; /* max_servers weights: not on the process stack */
      vec_validate (w, vip->max_servers - 1);
      lb_rl_get_weights (vip->ctx_by_thread[0], w);
      for (t = 1; t < vec_len (vip->ctx_by_thread); t++)
	(void) lb_rl_set_weights (vip->ctx_by_thread[t], w, vip->max_servers);
      vip->shm_polls_applied++;
    }
  else if (rv == LB_RL_SHM_POLL_FALLBACK)
    {
      for (t = 1; t < vec_len (vip->ctx_by_thread); t++)
	(void) lb_rl_use_static_weights (vip->ctx_by_thread[t]);
      vip->shm_fallbacks++;
    }
  else if (rv == LB_RL_SHM_POLL_REJECTED)
    vip->shm_polls_rejected++;
}

void
lb_rl_vip_shm_tick (lb_rl_vip_t *vip, f64 now)
{
  f64 wall = unix_time_now ();
  u32 t;
  int rv;

  vec_foreach_index (t, vip->ctx_by_thread)
    lb_rl_expire (vip->ctx_by_thread[t], now, LB_RL_EXPIRE_BUDGET);
  if (!vip->shm)
    return;
  rv = lb_rl_vip_publish (vip, now, wall);
  if (rv == LB_RL_SHM_OK)
    vip->shm_frames_out++;
  else
    vip->shm_last_error = rv;
  lb_rl_vip_poll (vip, now, wall);
}

/** The shm process: every step_s, with the worker barrier held, expire
 *  idle flows, publish one msg_out frame per VIP and apply new msg_in
 *  weights. The barrier makes reading other threads' contexts and swapping
 *  their weight tables safe; its cost is paid once per step, not per
 *  packet. */
static uword
lb_rl_process_fn (vlib_main_t *vm, vlib_node_runtime_t *rt, vlib_frame_t *f)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  lb_rl_vip_t *vip;

  while (1)
    {
      vlib_process_wait_for_event_or_clock (vm, lbm->step_s);
      vlib_process_get_events (vm, NULL);
      if (pool_elts (lbm->vips) == 0)
	continue;
      vlib_worker_thread_barrier_sync (vm);
      pool_foreach (vip, lbm->vips)
	lb_rl_vip_shm_tick (vip, vlib_time_now (vm));
      vlib_worker_thread_barrier_release (vm);
    }
  return 0;
}

VLIB_REGISTER_NODE (lb_rl_process_node) = {
  .function = lb_rl_process_fn,
  .type = VLIB_NODE_TYPE_PROCESS,
  .name = "lb_rl-process",
};

/* ---------------------------------------------------------------------- */
/* init                                                                    */
/* ---------------------------------------------------------------------- */

static clib_error_t *
lb_rl_init (vlib_main_t *vm)
{
  lb_rl_main_t *lbm = &lb_rl_main;

  lbm->vlib_main = vm;
  lbm->vnet_main = vnet_get_main ();
  lbm->policy = LB_RL_POLICY_SED;
  lbm->flow_timeout_s = LB_RL_DEFAULT_FLOW_TIMEOUT_S;
  lbm->flow_table_size = LB_RL_DEFAULT_FLOW_TABLE_SIZE;
  lbm->sample_prob = 1.0;
  lbm->step_s = LB_RL_DEFAULT_STEP_S;
  lbm->fallback_s = LB_RL_DEFAULT_FALLBACK_S;
  lbm->shm_dir = format (0, "%s%c", LB_RL_DEFAULT_SHM_DIR, 0);
  lbm->seed = 1;
  lbm->dpo_type = dpo_register_new_type (&lb_rl_dpo_vft, lb_rl_dpo_nodes);
  lbm->fib_src = fib_source_allocate ("lb_rl", FIB_SOURCE_PRIORITY_HI,
				      FIB_SOURCE_BH_SIMPLE);
  lbm->process_node_index = lb_rl_process_node.index;
  return 0;
}

VLIB_INIT_FUNCTION (lb_rl_init);

/** startup.conf section: lb_rl { seed <n> shm-dir <dir>
 *  flow-table-size <n> sample-prob <p> reservoir-size <k> }. */
static clib_error_t *
lb_rl_config_fn (vlib_main_t *vm, unformat_input_t *input)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  u8 *dir = 0;
  u64 seed, size, k;
  f64 prob;
  const char *why;

  while (unformat_check_input (input) != UNFORMAT_END_OF_INPUT)
    {
      if (unformat (input, "seed %llu", &seed))
	lbm->seed = seed;
      else if (unformat (input, "flow-table-size %llu", &size))
	{
	  if ((why = lb_rl_flow_table_size_check (size)))
	    return clib_error_return (0, "lb_rl: %s (got %llu)", why, size);
	  lbm->flow_table_size = (u32) size;
	}
      else if (unformat (input, "reservoir-size %llu", &k))
	{
	  /* K slots per reservoir, and per (server, kind) in every shm frame:
	   * at 4096 servers K = 128 makes a 17 MB frame, K = 16 a 2.5 MB one */
	  if (k < 1 || k > LB_RL_SHM_MAX_RES_SLOTS)
	    return clib_error_return (0, "lb_rl: reservoir-size must be in "
				      "1..%u (got %llu)",
				      LB_RL_SHM_MAX_RES_SLOTS, k);
	  lbm->reservoir_size = (u32) k;
	}
      else if (unformat (input, "sample-prob %f", &prob))
	{
	  if (!(prob > 0 && prob <= 1))
	    return clib_error_return (0, "lb_rl: sample-prob must be in (0, 1] "
				      "(got %g)", prob);
	  lbm->sample_prob = prob;
	}
      else if (unformat (input, "shm-dir %s", &dir))
	{
	  vec_add1 (dir, 0);
	  vec_free (lbm->shm_dir);
	  lbm->shm_dir = dir;
	  dir = 0;
	}
      else
	return clib_error_return (0, "lb_rl: unknown input '%U'",
				  format_unformat_error, input);
    }
  return 0;
}

VLIB_CONFIG_FUNCTION (lb_rl_config_fn, "lb_rl");
