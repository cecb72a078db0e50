/*
 * api.c - binary API of the lb_rl plugin. Handlers decode the message
 * (network byte order in, f64 native), call the action function of lb_rl.c
 * and reply; reply fields are converted to network order here (f64 stays
 * native, as vpp_papi expects).
 */
#include <vnet/vnet.h>
#include <vnet/format_fns.h>
#include <vnet/ip/ip_types_api.h>
#include <vlibapi/api.h>
#include <vlibmemory/api.h>

#include "lb_rl.h"

#include <lb_rl/lb_rl.api_enum.h>
#include <lb_rl/lb_rl.api_types.h>

#define REPLY_MSG_ID_BASE lbm->msg_id_base
#include <vlibapi/api_helper_macros.h>

/** Copy a fixed-size API string into a NUL-terminated C buffer. */
static void
lb_rl_api_string (const u8 *in, u32 in_size, char *out, u32 out_size)
{
  u32 n = strnlen ((const char *) in, in_size);
  n = clib_min (n, out_size - 1);
  clib_memcpy (out, in, n);
  out[n] = 0;
}

static void
vl_api_lb_rl_conf_t_handler (vl_api_lb_rl_conf_t *mp)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vl_api_lb_rl_conf_reply_t *rmp;
  lb_rl_policy_t policy = (lb_rl_policy_t) mp->policy;
  ip4_address_t ip4;
  ip6_address_t ip6;
  char shm_dir[sizeof (mp->shm_dir) + 1];
  int rv;

  ip4_address_decode (mp->ip4_src_address, &ip4);
  ip6_address_decode (mp->ip6_src_address, &ip6);
  lb_rl_api_string (mp->shm_dir, sizeof (mp->shm_dir), shm_dir,
		    sizeof (shm_dir));
  rv = lb_rl_conf (mp->set_policy ? &policy : 0,
		   clib_net_to_host_f64 (mp->flow_timeout_s),
		   clib_net_to_host_f64 (mp->step_s),
		   clib_net_to_host_f64 (mp->fallback_s), &ip4, &ip6, shm_dir);
  REPLY_MACRO (VL_API_LB_RL_CONF_REPLY);
}

static void
vl_api_lb_rl_conf_get_t_handler (vl_api_lb_rl_conf_get_t *mp)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vl_api_lb_rl_conf_get_reply_t *rmp;
  int rv = 0;

  REPLY_MACRO2 (VL_API_LB_RL_CONF_GET_REPLY, ({
		      rmp->policy = (vl_api_lb_rl_policy_t) lbm->policy;
		      rmp->flow_timeout_s = lbm->flow_timeout_s;
		      rmp->step_s = lbm->step_s;
		      rmp->fallback_s = lbm->fallback_s;
		      ip4_address_encode (&lbm->ip4_src_address,
					  rmp->ip4_src_address);
		      ip6_address_encode (&lbm->ip6_src_address,
					  rmp->ip6_src_address);
		      if (lbm->shm_dir)
			strncpy ((char *) rmp->shm_dir, (char *) lbm->shm_dir,
				 sizeof (rmp->shm_dir) - 1);
		    }));
}

/** Shared body of lb_rl_add_del_vip, _v2 and _v3 (flow_table_size and
 *  max_servers 0 = default). */
static int
lb_rl_api_add_del_vip (const vl_api_prefix_t *api_pfx, vl_api_lb_rl_encap_t encap,
		       u32 flow_table_size, u32 max_servers, bool is_del)
{
  fib_prefix_t pfx;
  ip_prefix_decode (api_pfx, &pfx);
  if (is_del)
    return lb_rl_vip_del (&pfx);
  return lb_rl_vip_add (&pfx, (lb_rl_encap_t) encap, flow_table_size,
			max_servers, 0);
}

static void
vl_api_lb_rl_add_del_vip_t_handler (vl_api_lb_rl_add_del_vip_t *mp)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vl_api_lb_rl_add_del_vip_reply_t *rmp;
  int rv = lb_rl_api_add_del_vip (&mp->pfx, mp->encap, 0, 0, mp->is_del);
  REPLY_MACRO (VL_API_LB_RL_ADD_DEL_VIP_REPLY);
}

static void
vl_api_lb_rl_add_del_vip_v2_t_handler (vl_api_lb_rl_add_del_vip_v2_t *mp)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vl_api_lb_rl_add_del_vip_v2_reply_t *rmp;
  int rv = lb_rl_api_add_del_vip (
    &mp->pfx, mp->encap, clib_net_to_host_u32 (mp->flow_table_size), 0, mp->is_del);
  REPLY_MACRO (VL_API_LB_RL_ADD_DEL_VIP_V2_REPLY);
}

