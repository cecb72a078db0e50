/*
 * cli.c - debug CLI of the lb_rl plugin. Handlers only parse input and call
 * the action functions of lb_rl.c; reads live under `show lb_rl`.
 */
#include <vlib/vlib.h>
#include <vnet/vnet.h>

#include "lb_rl.h"

/** Text for an action function's VNET_API_ERROR_* code. */
static clib_error_t *
lb_rl_cli_error (int rv, const char *what)
{
  switch (rv)
    {
    case 0:
      return 0;
    case VNET_API_ERROR_NO_SUCH_ENTRY:
      return clib_error_return (0, "%s: no such VIP or server", what);
    case VNET_API_ERROR_VALUE_EXIST:
      return clib_error_return (0, "%s: already exists", what);
    case VNET_API_ERROR_RSRC_IN_USE:
      return clib_error_return (0, "%s: VIP still has servers, delete them "
				   "first", what);
    case VNET_API_ERROR_INVALID_SRC_ADDRESS:
      return clib_error_return (0, "%s: set the outer source first: "
				   "lb_rl conf ip4-src <a> | ip6-src <a>",
				what);
    case VNET_API_ERROR_INVALID_ADDRESS_FAMILY:
      return clib_error_return (0, "%s: server address family does not "
				   "match the VIP's encap (gre4: IPv4, gre6: "
				   "IPv6)", what);
    case VNET_API_ERROR_TABLE_TOO_BIG:
      return clib_error_return (0, "%s: VIP already has max-servers servers "
				   "(lb_rl vip ... max-servers <n>, up to %u)",
				what, LB_RL_MAX_SERVERS);
    case VNET_API_ERROR_INVALID_VALUE:
      return clib_error_return (0, "%s: invalid value", what);
    case VNET_API_ERROR_INVALID_VALUE_2:
      return clib_error_return (0, "%s: step must be in [0.001, 60] s",
				what);
    case VNET_API_ERROR_INVALID_VALUE_3:
      return clib_error_return (0, "%s: shm dir longer than 100 bytes",
				what);
    default:
      return clib_error_return (0, "%s: error %d", what, rv);
    }
}

static clib_error_t *
lb_rl_vip_command_fn (vlib_main_t *vm, unformat_input_t *input,
		      vlib_cli_command_t *cmd)
{
  unformat_input_t _line_input, *line_input = &_line_input;
  clib_error_t *error = 0;
  fib_prefix_t pfx;
  lb_rl_encap_t encap = ~0;
  int del = 0, have_pfx = 0, rv;
  u32 vip_index;
  u64 table_size = 0, max_servers = 0;
  const char *why;

  if (!unformat_user (input, unformat_line_input, line_input))
    return clib_error_return (0, "lb_rl: missing <prefix>");

  while (unformat_check_input (line_input) != UNFORMAT_END_OF_INPUT)
    {
      if (!have_pfx &&
	  unformat (line_input, "%U", unformat_lb_rl_prefix, &pfx))
	have_pfx = 1;
      else if (unformat (line_input, "encap %U", unformat_lb_rl_encap,
			 &encap))
	;
      else if (unformat (line_input, "flow-table-size %llu", &table_size))
	{
	  if ((why = lb_rl_flow_table_size_check (table_size)))
	    {
	      error = clib_error_return (0, "lb_rl vip: %s (got %llu)", why,
					 table_size);
	      goto done;
	    }
	}
      else if (unformat (line_input, "max-servers %llu", &max_servers))
	{
	  if (max_servers < 1 || max_servers > LB_RL_MAX_SERVERS)
	    {
	      error = clib_error_return (0, "lb_rl vip: max-servers must be in "
					    "1..%u (got %llu)",
					 LB_RL_MAX_SERVERS, max_servers);
	      goto done;
	    }
	}
      else if (unformat (line_input, "del"))
	del = 1;
      else
	{
	  error = clib_error_return (0, "lb_rl: parse error: '%U'",
				     format_unformat_error, line_input);
	  goto done;
	}
    }
  if (!have_pfx)
    {
      error = clib_error_return (0, "lb_rl: missing <prefix> (a.b.c.d/len or "
				    "x::y/len)");
      goto done;
    }
  if (del)
    {
      error = lb_rl_cli_error (lb_rl_vip_del (&pfx), "lb_rl vip del");
      goto done;
    }
  if (encap == (lb_rl_encap_t) ~0)
    encap = pfx.fp_proto == FIB_PROTOCOL_IP4 ? LB_RL_ENCAP_GRE4 :
						 LB_RL_ENCAP_GRE6;
  rv = lb_rl_vip_add (&pfx, encap, (u32) table_size, (u32) max_servers,
		      &vip_index);
  error = lb_rl_cli_error (rv, "lb_rl vip");
  if (!error)
    vlib_cli_output (vm, "vip %u", vip_index);

done:
  unformat_free (line_input);
  return error;
}

