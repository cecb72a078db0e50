/*
 * fuzz_host_pkt.c — libFuzzer harness for the frame parser (host_pkt.c).
 *
 * Input: byte 0 selects the VIP mode (bit 0: --vip-port 80 set); the rest is
 * one Ethernet frame. The harness writes the frame into an exactly sized heap
 * buffer (ASan catches any read past it) and checks properties:
 *   - the result is one of OTHER / VIP / MALFORMED;
 *   - on VIP: the destination address is the VIP, the key is v4-mapped, ip_len
 *     fits in the frame, ports are 0 and flags 0 for fragments, a set VIP port
 *     matches unless the frame is a fragment.
 *
 *   cmake -S vpp_plugin/host -B build/host-fuzz -DCMAKE_C_COMPILER=clang -DLB_RL_HOST_FUZZ=ON
 *   cmake --build build/host-fuzz --target fuzz_host_pkt && build/host-fuzz/fuzz_host_pkt -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host_pkt.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const uint8_t vip_bytes[4] = { 198, 19, 200, 1 };
  static const uint8_t mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
  host_vip_t vip;
  host_pkt_t p;
  uint8_t *frame;
  uint32_t len;
  int r;

  if (size < 1 || size > 65536)
    return 0;
  memset (&vip, 0, sizeof vip);
  memcpy (&vip.vip, vip_bytes, 4);
  vip.has_port = data[0] & 1;
  vip.port = 80;
  len = (uint32_t) (size - 1);
  frame = malloc (len ? len : 1);
  if (!frame)
    return 0;
  memcpy (frame, data + 1, len);
  memset (&p, 0xa5, sizeof p);
  r = host_pkt_classify (frame, len, &vip, &p);
  if (r != HOST_PKT_OTHER && r != HOST_PKT_VIP && r != HOST_PKT_MALFORMED)
    abort ();
  if (r == HOST_PKT_VIP)
    {
      if (len < HOST_ETH_HLEN + 20 || memcmp (frame + HOST_ETH_HLEN + 16, vip_bytes, 4))
	abort ();
      if (memcmp (p.key.dst, mapped_prefix, 12) || memcmp (p.key.dst + 12, vip_bytes, 4)
	  || memcmp (p.key.src, mapped_prefix, 12))
	abort ();
      if (p.ip_len < 20 || p.ip_len > len - HOST_ETH_HLEN)
	abort ();
      if (p.fragment && (p.key.src_port || p.key.dst_port || p.tcp_flags))
	abort ();
      if (vip.has_port && !p.fragment && p.key.dst_port != 80)
	abort ();
      if (p.key.proto != frame[HOST_ETH_HLEN + 9])
	abort ();
    }
  free (frame);
  return 0;
}
