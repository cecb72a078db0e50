/* host_ring.c — PACKET_MMAP rx (TPACKET_V3 or V2) and tx (TPACKET_V2) rings, see host_ring.h. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "host_ring.h"

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif
#ifndef PACKET_QDISC_BYPASS
#define PACKET_QDISC_BYPASS 20
#endif

#define RX_BLOCK_SIZE (1u << 17) /* 128 KiB: ~900 minimum-size frames (~144 B each in V3) */
#define RX_BLOCK_NR 256          /* 32 MiB; blocks retire after 1 ms, so >= 256 ms of backlog */
#define RX_FRAME_SIZE 2048       /* nominal (V3 packs frames), must divide the block */
#define RX_FRAME_BATCH 256       /* HOST_RX_FRAME: frames handled per batch at most */
#define RX_BLOCK_TOV_MS 1        /* a partly filled block is handed over after 1 ms */
#define TX_FRAME_SIZE 2048
#define TX_FRAME_NR 4096
#define TX_MMSG_MAX 1024 /* UIO_MAXIOV: the kernel's cap of frames per sendmmsg */

int
host_if_info (const char *ifname, int *ifindex, uint8_t mac[6], uint32_t *ip4_be, char *err,
	      size_t errlen)
{
  struct ifreq ifr;
  int fd;

  if (strlen (ifname) >= IFNAMSIZ)
    {
      snprintf (err, errlen, "--interface %s: name too long", ifname);
      return -1;
    }
  *ifindex = (int) if_nametoindex (ifname);
  if (*ifindex == 0)
    {
      snprintf (err, errlen, "--interface %s: no such interface (%s)", ifname, strerror (errno));
      return -1;
    }
  fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    {
      snprintf (err, errlen, "socket: %s", strerror (errno));
      return -1;
    }
  memset (&ifr, 0, sizeof ifr);
  memcpy (ifr.ifr_name, ifname, strlen (ifname));
  if (ioctl (fd, SIOCGIFHWADDR, &ifr) < 0)
    {
      snprintf (err, errlen, "--interface %s: cannot read its MAC (%s)", ifname, strerror (errno));
      close (fd);
      return -1;
    }
  memcpy (mac, ifr.ifr_hwaddr.sa_data, 6);
  if (ip4_be)
    {
      *ip4_be = 0;
      memset (&ifr, 0, sizeof ifr);
      memcpy (ifr.ifr_name, ifname, strlen (ifname));
      ifr.ifr_addr.sa_family = AF_INET;
      if (ioctl (fd, SIOCGIFADDR, &ifr) == 0)
	{
	  struct sockaddr_in sin;
	  memcpy (&sin, &ifr.ifr_addr, sizeof sin);
	  *ip4_be = sin.sin_addr.s_addr;
	}
    }
  close (fd);
  return 0;
}

static int
fail (char *err, size_t errlen, const char *what)
{
  snprintf (err, errlen, "%s: %s", what, strerror (errno));
  return -1;
}

static int
attach_filter (int fd, uint32_t vip_be)
{
  /* The socket is bound to ETH_P_ALL (see host_ring_open), so the filter does
   * the protocol selection too:
   *   ld vlan_avail; jne #0, drop        (VLAN tag in skb metadata: not ours)
   *   ldh [12]; jne #0x800, drop         (untagged IPv4 only)
   *   ld [30]; jne #vip, drop            (destination = VIP; skipped if vip 0)
   *   ret #-1; drop: ret #0 */
  struct sock_filter code[] = {
    { BPF_LD | BPF_W | BPF_ABS, 0, 0, (uint32_t) (SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT) },
    { BPF_JMP | BPF_JEQ | BPF_K, 0, 5, 0 },
    { BPF_LD | BPF_H | BPF_ABS, 0, 0, 12 },
    { BPF_JMP | BPF_JEQ | BPF_K, 0, 3, 0x0800 },
    { BPF_LD | BPF_W | BPF_ABS, 0, 0, 30 },
    { BPF_JMP | BPF_JEQ | BPF_K, 0, 1, ntohl (vip_be) },
    { BPF_RET | BPF_K, 0, 0, 0xffffffffu },
    { BPF_RET | BPF_K, 0, 0, 0 },
  };
  struct sock_fprog prog = { sizeof code / sizeof code[0], code };
  if (!vip_be) /* any IPv4 destination: accept right after the ethertype test */
    code[4] = code[6];
  return setsockopt (fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog);
}

