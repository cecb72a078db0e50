/*
 * gen_program.h — mlb_gen's traffic program: the text form of
 * hil/traffic/program.py (Program.to_text), its parser, the packet builder and
 * the scheduler that merges the streams by due time. No sockets here: the send
 * loop and the pcap writer in mlb_gen.c both take packets from gen_sched_take and
 * build them with gen_build, so a pcap shows exactly what would be sent.
 *
 * Packet n of a stream (as hil.traffic.program.packet_at): the template, every var
 * written big-endian at its offset with value
 *   min + ((init - min) + n * step) mod (max - min + 1),
 * then the IPv4 header checksum at fixip's L3 and the TCP/UDP checksum (pseudo
 * header, segment length from the IPv4 total length) at fixl4 (UDP: 0 -> 0xffff).
 * Due time of packet n, ns after the start of the run:
 *   start_ns + floor(n * 1e9 / (rate_pps * mult))   (start_ns = round(start_s * 1e9)),
 * so two streams whose exact due times coincide get equal due times; ties go to the
 * stream that comes first in the file.
 */
#ifndef GEN_PROGRAM_H
#define GEN_PROGRAM_H

#include <stddef.h>
#include <stdint.h>

#define GEN_MAX_VARS 32      /* vars per stream */
#define GEN_MAX_FRAME 9216   /* bytes of a template frame (jumbo) */
#define GEN_MIN_FRAME 14     /* an Ethernet header */
#define GEN_NAME_MAX 128     /* bytes of a stream name, with the NUL */
#define GEN_ERR_MAX 512      /* bytes of an error message */

typedef struct
{
  uint32_t offset;  /**< byte offset in the frame */
  uint32_t size;    /**< 1, 2 or 4 bytes, big-endian */
  uint64_t min;     /**< smallest value */
  uint64_t span;    /**< max - min + 1 (1 .. 2^32) */
  uint64_t step;    /**< step mod span */
  uint64_t init;    /**< init - min (0 .. span - 1) */
  uint32_t line;    /**< line of the var record (for errors) */
} gen_var_t;

typedef struct
{
  char name[GEN_NAME_MAX];
  uint8_t *packet;     /**< template frame, Ethernet first */
  uint32_t len;        /**< bytes of the template */
  double rate_pps;     /**< packets per second at mult 1; 0 = sends nothing */
  int64_t start_ns;    /**< first packet, ns after the start of the run */
  uint64_t count;      /**< packets in all; 0 = until the run ends */
  int latency;         /**< 1: latency probe (own socket, through the qdisc) */
  uint32_t n_vars;
  gen_var_t vars[GEN_MAX_VARS];
  int fix_ip;          /**< offset of the IPv4 header to fix, or -1 */
  int fix_l4_l3;       /**< fixl4: offset of the IPv4 header, or -1 */
  int fix_l4_l4;       /**< fixl4: offset of the TCP/UDP header */
  int fix_l4_proto;    /**< 6 or 17 */
  uint32_t line;       /**< line of the stream record */
  uint32_t fix_line;   /**< line of the last fixip/fixl4 record */
} gen_stream_t;

typedef struct
{
  gen_stream_t *streams;
  uint32_t n_streams;
  uint32_t max_len;    /**< longest template, bytes */
} gen_program_t;

/* Parse the text program in FILE. 0 on success; -1 with "FILE:LINE: what" (or
 * "FILE: what") in err, and nothing left allocated. */
int gen_program_load (gen_program_t *p, const char *path, char *err, size_t errlen);
void gen_program_free (gen_program_t *p);

/* Write packet n of s into out (room for s->len bytes); returns s->len. */
uint32_t gen_build (const gen_stream_t *s, uint64_t n, uint8_t *out);

/* ns after the start at which packet n of s is due (mult already in rate_eff). */
int64_t gen_due_ns (int64_t start_ns, double rate_eff, uint64_t n);

typedef struct
{
  uint32_t stream; /**< index in the program */
  uint64_t seq;    /**< packet number within the stream */
  int64_t due_ns;  /**< ns after the start */
} gen_due_t;

typedef struct
{
  const gen_program_t *prog;
  double *rate_eff;  /**< rate_pps * mult per stream */
  uint64_t *next;    /**< next packet number per stream */
  int64_t *next_due; /**< its due time, INT64_MAX when the stream is done */
} gen_sched_t;

int gen_sched_init (gen_sched_t *s, const gen_program_t *p, double mult);
void gen_sched_free (gen_sched_t *s);
/* Up to max packets due at or before now_ns, in due order (ties: lower stream
 * index first); returns how many were written to out. */
uint32_t gen_sched_take (gen_sched_t *s, int64_t now_ns, uint32_t max, gen_due_t *out);
/* The earliest due time of a packet not yet taken, INT64_MAX if none. */
int64_t gen_sched_next_due (const gen_sched_t *s);
/* Packets of stream k due strictly before t_ns (what a perfect sender had sent). */
uint64_t gen_sched_due_before (const gen_sched_t *s, uint32_t k, int64_t t_ns);

#endif /* GEN_PROGRAM_H */
