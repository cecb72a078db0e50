/*
 * host_ring.h — PACKET_MMAP rings on one interface.
 *
 * RX: TPACKET_V3 ring (blocks of variable-size frames; the kernel hands over a
 * whole block at once, so one poll() wakeup serves hundreds of frames) on a
 * socket bound to ETH_P_ALL of the interface (a tap: it runs before the tc and
 * netfilter ingress hooks, so the LB's own stack can drop VIP frames there), with
 * a classic BPF filter that lets only untagged IPv4 frames for the VIP into the
 * ring, and PACKET_IGNORE_OUTGOING (plus a check of sll_pkttype) so the LB never
 * sees its own output.
 * TX: a second socket (qdisc bypass). HOST_TX_RING: a TPACKET_V2 TX ring (fixed
 * 2 KiB frames) written in place, the whole batch goes with one sendto() (kick);
 * the kernel builds each skb with the frame's payload as page fragments of the
 * ring. HOST_TX_COPY: the same 2 KiB slots in ordinary memory, the batch goes
 * with sendmmsg() (one syscall per kick, up to 1024 frames per call), each frame
 * copied into a linear skb: on veth this saves the per-frame page allocation and
 * fragment copy the ring's skbs cost when they cross into another namespace.
 */
#ifndef HOST_RING_H
#define HOST_RING_H

#include <stddef.h>
#include <stdint.h>

typedef enum
{
  HOST_TX_COPY = 0, /* sendmmsg of ordinary buffers (default) */
  HOST_TX_RING = 1, /* PACKET_TX_RING (TPACKET_V2) + sendto kick */
} host_tx_mode_t;

/* RX ring kinds: HOST_RX_BLOCK = TPACKET_V3 (blocks of packets, handed over when full or
 * after 1 ms: fewer wake-ups, up to 1 ms of latency per packet at low rates);
 * HOST_RX_FRAME = TPACKET_V2 (each frame is handed over at once: a wake-up per burst,
 * tens of microseconds). Both are read as batches through the same iterator. */
typedef enum
{
  HOST_RX_BLOCK = 0,
  HOST_RX_FRAME = 1
} host_rx_mode_t;

typedef struct
{
  int rx_fd, tx_fd;
  host_tx_mode_t tx_mode;
  int ifindex;
  uint8_t mac[6];
  /* rx (TPACKET_V3) */
  uint8_t *rx_map;
  size_t rx_map_len;
  uint32_t rx_block_size, rx_block_nr, rx_block_cur;
  host_rx_mode_t rx_mode;
  uint32_t rx_frame_nr, rx_frame_cur, rx_batch_n; /* HOST_RX_FRAME: ring of rx_frame_nr frames */
  /* tx: the TPACKET_V2 ring (HOST_TX_RING) or the slot array (HOST_TX_COPY) */
  uint8_t *tx_map;
  void *tx_msgs; /* HOST_TX_COPY: struct mmsghdr[tx_frame_nr] + struct iovec[tx_frame_nr] */
  size_t tx_map_len;
  uint32_t tx_frame_size, tx_frame_nr, tx_cur, tx_data_off;
  uint32_t tx_pending;    /* frames queued since the last kick */
  uint64_t tx_errors;     /* sendto failures + frames the kernel marked wrong-format */
  uint64_t tx_ring_full;  /* frames dropped because the TX ring had no free slot */
  uint64_t tx_kicks;
  uint64_t rx_drops;      /* PACKET_STATISTICS tp_drops, accumulated */
  uint64_t rx_freeze;     /* PACKET_STATISTICS tp_freeze_q_cnt, accumulated */
} host_ring_t;

/* A packet in an rx block: data = frame from the Ethernet header. */
typedef struct
{
  const uint8_t *data;
  uint32_t len;     /* captured bytes (snaplen) */
  uint32_t wirelen; /* original length */
  uint8_t pkttype;  /* sll_pkttype: PACKET_HOST, PACKET_OUTGOING, ... */
} host_rx_pkt_t;

typedef struct
{
  uint8_t *block;
  uint32_t n, i;
  uint8_t *next;
  uint32_t first; /* HOST_RX_FRAME: ring index of the batch's first frame */
  const host_ring_t *ring;
} host_rx_iter_t;

/* Open both rings on ifname; vip_be (network order) is the BPF filter's
 * destination address (0 = accept all IPv4). err gets a message on failure. */
int host_ring_open (host_ring_t *r, const char *ifname, uint32_t vip_be, host_tx_mode_t tx_mode,
		    host_rx_mode_t rx_mode, char *err, size_t errlen);
void host_ring_close (host_ring_t *r);

/* The next block the kernel handed to user space (HOST_RX_FRAME: the run of ready frames at
 * the head, at most HOST_RX_BATCH), or 0 if none. */
int host_ring_rx_next_block (host_ring_t *r, host_rx_iter_t *it);
/* Next packet of the block; 0 at the end. */
int host_ring_rx_next_pkt (host_rx_iter_t *it, host_rx_pkt_t *pkt);
/* Give the current block back to the kernel and advance. */
void host_ring_rx_release (host_ring_t *r);

/* A free TX frame (room for host_ring_tx_max bytes), or NULL if the ring is
 * full even after a kick. Fill it, then host_ring_tx_commit. (HOST_TX_COPY:
 * a full slot array is sent first, so NULL never happens.) */
uint8_t *host_ring_tx_slot (host_ring_t *r);
uint32_t host_ring_tx_max (const host_ring_t *r);
void host_ring_tx_commit (host_ring_t *r, uint32_t len);
/* Send every committed frame (one sendto / sendmmsg); no-op if none pending. */
void host_ring_tx_kick (host_ring_t *r);

/* Fold the kernel's PACKET_STATISTICS (reset on read) into rx_drops/rx_freeze. */
void host_ring_update_stats (host_ring_t *r);

/* Interface helpers shared with host_arp. */
int host_if_info (const char *ifname, int *ifindex, uint8_t mac[6], uint32_t *ip4_be, char *err,
		  size_t errlen);

#endif /* HOST_RING_H */