static void
vl_api_lb_rl_add_del_vip_v3_t_handler (vl_api_lb_rl_add_del_vip_v3_t *mp)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vl_api_lb_rl_add_del_vip_v3_reply_t *rmp;
  int rv = lb_rl_api_add_del_vip (
    &mp->pfx, mp->encap, clib_net_to_host_u32 (mp->flow_table_size),
    clib_net_to_host_u32 (mp->max_servers), mp->is_del);
  REPLY_MACRO (VL_API_LB_RL_ADD_DEL_VIP_V3_REPLY);
}

static void
vl_api_lb_rl_add_del_as_t_handler (vl_api_lb_rl_add_del_as_t *mp)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vl_api_lb_rl_add_del_as_reply_t *rmp;
  fib_prefix_t pfx;
  ip46_address_t addr;
  int rv;

  ip_prefix_decode (&mp->vip_pfx, &pfx);
  ip_address_decode (&mp->as_address, &addr);
  if (mp->is_del)
    rv = lb_rl_as_del (&pfx, &addr);
  else
    rv = lb_rl_as_add (&pfx, &addr, clib_net_to_host_f64 (mp->weight));
  REPLY_MACRO (VL_API_LB_RL_ADD_DEL_AS_REPLY);
}

/** Shared body of lb_rl_set_weights (u8 count) and its _v2 (u16 count, up
 *  to LB_RL_MAX_SERVERS): weights in network order. */
static int
lb_rl_api_set_weights (const vl_api_prefix_t *api_pfx, const f64 *net_w,
		       u32 n)
{
  fib_prefix_t pfx;
  f64 *w = 0; /* up to 4096 weights: a vec, not the API process's stack */
  u32 i;
  int rv;

  ip_prefix_decode (api_pfx, &pfx);
  if (n == 0 || n > LB_RL_MAX_SERVERS)
    return VNET_API_ERROR_INVALID_VALUE;
  vec_validate (w, n - 1);
  for (i = 0; i < n; i++)
    w[i] = clib_net_to_host_f64 (net_w[i]);
  rv = lb_rl_vip_set_weights (&pfx, w, n, 0);
  vec_free (w);
  return rv;
}

static void
vl_api_lb_rl_set_weights_t_handler (vl_api_lb_rl_set_weights_t *mp)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vl_api_lb_rl_set_weights_reply_t *rmp;
  int rv = lb_rl_api_set_weights (&mp->vip_pfx, mp->weights, mp->n_weights);
  REPLY_MACRO (VL_API_LB_RL_SET_WEIGHTS_REPLY);
}

static void
vl_api_lb_rl_set_weights_v2_t_handler (vl_api_lb_rl_set_weights_v2_t *mp)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vl_api_lb_rl_set_weights_v2_reply_t *rmp;
  int rv = lb_rl_api_set_weights (&mp->vip_pfx, mp->weights,
				  clib_net_to_host_u16 (mp->n_weights));
  REPLY_MACRO (VL_API_LB_RL_SET_WEIGHTS_V2_REPLY);
}

static void
lb_rl_send_vip_details (vl_api_registration_t *reg, u32 context,
			lb_rl_vip_t *vip)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vl_api_lb_rl_vip_details_t *rmp;
  lb_rl_counters_t c;

  lb_rl_vip_counters (vip, &c);
  REPLY_MACRO_DETAILS4 (VL_API_LB_RL_VIP_DETAILS, reg, context, ({
			      rmp->vip_index = htonl (vip - lbm->vips);
			      ip_prefix_encode (&vip->prefix, &rmp->pfx);
			      rmp->encap = (vl_api_lb_rl_encap_t) vip->encap;
			      rmp->n_as = htonl (vip->n_as);
			      rmp->tracked_flows = htonl (c.tracked_flows);
			      if (vip->shm)
				strncpy ((char *) rmp->shm_path,
					 (char *) vip->shm_path,
					 sizeof (rmp->shm_path) - 1);
			    }));
}

static void
vl_api_lb_rl_vip_dump_t_handler (vl_api_lb_rl_vip_dump_t *mp)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vl_api_registration_t *reg;
  lb_rl_vip_t *vip;

  reg = vl_api_client_index_to_registration (mp->client_index);
  if (!reg)
    return;
  pool_foreach (vip, lbm->vips)
    lb_rl_send_vip_details (reg, mp->context, vip);
}