VLIB_CLI_COMMAND (lb_rl_vip_command, static) = {
  .path = "lb_rl vip",
  .short_help = "lb_rl vip <prefix> [encap gre4|gre6] [flow-table-size <n>] "
		"[max-servers <n>] [del]",
  .function = lb_rl_vip_command_fn,
};

static clib_error_t *
lb_rl_as_command_fn (vlib_main_t *vm, unformat_input_t *input,
		     vlib_cli_command_t *cmd)
{
  unformat_input_t _line_input, *line_input = &_line_input;
  clib_error_t *error = 0;
  fib_prefix_t vip_pfx;
  ip46_address_t addr, *addrs = 0, *a;
  f64 weight = 1.0;
  int del = 0;

  if (!unformat_user (input, unformat_line_input, line_input))
    return clib_error_return (0, "lb_rl: missing <vip-prefix>");
  if (!unformat (line_input, "%U", unformat_lb_rl_prefix, &vip_pfx))
    {
      error = clib_error_return (0, "lb_rl: missing <vip-prefix>: '%U'",
				 format_unformat_error, line_input);
      goto done;
    }
  while (unformat_check_input (line_input) != UNFORMAT_END_OF_INPUT)
    {
      if (unformat (line_input, "weight %f", &weight))
	;
      else if (unformat (line_input, "del"))
	del = 1;
      else if (unformat (line_input, "%U", unformat_lb_rl_address, &addr))
	vec_add1 (addrs, addr);
      else
	{
	  error = clib_error_return (0, "lb_rl: parse error: '%U'",
				     format_unformat_error, line_input);
	  goto done;
	}
    }
  if (!vec_len (addrs))
    {
      error = clib_error_return (0, "lb_rl: missing server <address>");
      goto done;
    }
  vec_foreach (a, addrs)
    {
      int rv = del ? lb_rl_as_del (&vip_pfx, a) :
		     lb_rl_as_add (&vip_pfx, a, weight);
      if ((error = lb_rl_cli_error (rv, del ? "lb_rl as del" : "lb_rl as")))
	goto done;
    }

done:
  vec_free (addrs);
  unformat_free (line_input);
  return error;
}

VLIB_CLI_COMMAND (lb_rl_as_command, static) = {
  .path = "lb_rl as",
  .short_help = "lb_rl as <vip-prefix> <address> [<address> ...] "
		"[weight <w>] [del]",
  .function = lb_rl_as_command_fn,
};

static clib_error_t *
lb_rl_conf_command_fn (vlib_main_t *vm, unformat_input_t *input,
		       vlib_cli_command_t *cmd)
{
  unformat_input_t _line_input, *line_input = &_line_input;
  clib_error_t *error = 0;
  lb_rl_policy_t policy;
  int have_policy = 0;
  f64 timeout_s = 0, step_s = 0, fallback_s = -1;
  ip4_address_t ip4 = { .as_u32 = 0 };
  ip6_address_t ip6 = {};
  u8 *shm_dir = 0;

  if (!unformat_user (input, unformat_line_input, line_input))
    return clib_error_return (0, "lb_rl: missing arguments, see 'help lb_rl conf'");
  while (unformat_check_input (line_input) != UNFORMAT_END_OF_INPUT)
    {
      if (unformat (line_input, "policy %U", unformat_lb_rl_policy, &policy))
	have_policy = 1;
      else if (unformat (line_input, "timeout %f", &timeout_s))
	{
	  if (timeout_s <= 0)
	    {
	      error = clib_error_return (0, "lb_rl: timeout must be > 0 s");
	      goto done;
	    }
	}
      else if (unformat (line_input, "step %f", &step_s))
	{
	  if (step_s <= 0)
	    {
	      error = clib_error_return (0, "lb_rl: step must be > 0 s");
	      goto done;
	    }
	}
      else if (unformat (line_input, "fallback %f", &fallback_s))
	{
	  if (fallback_s < 0)
	    {
	      error = clib_error_return (0, "lb_rl: fallback must be >= 0 s "
					    "(0 disables it)");
	      goto done;
	    }
	}
      else if (unformat (line_input, "ip4-src %U", unformat_ip4_address,
			 &ip4))
	;
      else if (unformat (line_input, "ip6-src %U", unformat_ip6_address,
			 &ip6))
	;
      else if (unformat (line_input, "shm %s", &shm_dir))
	;
      else
	{
	  error = clib_error_return (0, "lb_rl: parse error: '%U'",
				     format_unformat_error, line_input);
	  goto done;
	}
    }
  if (shm_dir)
    vec_add1 (shm_dir, 0);
  error = lb_rl_cli_error (lb_rl_conf (have_policy ? &policy : 0, timeout_s,
				       step_s, fallback_s, &ip4, &ip6,
				       (char *) shm_dir),
			   "lb_rl conf");
done:
  vec_free (shm_dir);
  unformat_free (line_input);
  return error;
}

