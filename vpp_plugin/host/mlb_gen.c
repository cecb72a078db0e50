/*
 * mlb_gen.c — the local traffic generator: sends a compiled traffic program
 * (hil/traffic/program.py, text form parsed by gen_program.c) on one interface
 * with AF_PACKET, or writes the packets it would send to a pcap. Python side:
 * hil/traffic/localgen.py; tests: tests/hil/test_mlb_gen.py; benchmark:
 * bench/traffic_gen/run.py.
 *
 *   mlb_gen --program FILE --iface IF [--duration S] [--mult M] [--cpu N]
 *   mlb_gen --program FILE --pcap-out OUT --count N [--mult M] [--duration S]
 *
 * Send loop: each iteration takes every packet due by now (merged over the
 * streams by due time, at most GEN_BATCH), builds them (vars + checksums) and
 * sends the bulk ones with one sendmmsg on a PACKET_QDISC_BYPASS socket; latency
 * probe streams go one send() per packet through a second socket that passes the
 * qdisc layer, so packet taps on the interface see them (with a kernel timestamp).
 * Then it sleeps (clock_nanosleep, timer slack 1 ns) until the next packet is due
 * but at least GEN_MIN_PERIOD_NS after the iteration began, so a fast stream goes
 * out in small bursts (rate x 50 us packets) rather than one syscall per packet;
 * a full batch means it is behind, and it loops without sleeping. Packets the
 * kernel refuses (ENOBUFS from a full device backlog, EMSGSIZE, ...) count as
 * failed and are not tried again (sendmmsg stops at a refused frame and reports
 * only how many went before it, so that frame is tried once more as the head of
 * the next call; refused again, it is counted and skipped). A send blocked on a
 * full socket buffer gives up after 1 s (SO_SNDTIMEO) and counts as failed.
 *
 * Output: one JSON object on stdout at the end: sent, failed, elapsed_s,
 * t_start/t_end_unix_ns (CLOCK_REALTIME at due time 0 and at the end),
 * offered_pps = sent / elapsed_s, per stream {name, sent, failed, due, rate_pps,
 * latency}, due (what a perfect sender had sent by the end: sent + failed < due
 * means it fell behind), stopped_by (duration | done | signal), syscalls, cpu_s,
 * lag_us {mean, p50, p99, max} of (send time - due time) per packet.
 * Exit 0; bad input (flags, program, interface) -> one line on stderr, exit 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <math.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gen_program.h"

#ifndef PACKET_QDISC_BYPASS
#define PACKET_QDISC_BYPASS 20
#endif

#define GEN_EXIT_USAGE 2
#define GEN_BATCH 256               /* packets per iteration (and per sendmmsg) at most */
/* An iteration every 50 us at most, unless behind (packets leave in bursts of up to
 * rate x 50 us). Measured on veth between two namespaces, 60-byte UDP, quiet 2-CPU VM,
 * mlb_gen CPU (utime+stime / elapsed) and per-packet lag p50 for min periods 0 / 20 / 50 /
 * 100 us: 10 kpps 0.20 / 0.18 / 0.18 / 0.15 CPU (lag 9 / 11 / 11 / 51 us); 50 kpps 0.65 /
 * 0.54 / 0.34 / 0.28 (9 / 16 / 31 / 57 us); 100 kpps 0.96 / 0.58 / 0.48 / 0.42 (8 / 15 /
 * 32 / 59 us). Every rate was met exactly in all four. Override with -DGEN_MIN_PERIOD_NS. */
#ifndef GEN_MIN_PERIOD_NS
#define GEN_MIN_PERIOD_NS 50000
#endif
#define GEN_SNDBUF (4 << 20)        /* socket send buffer, bytes */
#define GEN_LAG_FINE 10000          /* lag histogram: 1-us bins up to 10 ms, */
#define GEN_LAG_BINS 20000          /* then 1-ms bins up to 10 s, then one more */
#define GEN_IDLE_SLEEP_NS 100000000 /* nothing due ever: wake every 100 ms for signals */

typedef struct
{
  const char *program_path;
  const char *ifname;
  const char *pcap_path;
  double duration_s; /**< 0 = no limit */
  double mult;       /**< every stream's rate is multiplied by it */
  int cpu;           /**< CPU to pin to, -1 = none */
  uint64_t count;    /**< --pcap-out: packets to write */
  int have_count;
} gen_opts_t;