int
host_ring_open (host_ring_t *r, const char *ifname, uint32_t vip_be, host_tx_mode_t tx_mode,
		host_rx_mode_t rx_mode, char *err, size_t errlen)
{
  struct tpacket_req3 req3;
  struct tpacket_req req;
  struct sockaddr_ll sll;
  int v, one = 1;

  memset (r, 0, sizeof *r);
  r->rx_fd = r->tx_fd = -1;
  if (host_if_info (ifname, &r->ifindex, r->mac, NULL, err, errlen) < 0)
    return -1;

  /* ---- rx ----
   * Bound to ETH_P_ALL, not ETH_P_IP: ETH_P_ALL taps run in
   * __netif_receive_skb_core before the tc and netfilter (netdev) ingress
   * hooks, protocol handlers (ETH_P_IP sockets, ip_rcv) after them. So a
   * deployment can drop VIP frames at ingress (README: "The LB's own stack")
   * and its IP stack never sees them while this ring still does. Without such a
   * rule nothing changes: the filter admits only untagged IPv4 to the VIP.
   * The socket is created with protocol 0 (receives nothing) and the filter is
   * attached before bind, so no other frame is ever queued. */
  r->rx_fd = socket (AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (r->rx_fd < 0)
    return fail (err, errlen, "rx socket (AF_PACKET needs root/CAP_NET_RAW)");
  if (attach_filter (r->rx_fd, vip_be) < 0)
    return fail (err, errlen, "SO_ATTACH_FILTER");
  r->rx_mode = rx_mode;
  v = rx_mode == HOST_RX_FRAME ? TPACKET_V2 : TPACKET_V3;
  if (setsockopt (r->rx_fd, SOL_PACKET, PACKET_VERSION, &v, sizeof v) < 0)
    return fail (err, errlen, "PACKET_VERSION (rx)");
  /* kernels before 4.20 lack it: sll_pkttype is checked anyway */
  (void) setsockopt (r->rx_fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
  memset (&req3, 0, sizeof req3);
  req3.tp_block_size = RX_BLOCK_SIZE;
  req3.tp_block_nr = RX_BLOCK_NR;
  req3.tp_frame_size = RX_FRAME_SIZE;
  req3.tp_frame_nr = RX_BLOCK_SIZE / RX_FRAME_SIZE * RX_BLOCK_NR;
  req3.tp_retire_blk_tov = RX_BLOCK_TOV_MS;
  if (rx_mode == HOST_RX_FRAME)
    { /* same memory, fixed 2 KiB frames; tpacket_req is tpacket_req3's prefix */
      memset (&req, 0, sizeof req);
      req.tp_block_size = RX_BLOCK_SIZE;
      req.tp_block_nr = RX_BLOCK_NR;
      req.tp_frame_size = RX_FRAME_SIZE;
      req.tp_frame_nr = RX_BLOCK_SIZE / RX_FRAME_SIZE * RX_BLOCK_NR;
      r->rx_frame_nr = req.tp_frame_nr;
      if (setsockopt (r->rx_fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) < 0)
	return fail (err, errlen, "PACKET_RX_RING (V2)");
    }
  else if (setsockopt (r->rx_fd, SOL_PACKET, PACKET_RX_RING, &req3, sizeof req3) < 0)
    return fail (err, errlen, "PACKET_RX_RING");
  r->rx_block_size = RX_BLOCK_SIZE;
  r->rx_block_nr = RX_BLOCK_NR;
  r->rx_map_len = (size_t) RX_BLOCK_SIZE * RX_BLOCK_NR;
  r->rx_map = mmap (NULL, r->rx_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED,
		    r->rx_fd, 0);
  if (r->rx_map == MAP_FAILED)
    r->rx_map = mmap (NULL, r->rx_map_len, PROT_READ | PROT_WRITE, MAP_SHARED, r->rx_fd, 0);
  if (r->rx_map == MAP_FAILED)
    {
      r->rx_map = NULL;
      return fail (err, errlen, "mmap rx ring");
    }
  memset (&sll, 0, sizeof sll);
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons (ETH_P_ALL);
  sll.sll_ifindex = r->ifindex;
  if (bind (r->rx_fd, (struct sockaddr *) &sll, sizeof sll) < 0)
    return fail (err, errlen, "bind rx socket");

  /* ---- tx: protocol 0 = receives nothing ---- */
  r->tx_mode = tx_mode;
  r->tx_fd = socket (AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (r->tx_fd < 0)
    return fail (err, errlen, "tx socket");
  (void) setsockopt (r->tx_fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
  r->tx_frame_size = TX_FRAME_SIZE;
  r->tx_frame_nr = TX_FRAME_NR;
  /* the same slot layout in both modes (so the same largest frame) */
  r->tx_data_off = TPACKET2_HDRLEN - sizeof (struct sockaddr_ll);
  r->tx_map_len = (size_t) TX_FRAME_SIZE * TX_FRAME_NR;
  if (tx_mode == HOST_TX_COPY)
    {
      struct mmsghdr *m;
      struct iovec *iov;
      uint32_t i;
      r->tx_map = mmap (NULL, r->tx_map_len, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
      if (r->tx_map == MAP_FAILED)
	{
	  r->tx_map = NULL;
	  return fail (err, errlen, "tx slots");
	}
      r->tx_msgs = calloc (TX_FRAME_NR, sizeof (struct mmsghdr) + sizeof (struct iovec));
      if (!r->tx_msgs)
	return fail (err, errlen, "tx slots");
      m = r->tx_msgs;
      iov = (struct iovec *) (m + TX_FRAME_NR);
      for (i = 0; i < TX_FRAME_NR; i++)
	{
	  iov[i].iov_base = r->tx_map + (size_t) i * TX_FRAME_SIZE + r->tx_data_off;
	  m[i].msg_hdr.msg_iov = &iov[i];
	  m[i].msg_hdr.msg_iovlen = 1;
	}
    }
  else
    {
      v = TPACKET_V2;
      if (setsockopt (r->tx_fd, SOL_PACKET, PACKET_VERSION, &v, sizeof v) < 0)
	return fail (err, errlen, "PACKET_VERSION V2");
      memset (&req, 0, sizeof req);
      req.tp_block_size = TX_FRAME_SIZE * 64;
      req.tp_frame_size = TX_FRAME_SIZE;
      req.tp_frame_nr = TX_FRAME_NR;
      req.tp_block_nr = TX_FRAME_NR / 64;
      if (setsockopt (r->tx_fd, SOL_PACKET, PACKET_TX_RING, &req, sizeof req) < 0)
	return fail (err, errlen, "PACKET_TX_RING");
      r->tx_map = mmap (NULL, r->tx_map_len, PROT_READ | PROT_WRITE, MAP_SHARED, r->tx_fd, 0);
      if (r->tx_map == MAP_FAILED)
	{
	  r->tx_map = NULL;
	  return fail (err, errlen, "mmap tx ring");
	}
    }
  memset (&sll, 0, sizeof sll);
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = 0;
  sll.sll_ifindex = r->ifindex;
  if (bind (r->tx_fd, (struct sockaddr *) &sll, sizeof sll) < 0)
    return fail (err, errlen, "bind tx socket");
  return 0;
}

void
host_ring_close (host_ring_t *r)
{
  if (r->rx_map)
    munmap (r->rx_map, r->rx_map_len);
  if (r->tx_map)
    munmap (r->tx_map, r->tx_map_len);
  free (r->tx_msgs);
  r->tx_msgs = NULL;
  if (r->rx_fd >= 0)
    close (r->rx_fd);
  if (r->tx_fd >= 0)
    close (r->tx_fd);
  r->rx_map = r->tx_map = NULL;
  r->rx_fd = r->tx_fd = -1;
}

static struct tpacket2_hdr *
rx_frame (const host_ring_t *r, uint32_t i)
{
  return (struct tpacket2_hdr *) (r->rx_map + (size_t) (i % r->rx_frame_nr) * RX_FRAME_SIZE);
}

static int
rx_frame_ready (const host_ring_t *r, uint32_t i)
{
  return __atomic_load_n (&rx_frame (r, i)->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER;
}

int
host_ring_rx_next_block (host_ring_t *r, host_rx_iter_t *it)
{
  if (r->rx_mode == HOST_RX_FRAME)
    {
      uint32_t n = 0;
      while (n < RX_FRAME_BATCH && n < r->rx_frame_nr && rx_frame_ready (r, r->rx_frame_cur + n))
	n++;
      if (n == 0)
	return 0;
      r->rx_batch_n = n;
      it->ring = r;
      it->first = r->rx_frame_cur;
      it->n = n;
      it->i = 0;
      return 1;
    }
  struct tpacket_block_desc *bd =
    (struct tpacket_block_desc *) (r->rx_map + (size_t) r->rx_block_cur * r->rx_block_size);
  if (!(__atomic_load_n (&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
    return 0;
  it->ring = NULL;
  it->block = (uint8_t *) bd;
  it->n = bd->hdr.bh1.num_pkts;
  it->i = 0;
  it->next = (uint8_t *) bd + bd->hdr.bh1.offset_to_first_pkt;
  return 1;
}

int
host_ring_rx_next_pkt (host_rx_iter_t *it, host_rx_pkt_t *pkt)
{
  struct tpacket3_hdr *h;
  const struct sockaddr_ll *sll;
  if (it->i >= it->n)
    return 0;
  if (it->ring && it->ring->rx_mode == HOST_RX_FRAME)
    {
      struct tpacket2_hdr *h2 = rx_frame (it->ring, it->first + it->i);
      sll = (const struct sockaddr_ll *) ((uint8_t *) h2 + TPACKET_ALIGN (sizeof (struct tpacket2_hdr)));
      pkt->data = (uint8_t *) h2 + h2->tp_mac;
      pkt->len = h2->tp_snaplen;
      pkt->wirelen = h2->tp_len;
      pkt->pkttype = sll->sll_pkttype;
      it->i++;
      return 1;
    }
  h = (struct tpacket3_hdr *) it->next;
  sll = (const struct sockaddr_ll *) ((uint8_t *) h + TPACKET_ALIGN (sizeof (struct tpacket3_hdr)));
  pkt->data = (uint8_t *) h + h->tp_mac;
  pkt->len = h->tp_snaplen;
  pkt->wirelen = h->tp_len;
  pkt->pkttype = sll->sll_pkttype;
  it->next = (uint8_t *) h + h->tp_next_offset;
  it->i++;
  return 1;
}

void
host_ring_rx_release (host_ring_t *r)
{
  if (r->rx_mode == HOST_RX_FRAME)
    {
      for (uint32_t k = 0; k < r->rx_batch_n; k++)
	__atomic_store_n (&rx_frame (r, r->rx_frame_cur + k)->tp_status, TP_STATUS_KERNEL,
			  __ATOMIC_RELEASE);
      r->rx_frame_cur = (r->rx_frame_cur + r->rx_batch_n) % r->rx_frame_nr;
      r->rx_batch_n = 0;
      return;
    }
  struct tpacket_block_desc *bd =
    (struct tpacket_block_desc *) (r->rx_map + (size_t) r->rx_block_cur * r->rx_block_size);
  __atomic_store_n (&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
  r->rx_block_cur = (r->rx_block_cur + 1) % r->rx_block_nr;
}

uint32_t
host_ring_tx_max (const host_ring_t *r)
{
  return r->tx_frame_size - r->tx_data_off;
}

static inline struct tpacket2_hdr *
tx_hdr (host_ring_t *r, uint32_t i)
{
  return (struct tpacket2_hdr *) (r->tx_map + (size_t) i * r->tx_frame_size);
}

uint8_t *
host_ring_tx_slot (host_ring_t *r)
{
  struct tpacket2_hdr *h;
  uint32_t st;

  if (r->tx_mode == HOST_TX_COPY)
    {
      if (r->tx_pending == r->tx_frame_nr)
	host_ring_tx_kick (r);
      return r->tx_map + (size_t) r->tx_pending * r->tx_frame_size + r->tx_data_off;
    }
  h = tx_hdr (r, r->tx_cur);
  st = __atomic_load_n (&h->tp_status, __ATOMIC_ACQUIRE);

  if (st != TP_STATUS_AVAILABLE && st != TP_STATUS_WRONG_FORMAT)
    {
      /* ring full: push what is pending, then wait for the kernel to drain it
       * (a blocking sendto returns once the in-flight frames are done) */
      host_ring_tx_kick (r);
      st = __atomic_load_n (&h->tp_status, __ATOMIC_ACQUIRE);
      if (st != TP_STATUS_AVAILABLE && st != TP_STATUS_WRONG_FORMAT)
	{
	  (void) sendto (r->tx_fd, NULL, 0, 0, NULL, 0);
	  st = __atomic_load_n (&h->tp_status, __ATOMIC_ACQUIRE);
	}
    }
  if (st == TP_STATUS_WRONG_FORMAT)
    {
      r->tx_errors++;
      __atomic_store_n (&h->tp_status, TP_STATUS_AVAILABLE, __ATOMIC_RELEASE);
      st = TP_STATUS_AVAILABLE;
    }
  if (st != TP_STATUS_AVAILABLE)
    {
      r->tx_ring_full++;
      return NULL;
    }
  return (uint8_t *) h + r->tx_data_off;
}

void
host_ring_tx_commit (host_ring_t *r, uint32_t len)
{
  struct tpacket2_hdr *h;
  if (r->tx_mode == HOST_TX_COPY)
    {
      struct mmsghdr *m = r->tx_msgs;
      struct iovec *iov = (struct iovec *) (m + r->tx_frame_nr);
      iov[r->tx_pending].iov_len = len;
      r->tx_pending++;
      return;
    }
  h = tx_hdr (r, r->tx_cur);
  h->tp_len = len;
  __atomic_store_n (&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
  r->tx_cur = (r->tx_cur + 1) % r->tx_frame_nr;
  r->tx_pending++;
}

static void
tx_kick_copy (host_ring_t *r)
{
  struct mmsghdr *m = r->tx_msgs;
  uint32_t done = 0;
  while (done < r->tx_pending)
    {
      uint32_t n = r->tx_pending - done;
      int rv;
      if (n > TX_MMSG_MAX)
	n = TX_MMSG_MAX;
      rv = sendmmsg (r->tx_fd, m + done, n, MSG_DONTWAIT);
      if (rv < 0)
	{
	  if (errno == EINTR)
	    continue;
	  /* this frame failed (full device queue: ENOBUFS/EAGAIN, or a bad frame): count it
	   * and go on with the rest */
	  r->tx_errors++;
	  done++;
	  continue;
	}
      done += (uint32_t) rv;
    }
}

void
host_ring_tx_kick (host_ring_t *r)
{
  if (!r->tx_pending)
    return;
  r->tx_kicks++;
  if (r->tx_mode == HOST_TX_COPY)
    {
      tx_kick_copy (r);
      r->tx_pending = 0;
      return;
    }
  if (sendto (r->tx_fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 && errno != EAGAIN
      && errno != ENOBUFS)
    r->tx_errors++;
  r->tx_pending = 0;
}

void
host_ring_update_stats (host_ring_t *r)
{
  struct tpacket_stats_v3 st;
  socklen_t sl = sizeof st;
  memset (&st, 0, sizeof st);
  if (r->rx_fd >= 0 && getsockopt (r->rx_fd, SOL_PACKET, PACKET_STATISTICS, &st, &sl) == 0)
    {
      r->rx_drops += st.tp_drops;
      r->rx_freeze += st.tp_freeze_q_cnt;
    }
}