VLIB_CLI_COMMAND (lb_rl_conf_command, static) = {
  .path = "lb_rl conf",
  .short_help = "lb_rl conf [policy ecmp|wcmp|lsq|sed|lsq2|sed2] "
		"[timeout <s>] [step <s>] [fallback <s>] [ip4-src <a>] "
		"[ip6-src <a>] [shm <dir>]",
  .function = lb_rl_conf_command_fn,
};

static clib_error_t *
lb_rl_weights_command_fn (vlib_main_t *vm, unformat_input_t *input,
			  vlib_cli_command_t *cmd)
{
  unformat_input_t _line_input, *line_input = &_line_input;
  clib_error_t *error = 0;
  fib_prefix_t vip_pfx;
  f64 w, *ws = 0;
  int verdict = LB_RL_W_OK, rv;

  if (!unformat_user (input, unformat_line_input, line_input))
    return clib_error_return (0, "lb_rl: missing <vip-prefix>");
  if (!unformat (line_input, "%U", unformat_lb_rl_prefix, &vip_pfx))
    {
      error = clib_error_return (0, "lb_rl: missing <vip-prefix>: '%U'",
				 format_unformat_error, line_input);
      goto done;
    }
  while (unformat_check_input (line_input) != UNFORMAT_END_OF_INPUT)
    {
      if (unformat (line_input, "%f", &w))
	vec_add1 (ws, w);
      else
	{
	  error = clib_error_return (0, "lb_rl: parse error: '%U'",
				     format_unformat_error, line_input);
	  goto done;
	}
    }
  if (!vec_len (ws) || vec_len (ws) > LB_RL_MAX_SERVERS)
    {
      error = clib_error_return (0, "lb_rl: give 1..%u weights, one per server "
				    "index", LB_RL_MAX_SERVERS);
      goto done;
    }
  rv = lb_rl_vip_set_weights (&vip_pfx, ws, vec_len (ws), &verdict);
  if (rv == VNET_API_ERROR_INVALID_VALUE)
    error = clib_error_return (0, "lb_rl: weights rejected (verdict %d: 1 "
				  "non-finite, 2 negative, 3 all zero, 4 "
				  "weight for absent server, 5 bad count)",
			       verdict);
  else
    error = lb_rl_cli_error (rv, "lb_rl weights");
done:
  vec_free (ws);
  unformat_free (line_input);
  return error;
}

VLIB_CLI_COMMAND (lb_rl_weights_command, static) = {
  .path = "lb_rl weights",
  .short_help = "lb_rl weights <vip-prefix> <w0> [<w1> ...]",
  .function = lb_rl_weights_command_fn,
};

/* ---------------------------------------------------------------------- */
/* show lb_rl                                                              */
/* ---------------------------------------------------------------------- */

static void
lb_rl_show_conf (vlib_main_t *vm)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  vlib_cli_output (vm,
		   "conf policy %U timeout %.3fs step %.3fs fallback "
		   "%.3fs ip4-src %U ip6-src %U shm-dir %s",
		   format_lb_rl_policy, lbm->policy, lbm->flow_timeout_s,
		   lbm->step_s, lbm->fallback_s, format_ip4_address,
		   &lbm->ip4_src_address, format_ip6_address,
		   &lbm->ip6_src_address,
		   lbm->shm_dir && lbm->shm_dir[0] ? (char *) lbm->shm_dir :
						    "(off)");
}

