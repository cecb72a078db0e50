/* host_arp.c — ARP resolution of the servers at start, see host_arp.h. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "host_arp.h"
#include "lb_rl_core.h" /* LB_RL_MAX_SERVERS */
#include "host_ring.h"

uint32_t
host_arp_request (uint8_t *b, const uint8_t src_mac[6], uint32_t src_ip_be, uint32_t target_ip_be)
{
  memset (b, 0xff, 6);
  memcpy (b + 6, src_mac, 6);
  b[12] = 0x08;
  b[13] = 0x06;
  b[14] = 0;
  b[15] = 1; /* htype Ethernet */
  b[16] = 0x08;
  b[17] = 0; /* ptype IPv4 */
  b[18] = 6;
  b[19] = 4;
  b[20] = 0;
  b[21] = 1; /* request */
  memcpy (b + 22, src_mac, 6);
  memcpy (b + 28, &src_ip_be, 4);
  memset (b + 32, 0, 6);
  memcpy (b + 38, &target_ip_be, 4);
  return 42;
}

int
host_arp_parse_reply (const uint8_t *f, uint32_t len, uint32_t ip_be, uint8_t mac[6])
{
  static const uint8_t hdr[8] = { 0, 1, 8, 0, 6, 4, 0, 2 };
  if (len < 42 || f[12] != 0x08 || f[13] != 0x06)
    return 0;
  if (memcmp (f + 14, hdr, 8) != 0)
    return 0;
  if (memcmp (f + 28, &ip_be, 4) != 0)
    return 0;
  memcpy (mac, f + 22, 6);
  return 1;
}

static double
mono_ms (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

int
host_arp_resolve (const char *ifname, const uint32_t *ips, uint8_t (*macs)[6],
		  const uint8_t *need, uint32_t n, int timeout_ms, int retry_ms, char *err,
		  size_t errlen)
{
  uint8_t my_mac[6], buf[1600], done[LB_RL_MAX_SERVERS];
  uint32_t my_ip = 0, i, left = 0;
  struct sockaddr_ll sll;
  double t0, next_send;
  int ifindex, fd;

  if (n > LB_RL_MAX_SERVERS)
    {
      snprintf (err, errlen, "too many servers to resolve");
      return -1;
    }
  if (host_if_info (ifname, &ifindex, my_mac, &my_ip, err, errlen) < 0)
    return -1;
  for (i = 0; i < n; i++)
    {
      done[i] = !need[i];
      left += need[i] != 0;
    }
  if (!left)
    return 0;
  fd = socket (AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons (ETH_P_ARP));
  if (fd < 0)
    {
      snprintf (err, errlen, "ARP socket: %s", strerror (errno));
      return -1;
    }
  memset (&sll, 0, sizeof sll);
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons (ETH_P_ARP);
  sll.sll_ifindex = ifindex;
  if (bind (fd, (struct sockaddr *) &sll, sizeof sll) < 0)
    {
      snprintf (err, errlen, "ARP bind on %s: %s", ifname, strerror (errno));
      close (fd);
      return -1;
    }
  t0 = mono_ms ();
  next_send = t0;
  while (left)
    {
      double now = mono_ms (), wait;
      struct pollfd pfd = { fd, POLLIN, 0 };
      if (now - t0 >= timeout_ms)
	break;
      if (now >= next_send)
	{
	  for (i = 0; i < n; i++)
	    if (!done[i])
	      {
		uint32_t l = host_arp_request (buf, my_mac, my_ip, ips[i]);
		(void) send (fd, buf, l, 0);
	      }
	  next_send = now + retry_ms;
	}
      wait = next_send - now;
      if (wait > t0 + timeout_ms - now)
	wait = t0 + timeout_ms - now;
      if (poll (&pfd, 1, (int) wait + 1) <= 0)
	continue;
      for (;;)
	{
	  ssize_t r = recv (fd, buf, sizeof buf, MSG_DONTWAIT);
	  if (r <= 0)
	    break;
	  for (i = 0; i < n; i++)
	    if (!done[i] && host_arp_parse_reply (buf, (uint32_t) r, ips[i], macs[i]))
	      {
		done[i] = 1;
		left--;
	      }
	}
    }
  close (fd);
  for (i = 0; i < n; i++)
    if (!done[i])
      {
	char a[INET_ADDRSTRLEN];
	inet_ntop (AF_INET, &ips[i], a, sizeof a);
	snprintf (err, errlen, "--server %s: no ARP reply on %s within %d ms", a, ifname,
		  timeout_ms);
	return -1;
      }
  return 0;
}