typedef struct
{
  uint64_t sent;   /**< accepted by the kernel */
  uint64_t failed; /**< refused by the kernel */
} gen_counts_t;

typedef struct
{
  gen_opts_t opts;
  gen_program_t prog;
  gen_sched_t sched;
  int bulk_fd, lat_fd, ifindex;
  uint8_t *slots;          /**< GEN_BATCH frames of slot_size bytes */
  uint32_t slot_size;
  struct mmsghdr *msgs;    /**< one per slot */
  struct iovec *iov;       /**< one per slot */
  uint32_t *slot_stream;   /**< stream of each pending slot */
  uint32_t n_pending;      /**< bulk frames built, not yet sent */
  gen_counts_t *streams;   /**< per stream */
  gen_counts_t total;
  uint64_t kicks;          /**< send syscalls */
  int last_errno;          /**< errno of the last refused packet */
  uint64_t lag_hist[GEN_LAG_BINS + 1];
  uint64_t lag_n;
  double lag_sum_ns;
  int64_t lag_max_ns;
} gen_main_t;

static gen_main_t gen_main;
static volatile sig_atomic_t gen_stop;

static void
gen_on_signal (int sig)
{
  (void) sig;
  gen_stop = 1;
}

static int64_t
gen_clock_ns (clockid_t c)
{
  struct timespec ts;
  clock_gettime (c, &ts);
  return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
gen_usage (FILE *f)
{
  fprintf (f,
	   "usage: mlb_gen --program FILE --iface IF [--duration S] [--mult M] [--cpu N]\n"
	   "       mlb_gen --program FILE --pcap-out OUT --count N [--mult M] [--duration S]\n"
	   "Sends the traffic program FILE (hil.traffic.program's text form) on IF, or writes\n"
	   "its first N packets with their due times to a pcap (nanosecond timestamps).\n"
	   "Prints one JSON object on stdout at the end; bad input: FILE:LINE on stderr, exit 2.\n");
}

static void __attribute__ ((noreturn, format (printf, 1, 2)))
gen_die (const char *fmt, ...)
{
  va_list ap;
  fputs ("mlb_gen: ", stderr);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
  exit (GEN_EXIT_USAGE);
}

static double
gen_opt_double (const char *flag, const char *v, double lo)
{
  char *end;
  double d;
  errno = 0;
  d = strtod (v, &end);
  if (errno || *end || !*v || !isfinite (d) || d <= lo)
    gen_die ("%s %s: expected a number > %g", flag, v, lo);
  return d;
}

static void
gen_parse_opts (gen_opts_t *o, int argc, char **argv)
{
  static const struct option lopts[] = {
    { "program", required_argument, 0, 'p' }, { "iface", required_argument, 0, 'i' },
    { "duration", required_argument, 0, 'd' }, { "mult", required_argument, 0, 'm' },
    { "cpu", required_argument, 0, 'c' },      { "pcap-out", required_argument, 0, 'o' },
    { "count", required_argument, 0, 'n' },    { "help", no_argument, 0, 'h' },
    { 0, 0, 0, 0 },
  };
  int c;
  char *end;
  memset (o, 0, sizeof *o);
  o->mult = 1.0;
  o->cpu = -1;
  opterr = 0;
  while ((c = getopt_long (argc, argv, "", lopts, NULL)) != -1)
    switch (c)
      {
      case 'p':
	o->program_path = optarg;
	break;
      case 'i':
	o->ifname = optarg;
	break;
      case 'o':
	o->pcap_path = optarg;
	break;
      case 'd':
	o->duration_s = gen_opt_double ("--duration", optarg, 0);
	break;
      case 'm':
	o->mult = gen_opt_double ("--mult", optarg, 0);
	break;
      case 'c':
	errno = 0;
	o->cpu = (int) strtol (optarg, &end, 10);
	if (errno || *end || !*optarg || o->cpu < 0 || o->cpu >= CPU_SETSIZE)
	  gen_die ("--cpu %s: expected a CPU number", optarg);
	break;
      case 'n':
	errno = 0;
	o->count = strtoull (optarg, &end, 10);
	if (errno || *end || !*optarg || *optarg == '-')
	  gen_die ("--count %s: expected an integer >= 0", optarg);
	o->have_count = 1;
	break;
      case 'h':
	gen_usage (stdout);
	exit (0);
      default:
	gen_die ("unknown option or missing value: %s (see --help)", argv[optind - 1]);
      }
  if (optind < argc)
    gen_die ("unexpected argument: %s", argv[optind]);
  if (!o->program_path)
    gen_die ("--program FILE is required");
  if (!!o->ifname == !!o->pcap_path)
    gen_die ("give exactly one of --iface IF (send) and --pcap-out OUT (write a pcap)");
  if (o->pcap_path && !o->have_count)
    gen_die ("--pcap-out needs --count N");
  if (o->ifname && o->have_count)
    gen_die ("--count is for --pcap-out (streams have their own counts)");
}

/* ---- JSON ---- */

static void
gen_json_str (FILE *f, const char *s)
{
  fputc ('"', f);
  for (; *s; s++)
    {
      unsigned char c = (unsigned char) *s;
      if (c == '"' || c == '\\')
	fprintf (f, "\\%c", c);
      else if (c < 0x20)
	fprintf (f, "\\u%04x", c);
      else
	fputc (c, f);
    }
  fputc ('"', f);
}

/* The upper edge of the bin holding quantile q, us (the last bin: the maximum). */
static double
gen_lag_quantile_us (const gen_main_t *gm, double q)
{
  uint64_t want, acc = 0;
  if (!gm->lag_n)
    return 0;
  want = (uint64_t) ceil (q * (double) gm->lag_n);
  for (uint32_t b = 0; b < GEN_LAG_BINS; b++)
    {
      acc += gm->lag_hist[b];
      if (acc >= want)
	return b < GEN_LAG_FINE ? (double) (b + 1)
				: (double) GEN_LAG_FINE + (double) (b - GEN_LAG_FINE + 1) * 1000.0;
    }
  return (double) gm->lag_max_ns / 1e3;
}

/* ---- pcap mode ---- */

static int
gen_write_pcap (gen_main_t *gm)
{
  const gen_opts_t *o = &gm->opts;
  /* classic pcap, nanosecond timestamps (magic a1b23c4d), Ethernet */
  struct
  {
    uint32_t magic;
    uint16_t major, minor;
    int32_t zone;
    uint32_t sigfigs, snaplen, linktype;
  } hdr = { 0xa1b23c4d, 2, 4, 0, 0, 65535, 1 };
  uint64_t written = 0, *per = calloc (gm->prog.n_streams, sizeof *per);
  int64_t lim = o->duration_s > 0 ? (int64_t) llround (o->duration_s * 1e9) - 1 : INT64_MAX - 1;
  gen_due_t due[GEN_BATCH];
  FILE *f = fopen (o->pcap_path, "wb");

  if (!f || !per)
    gen_die ("--pcap-out %s: %s", o->pcap_path, strerror (errno));
  if (fwrite (&hdr, sizeof hdr, 1, f) != 1)
    gen_die ("--pcap-out %s: %s", o->pcap_path, strerror (errno));
  while (written < o->count)
    {
      uint64_t left = o->count - written;
      uint32_t n = gen_sched_take (&gm->sched, lim, left < GEN_BATCH ? (uint32_t) left : GEN_BATCH,
				   due);
      if (n == 0)
	break; /* every stream is finished */
      for (uint32_t i = 0; i < n; i++)
	{
	  const gen_stream_t *s = &gm->prog.streams[due[i].stream];
	  uint32_t len = gen_build (s, due[i].seq, gm->slots);
	  uint32_t rec[4] = { (uint32_t) (due[i].due_ns / 1000000000),
			      (uint32_t) (due[i].due_ns % 1000000000), len, len };
	  if (fwrite (rec, sizeof rec, 1, f) != 1 || fwrite (gm->slots, len, 1, f) != 1)
	    gen_die ("--pcap-out %s: %s", o->pcap_path, strerror (errno));
	  per[due[i].stream]++;
	}
      written += n;
    }
  if (fclose (f) != 0)
    gen_die ("--pcap-out %s: %s", o->pcap_path, strerror (errno));
  printf ("{\"written\": %llu, \"pcap\": ", (unsigned long long) written);
  gen_json_str (stdout, o->pcap_path);
  printf (", \"streams\": [");
  for (uint32_t k = 0; k < gm->prog.n_streams; k++)
    {
      printf ("%s{\"name\": ", k ? ", " : "");
      gen_json_str (stdout, gm->prog.streams[k].name);
      printf (", \"written\": %llu}", (unsigned long long) per[k]);
    }
  printf ("]}\n");
  free (per);
  return 0;
}

/* ---- send mode ---- */

static int
gen_open_socket (int ifindex, int bypass)
{
  struct sockaddr_ll sll;
  struct timeval tv = { 1, 0 }; /* a send blocked on a full socket buffer gives up after 1 s */
  int one = 1, buf = GEN_SNDBUF;
  int fd = socket (AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0); /* protocol 0: receives nothing */
  if (fd < 0)
    return -1;
  if (bypass && setsockopt (fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) < 0)
    gen_die ("PACKET_QDISC_BYPASS: %s", strerror (errno));
  if (setsockopt (fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) < 0)
    (void) setsockopt (fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  (void) setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  memset (&sll, 0, sizeof sll);
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = 0;
  sll.sll_ifindex = ifindex;
  if (bind (fd, (struct sockaddr *) &sll, sizeof sll) < 0)
    {
      close (fd);
      return -1;
    }
  return fd;
}

static void
gen_open_iface (gen_main_t *gm)
{
  const char *ifn = gm->opts.ifname;
  struct ifreq ifr;
  int fd;

  if (strlen (ifn) >= IFNAMSIZ)
    gen_die ("--iface %s: interface name too long", ifn);
  gm->ifindex = (int) if_nametoindex (ifn);
  if (gm->ifindex == 0)
    gen_die ("--iface %s: no such interface in this network namespace (%s)", ifn,
	     strerror (errno));
  fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  memset (&ifr, 0, sizeof ifr);
  strcpy (ifr.ifr_name, ifn);
  if (fd >= 0 && ioctl (fd, SIOCGIFMTU, &ifr) == 0)
    for (uint32_t k = 0; k < gm->prog.n_streams; k++)
      {
	const gen_stream_t *s = &gm->prog.streams[k];
	uint32_t tagged = s->packet[12] == 0x81 && s->packet[13] == 0x00 ? 4 : 0;
	if (s->len > (uint32_t) ifr.ifr_mtu + ETH_HLEN + tagged)
	  gen_die ("%s:%u: stream %s: %u-byte frames do not fit %s's MTU %d",
		   gm->opts.program_path, s->line, s->name, s->len, ifn, ifr.ifr_mtu);
      }
  if (fd >= 0)
    close (fd);
  gm->bulk_fd = gen_open_socket (gm->ifindex, 1);
  gm->lat_fd = gen_open_socket (gm->ifindex, 0);
  if (gm->bulk_fd < 0 || gm->lat_fd < 0)
    gen_die ("AF_PACKET socket on %s: %s (needs root or CAP_NET_RAW)", ifn, strerror (errno));
}

/* Send the pending bulk frames: one sendmmsg, more only after a refusal (which
 * counts that frame as failed and goes on with the next) or an interruption. */
static void
gen_flush (gen_main_t *gm)
{
  uint32_t done = 0;
  while (done < gm->n_pending)
    {
      int rv = sendmmsg (gm->bulk_fd, gm->msgs + done, gm->n_pending - done, 0);
      gm->kicks++;
      if (rv < 0)
	{
	  if (errno == EINTR)
	    continue;
	  gm->last_errno = errno;
	  gm->streams[gm->slot_stream[done]].failed++;
	  gm->total.failed++;
	  done++;
	  continue;
	}
      for (int i = 0; i < rv; i++)
	gm->streams[gm->slot_stream[done + (uint32_t) i]].sent++;
      gm->total.sent += (uint64_t) rv;
      done += (uint32_t) rv;
    }
  gm->n_pending = 0;
}

static void
gen_send_probe (gen_main_t *gm, uint32_t k, const uint8_t *frame, uint32_t len)
{
  ssize_t rv;
  gen_flush (gm); /* keep the send order */
  do
    rv = send (gm->lat_fd, frame, len, 0);
  while (rv < 0 && errno == EINTR);
  gm->kicks++;
  if (rv == (ssize_t) len)
    {
      gm->streams[k].sent++;
      gm->total.sent++;
    }
  else
    {
      gm->last_errno = rv < 0 ? errno : EMSGSIZE;
      gm->streams[k].failed++;
      gm->total.failed++;
    }
}

static void
gen_note_lag (gen_main_t *gm, int64_t lag_ns)
{
  int64_t us = lag_ns / 1000;
  int64_t b = us < GEN_LAG_FINE ? us : GEN_LAG_FINE + (us - GEN_LAG_FINE) / 1000;
  gm->lag_hist[b < GEN_LAG_BINS ? b : GEN_LAG_BINS]++;
  gm->lag_n++;
  gm->lag_sum_ns += (double) lag_ns;
  if (lag_ns > gm->lag_max_ns)
    gm->lag_max_ns = lag_ns;
}

static void
gen_sleep_until (int64_t t0_abs, int64_t t_rel)
{
  int64_t t = t0_abs + t_rel;
  struct timespec ts = { (time_t) (t / 1000000000), (long) (t % 1000000000) };
  (void) clock_nanosleep (CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL); /* EINTR: a signal */
}

static int
gen_run (gen_main_t *gm)
{
  const gen_opts_t *o = &gm->opts;
  int64_t end = o->duration_s > 0 ? (int64_t) llround (o->duration_s * 1e9) : INT64_MAX;
  int64_t t0, t0_unix, t1, t1_unix, now = 0, due_t;
  gen_due_t due[GEN_BATCH];
  const char *stopped_by = "done";
  uint64_t due_total = 0;
  struct rusage ru;

  gen_open_iface (gm);
  if (o->cpu >= 0)
    {
      cpu_set_t set;
      CPU_ZERO (&set);
      CPU_SET (o->cpu, &set);
      if (sched_setaffinity (0, sizeof set, &set) < 0)
	gen_die ("--cpu %d: %s", o->cpu, strerror (errno));
    }
  (void) prctl (PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL); /* wake up when asked, not 50 us later */

  t0 = gen_clock_ns (CLOCK_MONOTONIC);
  t0_unix = gen_clock_ns (CLOCK_REALTIME);
  for (;;)
    {
      int64_t next, wake;
      uint32_t n;
      if (gen_stop)
	{
	  stopped_by = "signal";
	  break;
	}
      now = gen_clock_ns (CLOCK_MONOTONIC) - t0;
      n = gen_sched_take (&gm->sched, now < end ? now : end - 1, GEN_BATCH, due);
      for (uint32_t i = 0; i < n; i++)
	{
	  const gen_stream_t *s = &gm->prog.streams[due[i].stream];
	  gen_note_lag (gm, now - due[i].due_ns);
	  if (s->latency)
	    {
	      uint8_t *probe = gm->slots + (size_t) GEN_BATCH * gm->slot_size;
	      gen_send_probe (gm, due[i].stream, probe, gen_build (s, due[i].seq, probe));
	      continue;
	    }
	  gm->iov[gm->n_pending].iov_len =
	    gen_build (s, due[i].seq, gm->slots + (size_t) gm->n_pending * gm->slot_size);
	  gm->slot_stream[gm->n_pending++] = due[i].stream;
	}
      gen_flush (gm);
      if (now >= end)
	{
	  stopped_by = "duration";
	  break;
	}
      next = gen_sched_next_due (&gm->sched);
      if (next == INT64_MAX)
	break; /* every stream is finished */
      if (n == GEN_BATCH)
	continue; /* behind: no sleep */
      /* the period counts from the top of this iteration: a batch that took longer to
       * send than GEN_MIN_PERIOD_NS is followed at once by the next */
      wake = next > now + GEN_MIN_PERIOD_NS ? next : now + GEN_MIN_PERIOD_NS;
      if (wake > end)
	wake = end;
      if (wake - now > GEN_IDLE_SLEEP_NS)
	wake = now + GEN_IDLE_SLEEP_NS;
      if (wake > gen_clock_ns (CLOCK_MONOTONIC) - t0)
	gen_sleep_until (t0, wake);
    }
  t1 = gen_clock_ns (CLOCK_MONOTONIC);
  t1_unix = gen_clock_ns (CLOCK_REALTIME);
  getrusage (RUSAGE_SELF, &ru);

  /* what a perfect sender had sent by the end (the duration, or when it stopped) */
  due_t = t1 - t0 + 1 < end ? t1 - t0 + 1 : end;
  printf ("{\"sent\": %llu, \"failed\": %llu, \"elapsed_s\": %.9f, \"t_start_unix_ns\": %lld, "
	  "\"t_end_unix_ns\": %lld, \"offered_pps\": %.3f, \"streams\": [",
	  (unsigned long long) gm->total.sent, (unsigned long long) gm->total.failed,
	  (double) (t1 - t0) / 1e9, (long long) t0_unix, (long long) t1_unix,
	  (double) gm->total.sent / ((double) (t1 - t0) / 1e9));
  for (uint32_t k = 0; k < gm->prog.n_streams; k++)
    {
      const gen_stream_t *s = &gm->prog.streams[k];
      uint64_t d = gen_sched_due_before (&gm->sched, k, due_t);
      due_total += d;
      printf ("%s{\"name\": ", k ? ", " : "");
      gen_json_str (stdout, s->name);
      printf (", \"sent\": %llu, \"failed\": %llu, \"due\": %llu, \"rate_pps\": %.6f, "
	      "\"latency\": %s}",
	      (unsigned long long) gm->streams[k].sent, (unsigned long long) gm->streams[k].failed,
	      (unsigned long long) d, gm->sched.rate_eff[k], s->latency ? "true" : "false");
    }
  printf ("], \"due\": %llu, \"stopped_by\": \"%s\", \"mult\": %.9g, \"syscalls\": %llu, "
	  "\"cpu_s\": %.6f, \"lag_us\": {\"mean\": %.3f, \"p50\": %.0f, \"p99\": %.0f, "
	  "\"max\": %.3f}, \"last_error\": ",
	  (unsigned long long) due_total, stopped_by, o->mult, (unsigned long long) gm->kicks,
	  (double) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec)
	    + (double) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6,
	  gm->lag_n ? gm->lag_sum_ns / (double) gm->lag_n / 1e3 : 0.0,
	  gen_lag_quantile_us (gm, 0.5), gen_lag_quantile_us (gm, 0.99),
	  (double) gm->lag_max_ns / 1e3);
  if (gm->last_errno)
    gen_json_str (stdout, strerror (gm->last_errno));
  else
    fputs ("null", stdout);
  printf ("}\n");
  fflush (stdout);
  close (gm->bulk_fd);
  close (gm->lat_fd);
  return 0;
}

int
main (int argc, char **argv)
{
  gen_main_t *gm = &gen_main;
  char err[GEN_ERR_MAX];
  int rc;

  gen_parse_opts (&gm->opts, argc, argv);
  if (gm->opts.ifname)
    { /* from here on SIGTERM/SIGINT end the run with its counts (a stop right at the start
       * gives an empty run, not a silent death); no SA_RESTART: sleeps and sends see EINTR */
      struct sigaction sa;
      memset (&sa, 0, sizeof sa);
      sa.sa_handler = gen_on_signal;
      sigaction (SIGTERM, &sa, NULL);
      sigaction (SIGINT, &sa, NULL);
    }
  if (gen_program_load (&gm->prog, gm->opts.program_path, err, sizeof err) < 0)
    {
      fprintf (stderr, "%s\n", err);
      return GEN_EXIT_USAGE;
    }
  if (gen_sched_init (&gm->sched, &gm->prog, gm->opts.mult) < 0)
    gen_die ("out of memory");
  gm->slot_size = (gm->prog.max_len + 63) & ~63u;
  /* GEN_BATCH bulk slots and one for a latency probe */
  gm->slots = calloc ((size_t) GEN_BATCH + 1, gm->slot_size);
  gm->msgs = calloc (GEN_BATCH, sizeof *gm->msgs);
  gm->iov = calloc (GEN_BATCH, sizeof *gm->iov);
  gm->slot_stream = calloc (GEN_BATCH, sizeof *gm->slot_stream);
  gm->streams = calloc (gm->prog.n_streams, sizeof *gm->streams);
  if (!gm->slots || !gm->msgs || !gm->iov || !gm->slot_stream || !gm->streams)
    gen_die ("out of memory");
  for (uint32_t i = 0; i < GEN_BATCH; i++)
    {
      gm->iov[i].iov_base = gm->slots + (size_t) i * gm->slot_size;
      gm->msgs[i].msg_hdr.msg_iov = &gm->iov[i];
      gm->msgs[i].msg_hdr.msg_iovlen = 1;
    }
  rc = gm->opts.pcap_path ? gen_write_pcap (gm) : gen_run (gm);
  gen_sched_free (&gm->sched);
  gen_program_free (&gm->prog);
  free (gm->slots);
  free (gm->msgs);
  free (gm->iov);
  free (gm->slot_stream);
  free (gm->streams);
  return rc;
}
