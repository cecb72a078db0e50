/*
 * host_pkt.h — parse one received Ethernet frame into the core's flow key.
 *
 * The bytes come from the wire: every read is bounds-checked against the
 * captured length; nothing is assumed about alignment (fields are read byte
 * by byte). Only untagged Ethernet II + IPv4 is classified as a VIP frame;
 * everything else (ARP, IPv6, VLAN-tagged, other destinations) is HOST_PKT_OTHER
 * and is left to the kernel.
 *
 * Fragments: a fragmented IPv4 datagram (MF set or offset != 0) carries the
 * ports only in its first fragment, so every fragment of a VIP datagram
 * (first or not) is keyed WITHOUT ports (src, dst, proto; ports 0; TCP flags
 * 0): all fragments of one datagram reach the same server (Maglev does the
 * same 3-tuple fallback). With a VIP port configured, a fragment matches on
 * destination address and protocol (TCP/UDP) only: the port of a non-first
 * fragment cannot be checked.
 */
#ifndef HOST_PKT_H
#define HOST_PKT_H

#include <stdint.h>

#include "lb_rl_core.h"

#define HOST_ETH_HLEN 14
#define HOST_ETHERTYPE_IPV4 0x0800
#define HOST_ETHERTYPE_ARP 0x0806

/* Classification results. */
#define HOST_PKT_OTHER 0     /* not for the VIP: left to the kernel */
#define HOST_PKT_VIP 1       /* IPv4 to the VIP (and port): key filled */
#define HOST_PKT_MALFORMED 2 /* IPv4 to the VIP but its headers are inconsistent/truncated */

typedef struct
{
  uint32_t vip;      /* network byte order */
  uint16_t port;     /* host order; meaningful if has_port */
  uint8_t has_port;  /* 1: also match TCP/UDP destination port */
  uint8_t pad;
} host_vip_t;

typedef struct
{
  lb_rl_5tuple_t key;  /* v4-mapped addresses, ports host order */
  uint32_t ip_len;     /* IPv4 total length */
  uint8_t tcp_flags;   /* 0 unless an unfragmented TCP segment */
  uint8_t fragment;    /* 1 if part of a fragmented datagram (keyed without ports) */
} host_pkt_t;

/* Classify frame[0..len) against vip; on HOST_PKT_VIP fills *out. */
int host_pkt_classify (const uint8_t *frame, uint32_t len, const host_vip_t *vip, host_pkt_t *out);

/* Fill a v4-mapped address (::ffff:a.b.c.d) from 4 network-order bytes. */
void host_pkt_v4mapped (uint8_t dst[16], const uint8_t ip[4]);

#endif /* HOST_PKT_H */