static void
lb_rl_send_as_details (vl_api_registration_t *reg, u32 context,
		       lb_rl_vip_t *vip, lb_rl_as_t *as, const f64 *w)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vl_api_lb_rl_as_details_t *rmp;
  lb_rl_server_counters_t c;

  lb_rl_vip_server_counters (vip, as->server_index, &c);
  REPLY_MACRO_DETAILS4 (VL_API_LB_RL_AS_DETAILS, reg, context, ({
			      rmp->vip_index = htonl (vip - lbm->vips);
			      rmp->server_index = htonl (as->server_index);
			      ip_address_encode (&as->address, IP46_TYPE_ANY,
						 &rmp->as_address);
			      rmp->static_weight = as->static_weight;
			      rmp->weight = w[as->server_index];
			      rmp->n_flow_on = htonl ((i32) c.n_flow_on);
			      rmp->n_flow_new = clib_host_to_net_u64 (c.n_flow_new);
			      rmp->n_flow_closed = clib_host_to_net_u64 (c.n_flow_closed);
			      rmp->packets = clib_host_to_net_u64 (c.packets);
			      rmp->bytes = clib_host_to_net_u64 (c.bytes);
			    }));
}

static void
vl_api_lb_rl_as_dump_t_handler (vl_api_lb_rl_as_dump_t *mp)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vl_api_registration_t *reg;
  fib_prefix_t pfx;
  lb_rl_vip_t *vip;
  f64 *w = 0;
  u32 i;

  reg = vl_api_client_index_to_registration (mp->client_index);
  if (!reg)
    return;
  ip_prefix_decode (&mp->vip_pfx, &pfx);
  vip = lb_rl_vip_find (&pfx);
  if (!vip)
    return;
  vec_validate (w, vip->max_servers - 1);
  lb_rl_get_weights (vip->ctx_by_thread[0], w);
  for (i = 0; i < vec_len (vip->as_by_server); i++)
    if (vip->as_by_server[i] != ~0)
      lb_rl_send_as_details (
	reg, mp->context, vip,
	pool_elt_at_index (lbm->ass, vip->as_by_server[i]), w);
  vec_free (w);
}

static void
vl_api_lb_rl_stats_get_t_handler (vl_api_lb_rl_stats_get_t *mp)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vl_api_lb_rl_stats_get_reply_t *rmp;
  lb_rl_counters_t c = {};
  lb_rl_shm_status_t st = {};
  fib_prefix_t pfx;
  lb_rl_vip_t *vip;
  int rv = 0;

  ip_prefix_decode (&mp->vip_pfx, &pfx);
  vip = lb_rl_vip_find (&pfx);
  if (!vip)
    rv = VNET_API_ERROR_NO_SUCH_ENTRY;
  else
    {
      lb_rl_vip_counters (vip, &c);
      if (vip->shm)
	lb_rl_shm_status (vip->shm, &st);
    }
  REPLY_MACRO2 (VL_API_LB_RL_STATS_GET_REPLY, ({
		      rmp->packets = clib_host_to_net_u64 (c.packets);
		      rmp->new_flows = clib_host_to_net_u64 (c.new_flows);
		      rmp->untracked_full = clib_host_to_net_u64 (c.untracked_full);
		      rmp->untracked_miss = clib_host_to_net_u64 (c.untracked_miss);
		      rmp->flows_lost = clib_host_to_net_u64 (c.flows_lost);
		      rmp->timeouts = clib_host_to_net_u64 (c.timeouts);
		      rmp->no_server = clib_host_to_net_u64 (c.no_server);
		      rmp->weight_updates = clib_host_to_net_u64 (c.weight_updates);
		      rmp->weight_rejects = clib_host_to_net_u64 (c.weight_rejects);
		      rmp->tracked_flows = htonl (c.tracked_flows);
		      rmp->shm_frames_out =
			clib_host_to_net_u64 (vip ? vip->shm_frames_out : 0);
		      rmp->shm_frames_in = clib_host_to_net_u64 (st.weights_accepted);
		      rmp->shm_fallback = st.fallback_active != 0;
		    }));
}

#include <lb_rl/lb_rl.api.c>

static clib_error_t *
lb_rl_api_init (vlib_main_t *vm)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  lbm->msg_id_base = setup_message_id_table ();
  return 0;
}

VLIB_INIT_FUNCTION (lb_rl_api_init);
