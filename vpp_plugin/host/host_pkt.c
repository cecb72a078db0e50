/* host_pkt.c — defensive Ethernet/IPv4/TCP/UDP parser (see host_pkt.h). */
#include <string.h>

#include "host_pkt.h"

#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17

static inline uint16_t
rd16 (const uint8_t *p)
{
  return (uint16_t) ((p[0] << 8) | p[1]);
}

void
host_pkt_v4mapped (uint8_t dst[16], const uint8_t ip[4])
{
  memset (dst, 0, 10);
  dst[10] = 0xff;
  dst[11] = 0xff;
  memcpy (dst + 12, ip, 4);
}

int
host_pkt_classify (const uint8_t *frame, uint32_t len, const host_vip_t *vip, host_pkt_t *out)
{
  const uint8_t *ip, *l4;
  uint32_t avail, ihl, tot, l4len;
  uint16_t frag;
  uint8_t proto;
  int is_frag;

  if (!frame || len < HOST_ETH_HLEN + 20)
    return HOST_PKT_OTHER;
  if (rd16 (frame + 12) != HOST_ETHERTYPE_IPV4)
    return HOST_PKT_OTHER;
  ip = frame + HOST_ETH_HLEN;
  avail = len - HOST_ETH_HLEN;
  /* destination address first: frames for other hosts are not ours to judge */
  if (memcmp (ip + 16, &vip->vip, 4) != 0)
    return HOST_PKT_OTHER;
  if ((ip[0] >> 4) != 4)
    return HOST_PKT_MALFORMED;
  ihl = (uint32_t) (ip[0] & 0x0f) * 4;
  if (ihl < 20 || ihl > avail)
    return HOST_PKT_MALFORMED;
  tot = rd16 (ip + 2);
  /* total length covers the header and fits in what was captured (the
   * rest of the frame may be Ethernet padding) */
  if (tot < ihl || tot > avail)
    return HOST_PKT_MALFORMED;
  proto = ip[9];
  frag = rd16 (ip + 6);
  is_frag = (frag & 0x2000) || (frag & 0x1fff);
  l4 = ip + ihl;
  l4len = tot - ihl;

  if (vip->has_port && proto != IPPROTO_TCP_ && proto != IPPROTO_UDP_)
    return HOST_PKT_OTHER;

  memset (&out->key, 0, sizeof out->key);
  host_pkt_v4mapped (out->key.src, ip + 12);
  host_pkt_v4mapped (out->key.dst, ip + 16);
  out->key.proto = proto;
  out->ip_len = tot;
  out->tcp_flags = 0;
  out->fragment = (uint8_t) is_frag;
  if (is_frag)
    return HOST_PKT_VIP; /* 3-tuple key, see host_pkt.h */

  if (proto == IPPROTO_TCP_)
    {
      uint32_t doff;
      if (l4len < 20)
	return HOST_PKT_MALFORMED;
      doff = (uint32_t) (l4[12] >> 4) * 4;
      if (doff < 20 || doff > l4len)
	return HOST_PKT_MALFORMED;
      out->key.src_port = rd16 (l4);
      out->key.dst_port = rd16 (l4 + 2);
      out->tcp_flags = l4[13];
    }
  else if (proto == IPPROTO_UDP_)
    {
      uint32_t ulen;
      if (l4len < 8)
	return HOST_PKT_MALFORMED;
      ulen = rd16 (l4 + 4);
      if (ulen < 8 || ulen > l4len)
	return HOST_PKT_MALFORMED;
      out->key.src_port = rd16 (l4);
      out->key.dst_port = rd16 (l4 + 2);
    }
  if (vip->has_port && out->key.dst_port != vip->port)
    return HOST_PKT_OTHER;
  return HOST_PKT_VIP;
}
