/*
 * node.c - the lb_rl graph nodes: lb_rl4 (IPv4 VIPs) and lb_rl6 (IPv6 VIPs).
 *
 * A VIP's FIB entry points at an lb_rl DPO whose index is the VIP index, so
 * ip4-lookup / ip6-lookup hand us only VIP traffic with
 * vnet_buffer(b)->ip.adj_index[VLIB_TX] = VIP index. A frame goes through
 * three passes: parse every packet into the core's 5-tuple key; hand each
 * run of packets of one VIP to the core of *this thread* in one batch call
 * (it hashes and prefetches flow-table buckets several packets ahead, so the
 * table's cache misses overlap instead of stalling one by one); push the GRE
 * encapsulation toward each chosen server and send the packet to
 * ip4/ip6-lookup of FIB table 0 (the outer destination is the server).
 */
#include <vlib/vlib.h>
#include <vnet/vnet.h>
#include <vnet/ip/ip4_packet.h>
#include <vnet/ip/ip6_packet.h>
#include <vnet/tcp/tcp_packet.h>
#include <vnet/udp/udp_packet.h>
#include <vnet/gre/packet.h>

#include "lb_rl.h"

/** Outer TTL / hop limit of the GRE packet. */
#define LB_RL_OUTER_TTL 64

typedef struct
{
  u32 vip_index;
  i32 server_index; /**< < 0: no server (dropped) */
  u32 next_index;
  u16 src_port;
  u16 dst_port;
  u8 tcp_flags;
  u8 proto;
} lb_rl_trace_t;