static clib_error_t *
lb_rl_show_command_fn (vlib_main_t *vm, unformat_input_t *input,
		       vlib_cli_command_t *cmd)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  lb_rl_vip_t *vip;
  enum
  {
    SHOW_ALL,
    SHOW_VIPS,
    SHOW_STATS,
    SHOW_WEIGHTS,
    SHOW_FLOWS,
    SHOW_SHM
  } what = SHOW_ALL;
  int verbose = 0;

  while (unformat_check_input (input) != UNFORMAT_END_OF_INPUT)
    {
      if (unformat (input, "vips"))
	what = SHOW_VIPS;
      else if (unformat (input, "stats"))
	what = SHOW_STATS;
      else if (unformat (input, "weights"))
	what = SHOW_WEIGHTS;
      else if (unformat (input, "flows"))
	what = SHOW_FLOWS;
      else if (unformat (input, "shm"))
	what = SHOW_SHM;
      else if (unformat (input, "verbose"))
	verbose = 1;
      else
	return clib_error_return (0, "lb_rl: parse error: '%U'",
				  format_unformat_error, input);
    }

  if (what == SHOW_ALL)
    lb_rl_show_conf (vm);

  pool_foreach (vip, lbm->vips)
    {
      u32 i, t;
      switch (what)
	{
	case SHOW_ALL:
	case SHOW_VIPS:
	  vlib_cli_output (vm, "%U", format_lb_rl_vip, vip, verbose);
	  break;
	case SHOW_STATS:
	  {
	    lb_rl_counters_t c;
	    lb_rl_vip_counters (vip, &c);
	    vlib_cli_output (vm, "vip %u %U\n%U", (u32) (vip - lbm->vips),
			     format_fib_prefix, &vip->prefix,
			     format_lb_rl_counters, &c, 2);
	    for (i = 0; i < vec_len (vip->as_by_server); i++)
	      if (vip->as_by_server[i] != ~0)
		vlib_cli_output (vm, "  %U", format_lb_rl_as,
				 pool_elt_at_index (lbm->ass,
						    vip->as_by_server[i]),
				 1);
	    break;
	  }
	case SHOW_WEIGHTS:
	  vlib_cli_output (vm, "vip %u %U policy %U", (u32) (vip - lbm->vips),
			   format_fib_prefix, &vip->prefix,
			   format_lb_rl_policy,
			   lb_rl_get_config (vip->ctx_by_thread[0])->policy);
	  for (i = 0; i < vec_len (vip->as_by_server); i++)
	    if (vip->as_by_server[i] != ~0)
	      vlib_cli_output (vm, "  %U", format_lb_rl_as,
			       pool_elt_at_index (lbm->ass,
						  vip->as_by_server[i]),
			       0);
	  break;
	case SHOW_FLOWS:
	  vlib_cli_output (vm, "vip %u %U", (u32) (vip - lbm->vips),
			   format_fib_prefix, &vip->prefix);
	  vec_foreach_index (t, vip->ctx_by_thread)
	    {
	      lb_rl_counters_t c;
	      lb_rl_counters (vip->ctx_by_thread[t], &c);
	      vlib_cli_output (vm,
			       "  thread %u tracked-flows %u new-flows %llu "
			       "timeouts %llu untracked-full %llu "
			       "untracked-miss %llu",
			       t, c.tracked_flows, c.new_flows, c.timeouts,
			       c.untracked_full, c.untracked_miss);
	      if (verbose)
		for (i = 0; i < vec_len (vip->as_by_server); i++)
		  {
		    lb_rl_server_counters_t sc;
		    if (vip->as_by_server[i] == ~0 ||
			lb_rl_server_counters (vip->ctx_by_thread[t], i,
					       &sc) != LB_RL_OK)
		      continue;
		    vlib_cli_output (vm, "    server %u %U", i,
				     format_lb_rl_server_counters, &sc);
		  }
	    }
	  break;
	case SHOW_SHM:
	  {
	    lb_rl_shm_status_t st;
	    vlib_cli_output (vm, "vip %u %U shm %s", (u32) (vip - lbm->vips),
			     format_fib_prefix, &vip->prefix,
			     vip->shm ? (char *) vip->shm_path : "(off)");
	    if (vip->shm_last_error)
	      vlib_cli_output (vm, "  last-error %d (%s)",
			       vip->shm_last_error,
			       lb_rl_shm_strerror (vip->shm_last_error));
	    if (!vip->shm)
	      break;
	    lb_rl_shm_status (vip->shm, &st);
	    vlib_cli_output (vm,
			     "  frames-out %llu out-seq %llu in-seq-latest "
			     "%llu in-seq-applied %llu",
			     vip->shm_frames_out,
			     lb_rl_shm_header (vip->shm)->out_seq_latest,
			     lb_rl_shm_header (vip->shm)->in_seq_latest,
			     st.in_seq_applied);
	    vlib_cli_output (vm,
			     "  weights-accepted %llu weights-rejected %llu "
			     "last-verdict %d fallback-active %u "
			     "fallback-count %llu fallback-timeout %.3fs",
			     st.weights_accepted, st.weights_rejected,
			     st.last_verdict, st.fallback_active,
			     st.fallback_count, st.fallback_timeout_s);
	    break;
	  }
	}
    }
  return 0;
}

VLIB_CLI_COMMAND (lb_rl_show_command, static) = {
  .path = "show lb_rl",
  .short_help = "show lb_rl [vips|stats|weights|flows|shm] [verbose]",
  .function = lb_rl_show_command_fn,
};
