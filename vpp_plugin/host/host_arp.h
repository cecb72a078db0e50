/*
 * host_arp.h — resolve servers' MAC addresses with ARP on the LB interface
 * (at start only; the data plane does not follow later ARP changes).
 */
#ifndef HOST_ARP_H
#define HOST_ARP_H

#include <stddef.h>
#include <stdint.h>

/* Resolve every ips[i] with need[i] != 0 (network order) into macs[i]: ARP
 * requests are broadcast on ifname (sender = the interface's MAC and IPv4
 * address, 0.0.0.0 if it has none) and repeated every retry_ms until all
 * answered or timeout_ms passed. Returns 0 if all resolved; otherwise -1 and
 * err names the first address that did not answer (or the socket error). */
int host_arp_resolve (const char *ifname, const uint32_t *ips, uint8_t (*macs)[6],
		      const uint8_t *need, uint32_t n, int timeout_ms, int retry_ms, char *err,
		      size_t errlen);

/* Build an ARP request frame (42 bytes) into buf; returns its length. */
uint32_t host_arp_request (uint8_t *buf, const uint8_t src_mac[6], uint32_t src_ip_be,
			   uint32_t target_ip_be);
/* If frame is an ARP reply from ip_be, copy its sender MAC into mac and return 1. */
int host_arp_parse_reply (const uint8_t *frame, uint32_t len, uint32_t ip_be, uint8_t mac[6]);

#endif /* HOST_ARP_H */