#ifndef CLIB_MARCH_VARIANT
static vlib_error_desc_t lb_rl_error_counters[] = {
#define _(sym, n, str, sev)                                                   \
  { .name = #n, .desc = str, .severity = VL_COUNTER_SEVERITY_##sev },
  foreach_lb_rl_error
#undef _
};

u8 *
format_lb_rl_trace (u8 *s, va_list *args)
{
  CLIB_UNUSED (vlib_main_t * vm) = va_arg (*args, vlib_main_t *);
  CLIB_UNUSED (vlib_node_t * node) = va_arg (*args, vlib_node_t *);
  lb_rl_trace_t *t = va_arg (*args, lb_rl_trace_t *);

  s = format (s, "lb_rl: vip %u proto %u ports %u->%u tcp-flags 0x%02x ",
	      t->vip_index, t->proto, t->src_port, t->dst_port, t->tcp_flags);
  if (t->server_index < 0)
    s = format (s, "no server (drop)");
  else
    s = format (s, "server %d next %u", t->server_index, t->next_index);
  return s;
}
#else
u8 *format_lb_rl_trace (u8 *s, va_list *args);
#endif /* CLIB_MARCH_VARIANT */

/** Fill the core's key from an IPv4 header: addresses v4-mapped
 *  (::ffff:a.b.c.d), ports in host order, 0 when absent. */
static_always_inline void
lb_rl_key_ip4 (ip4_header_t *ip, lb_rl_5tuple_t *key, u8 *tcp_flags,
	       u32 *len, u32 *err)
{
  clib_memset_u8 (key, 0, sizeof (*key));
  key->src[10] = key->src[11] = 0xff;
  key->dst[10] = key->dst[11] = 0xff;
  clib_memcpy_fast (key->src + 12, &ip->src_address, 4);
  clib_memcpy_fast (key->dst + 12, &ip->dst_address, 4);
  key->proto = ip->protocol;
  *len = clib_net_to_host_u16 (ip->length);
  *tcp_flags = 0;
  *err = LB_RL_ERROR_FORWARDED;

  if (PREDICT_FALSE (ip4_is_fragment (ip)))
    {
      *err = LB_RL_ERROR_FRAGMENT;
      return;
    }
  if (PREDICT_TRUE (ip->protocol == IP_PROTOCOL_TCP))
    {
      tcp_header_t *tcp = ip4_next_header (ip);
      key->src_port = clib_net_to_host_u16 (tcp->src_port);
      key->dst_port = clib_net_to_host_u16 (tcp->dst_port);
      *tcp_flags = tcp->flags;
    }
  else if (ip->protocol == IP_PROTOCOL_UDP)
    {
      udp_header_t *udp = ip4_next_header (ip);
      key->src_port = clib_net_to_host_u16 (udp->src_port);
      key->dst_port = clib_net_to_host_u16 (udp->dst_port);
    }
  else
    *err = LB_RL_ERROR_NOT_TCP_UDP;
}

/** As lb_rl_key_ip4 for IPv6; extension headers are not walked (such
 *  packets are hashed on addresses only). */
static_always_inline void
lb_rl_key_ip6 (ip6_header_t *ip, lb_rl_5tuple_t *key, u8 *tcp_flags,
	       u32 *len, u32 *err)
{
  clib_memset_u8 (key, 0, sizeof (*key));
  clib_memcpy_fast (key->src, &ip->src_address, 16);
  clib_memcpy_fast (key->dst, &ip->dst_address, 16);
  key->proto = ip->protocol;
  *len = clib_net_to_host_u16 (ip->payload_length) + sizeof (ip6_header_t);
  *tcp_flags = 0;
  *err = LB_RL_ERROR_FORWARDED;

  if (PREDICT_TRUE (ip->protocol == IP_PROTOCOL_TCP))
    {
      tcp_header_t *tcp = ip6_next_header (ip);
      key->src_port = clib_net_to_host_u16 (tcp->src_port);
      key->dst_port = clib_net_to_host_u16 (tcp->dst_port);
      *tcp_flags = tcp->flags;
    }
  else if (ip->protocol == IP_PROTOCOL_UDP)
    {
      udp_header_t *udp = ip6_next_header (ip);
      key->src_port = clib_net_to_host_u16 (udp->src_port);
      key->dst_port = clib_net_to_host_u16 (udp->dst_port);
    }
  else
    *err = LB_RL_ERROR_NOT_TCP_UDP;
}

/** Push outer IP + GRE toward the server; returns the next index. */
static_always_inline u32
lb_rl_encap (lb_rl_main_t *lbm, vlib_buffer_t *b, const lb_rl_vip_t *vip,
	     const lb_rl_as_t *as, u32 inner_len, int inner_is_ip6)
{
  gre_header_t *gre;
  u16 gre_proto = inner_is_ip6 ? 0x86DD : 0x0800;

  if (vip->encap == LB_RL_ENCAP_GRE4)
    {
      ip4_header_t *o;
      vlib_buffer_advance (b, -(word) (sizeof (*o) + sizeof (*gre)));
      o = vlib_buffer_get_current (b);
      gre = (gre_header_t *) (o + 1);
      o->ip_version_and_header_length = 0x45;
      o->tos = 0;
      o->length =
	clib_host_to_net_u16 (inner_len + sizeof (*o) + sizeof (*gre));
      o->fragment_id = 0;
      o->flags_and_fragment_offset = 0;
      o->ttl = LB_RL_OUTER_TTL;
      o->protocol = IP_PROTOCOL_GRE;
      o->src_address = lbm->ip4_src_address;
      o->dst_address = as->address.ip4;
      o->checksum = ip4_header_checksum (o);
      gre->flags_and_version = 0;
      gre->protocol = clib_host_to_net_u16 (gre_proto);
      vnet_buffer (b)->sw_if_index[VLIB_TX] = 0; /* FIB table 0 */
      return LB_RL_NEXT_IP4_LOOKUP;
    }
  else
    {
      ip6_header_t *o;
      vlib_buffer_advance (b, -(word) (sizeof (*o) + sizeof (*gre)));
      o = vlib_buffer_get_current (b);
      gre = (gre_header_t *) (o + 1);
      o->ip_version_traffic_class_and_flow_label =
	clib_host_to_net_u32 (0x6 << 28);
      o->payload_length = clib_host_to_net_u16 (inner_len + sizeof (*gre));
      o->protocol = IP_PROTOCOL_GRE;
      o->hop_limit = LB_RL_OUTER_TTL;
      o->src_address = lbm->ip6_src_address;
      o->dst_address = as->address.ip6;
      gre->flags_and_version = 0;
      gre->protocol = clib_host_to_net_u16 (gre_proto);
      vnet_buffer (b)->sw_if_index[VLIB_TX] = 0; /* FIB table 0 */
      return LB_RL_NEXT_IP6_LOOKUP;
    }
}

/** How many packets ahead the key-extraction pass prefetches headers. */
#define LB_RL_PREFETCH_AHEAD 4

static_always_inline uword
lb_rl_node_inline (vlib_main_t *vm, vlib_node_runtime_t *node,
		   vlib_frame_t *frame, int is_ip6)
{
  lb_rl_main_t *lbm = &lb_rl_main;
  u32 n_pkts = frame->n_vectors, i, run;
  u32 *from = vlib_frame_vector_args (frame);
  vlib_buffer_t *bufs[VLIB_FRAME_SIZE];
  u16 nexts[VLIB_FRAME_SIZE];
  /* Per-packet inputs and outputs of the core's batch call. */
  lb_rl_5tuple_t keys[VLIB_FRAME_SIZE];
  f64 nows[VLIB_FRAME_SIZE];
  u32 lens[VLIB_FRAME_SIZE], vip_of[VLIB_FRAME_SIZE];
  i32 servers[VLIB_FRAME_SIZE];
  u8 flags[VLIB_FRAME_SIZE];
  u32 thread_index = vm->thread_index;
  f64 now = vlib_time_now (vm);
  u32 n_fwd = 0, n_no_server = 0, n_not_tcp_udp = 0, n_frag = 0,
      n_no_vip = 0;

  vlib_get_buffers (vm, from, bufs, n_pkts);

  /* Pass 1: parse every packet into the core's key (headers prefetched
   * ahead so their cache misses overlap). */
  for (i = 0; i < n_pkts; i++)
    {
      u32 err;
      if (i + LB_RL_PREFETCH_AHEAD < n_pkts)
	{
	  vlib_buffer_t *pb = bufs[i + LB_RL_PREFETCH_AHEAD];
	  vlib_prefetch_buffer_header (pb, STORE);
	  clib_prefetch_load (pb->data + pb->current_data);
	}
      nows[i] = now;
      vip_of[i] = vnet_buffer (bufs[i])->ip.adj_index[VLIB_TX];
      if (PREDICT_FALSE (pool_is_free_index (lbm->vips, vip_of[i])))
	{
	  vip_of[i] = ~0;
	  clib_memset_u8 (&keys[i], 0, sizeof (keys[i]));
	  flags[i] = 0;
	  continue;
	}
      if (is_ip6)
	lb_rl_key_ip6 (vlib_buffer_get_current (bufs[i]), &keys[i], &flags[i],
		       &lens[i], &err);
      else
	lb_rl_key_ip4 (vlib_buffer_get_current (bufs[i]), &keys[i], &flags[i],
		       &lens[i], &err);
      n_not_tcp_udp += (err == LB_RL_ERROR_NOT_TCP_UDP);
      n_frag += (err == LB_RL_ERROR_FRAGMENT);
    }

  /* Pass 2: each run of packets of one VIP through the core's batch path,
   * which hashes and prefetches flow-table buckets ahead of the lookups. */
  for (i = 0; i < n_pkts; i += run)
    {
      u32 v = vip_of[i];
      for (run = 1; i + run < n_pkts && vip_of[i + run] == v; run++)
	;
      if (PREDICT_FALSE (v == ~0))
	{
	  u32 j;
	  for (j = i; j < i + run; j++)
	    servers[j] = -1;
	  continue;
	}
      lb_rl_process_batch (
	pool_elt_at_index (lbm->vips, v)->ctx_by_thread[thread_index], run,
	nows + i, keys + i, flags + i, lens + i, 0, servers + i);
    }

  /* Pass 3: encapsulate toward the chosen server, or drop. */
  for (i = 0; i < n_pkts; i++)
    {
      vlib_buffer_t *b = bufs[i];
      i32 server = servers[i];
      if (PREDICT_FALSE (vip_of[i] == ~0))
	{
	  n_no_vip++;
	  nexts[i] = LB_RL_NEXT_DROP;
	  b->error = node->errors[LB_RL_ERROR_NO_VIP];
	}
      else
	{
	  lb_rl_vip_t *vip = pool_elt_at_index (lbm->vips, vip_of[i]);
	  if (PREDICT_FALSE (server < 0 || server >= vec_len (vip->as_by_server) ||
			     vip->as_by_server[server] == ~0))
	    {
	      n_no_server++;
	      server = servers[i] = -1;
	      nexts[i] = LB_RL_NEXT_DROP;
	      b->error = node->errors[LB_RL_ERROR_NO_SERVER];
	    }
	  else
	    {
	      lb_rl_as_t *as =
		pool_elt_at_index (lbm->ass, vip->as_by_server[server]);
	      nexts[i] = lb_rl_encap (lbm, b, vip, as, lens[i], is_ip6);
	      n_fwd++;
	    }
	}
      if (PREDICT_FALSE (b->flags & VLIB_BUFFER_IS_TRACED))
	{
	  lb_rl_trace_t *t = vlib_add_trace (vm, node, b, sizeof (*t));
	  t->vip_index = vip_of[i];
	  t->server_index = server;
	  t->next_index = nexts[i];
	  t->src_port = keys[i].src_port;
	  t->dst_port = keys[i].dst_port;
	  t->tcp_flags = flags[i];
	  t->proto = keys[i].proto;
	}
    }

  vlib_buffer_enqueue_to_next (vm, node, from, nexts, n_pkts);

  vlib_node_increment_counter (vm, node->node_index, LB_RL_ERROR_FORWARDED,
			       n_fwd);
  if (n_no_server)
    vlib_node_increment_counter (vm, node->node_index,
				 LB_RL_ERROR_NO_SERVER, n_no_server);
  if (n_not_tcp_udp)
    vlib_node_increment_counter (vm, node->node_index,
				 LB_RL_ERROR_NOT_TCP_UDP, n_not_tcp_udp);
  if (n_frag)
    vlib_node_increment_counter (vm, node->node_index, LB_RL_ERROR_FRAGMENT,
				 n_frag);
  if (n_no_vip)
    vlib_node_increment_counter (vm, node->node_index, LB_RL_ERROR_NO_VIP,
				 n_no_vip);
  return n_pkts;
}

VLIB_NODE_FN (lb_rl4_node)
(vlib_main_t *vm, vlib_node_runtime_t *node, vlib_frame_t *frame)
{
  return lb_rl_node_inline (vm, node, frame, 0 /* is_ip6 */);
}

VLIB_NODE_FN (lb_rl6_node)
(vlib_main_t *vm, vlib_node_runtime_t *node, vlib_frame_t *frame)
{
  return lb_rl_node_inline (vm, node, frame, 1 /* is_ip6 */);
}

#ifndef CLIB_MARCH_VARIANT
VLIB_REGISTER_NODE (lb_rl4_node) = {
  .name = "lb_rl4",
  .vector_size = sizeof (u32),
  .format_trace = format_lb_rl_trace,
  .type = VLIB_NODE_TYPE_INTERNAL,
  .n_errors = LB_RL_N_ERROR,
  .error_counters = lb_rl_error_counters,
  .n_next_nodes = LB_RL_N_NEXT,
  .next_nodes = {
    [LB_RL_NEXT_DROP] = "error-drop",
    [LB_RL_NEXT_IP4_LOOKUP] = "ip4-lookup",
    [LB_RL_NEXT_IP6_LOOKUP] = "ip6-lookup",
  },
};

VLIB_REGISTER_NODE (lb_rl6_node) = {
  .name = "lb_rl6",
  .vector_size = sizeof (u32),
  .format_trace = format_lb_rl_trace,
  .type = VLIB_NODE_TYPE_INTERNAL,
  .n_errors = LB_RL_N_ERROR,
  .error_counters = lb_rl_error_counters,
  .n_next_nodes = LB_RL_N_NEXT,
  .next_nodes = {
    [LB_RL_NEXT_DROP] = "error-drop",
    [LB_RL_NEXT_IP4_LOOKUP] = "ip4-lookup",
    [LB_RL_NEXT_IP6_LOOKUP] = "ip6-lookup",
  },
};
#endif /* CLIB_MARCH_VARIANT */
