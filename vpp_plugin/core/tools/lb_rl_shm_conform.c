/*
 * lb_rl_shm_conform — cross-process conformance driver for the shm protocol.
 * Writers fill every frame with the pattern of its seq (lb_rl_shm_pattern.h);
 * readers copy the latest frame in a tight loop and check seq order, the
 * checksum (inside lb_rl_shm_read_*) and the pattern. Results are one JSON
 * line on stdout; the exit status is 0 iff the run was clean.
 *
 *   create PATH S K OUT_RING IN_RING   create+format PATH (fails if it exists)
 *   check PATH                         attach as a reader: {"rc", "error"}
 *   write-out PATH N [MIN_S]           data plane: N msg_out frames at full speed (and
 *                                      on past N until MIN_S seconds have passed)
 *   write-in PATH N                    agent: N msg_in frames, full speed
 *   read-out PATH LAST_SEQ TIMEOUT_S   read msg_out until seq >= LAST_SEQ
 *   read-in PATH LAST_SEQ TIMEOUT_S    read msg_in until seq >= LAST_SEQ
 *   read-out-unsafe PATH LAST_SEQ TIMEOUT_S
 *                                      negative control: copy the latest msg_out slot
 *                                      WITHOUT the seqlock and count the copies that
 *                                      the checksum / pattern expose as torn
 *   dataplane PATH N_PRESENT T1 T2     a real core context with servers 0..N_PRESENT-1
 *                                      (static weight 1 + i): poll msg_in at host time
 *                                      T1 and T2, publish one frame at T2, print the
 *                                      poll results and the weights in force
 *   selftest PATH N [S]                fork: C writer vs C reader, both directions,
 *                                      then the unsafe reader (reported, not judged);
 *                                      region of S servers (default 2), K = 4, rings of 2
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lb_rl_shm.h"
#include "lb_rl_shm_pattern.h"

static double
mono_now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

static int
open_or_die (const char *path, int role, lb_rl_shm_t **shm)
{
  int rc = lb_rl_shm_open (path, NULL, role, shm);
  if (rc)
    {
      printf ("{\"rc\": %d, \"error\": \"%s\"}\n", rc, lb_rl_shm_last_error ());
      return 0;
    }
  return 1;
}

static int
cmd_create (const char *path, char **argv)
{
  lb_rl_shm_params_t p;
  lb_rl_shm_t *shm;
  int rc;
  p.max_servers = (uint32_t) strtoul (argv[0], NULL, 10);
  p.reservoir_slots = (uint32_t) strtoul (argv[1], NULL, 10);
  p.out_ring_len = (uint32_t) strtoul (argv[2], NULL, 10);
  p.in_ring_len = (uint32_t) strtoul (argv[3], NULL, 10);
  if (access (path, F_OK) == 0)
    {
      printf ("{\"rc\": %d, \"error\": \"%s exists\"}\n", LB_RL_SHM_E_ARG, path);
      return 1;
    }
  rc = lb_rl_shm_open (path, &p, LB_RL_SHM_ROLE_DATAPLANE, &shm);
  printf ("{\"rc\": %d, \"error\": \"%s\", \"size\": %llu}\n", rc,
	  rc ? lb_rl_shm_last_error () : "", (unsigned long long) lb_rl_shm_size (&p));
  lb_rl_shm_close (shm);
  return rc ? 1 : 0;
}

static int
cmd_check (const char *path)
{
  lb_rl_shm_t *shm;
  int rc = lb_rl_shm_open (path, NULL, LB_RL_SHM_ROLE_READER, &shm);
  printf ("{\"rc\": %d, \"strerror\": \"%s\", \"error\": \"%s\"}\n", rc,
	  lb_rl_shm_strerror (rc), rc ? lb_rl_shm_last_error () : "");
  lb_rl_shm_close (shm);
  return rc ? 1 : 0;
}

static int
cmd_write_out (const char *path, uint64_t n, double min_s)
{
  lb_rl_shm_t *shm;
  lb_rl_shm_out_frame_t *f;
  uint64_t i, seq = 0, first = 0;
  double t0, dt;
  if (!open_or_die (path, LB_RL_SHM_ROLE_DATAPLANE, &shm))
    return 1;
  t0 = mono_now ();
  for (i = 0; i < n || (min_s > 0 && ((i & 1023) || mono_now () - t0 < min_s)); i++)
    {
      f = lb_rl_shm_out_begin (shm, &seq);
      if (!first)
	first = seq;
      lb_rl_shm_pattern_fill_out (shm, f, seq);
      lb_rl_shm_out_commit (shm, f);
    }
  dt = mono_now () - t0;
  printf ("{\"frames\": %llu, \"first_seq\": %llu, \"last_seq\": %llu, \"seconds\": %.6f, "
	  "\"frames_per_s\": %.1f}\n",
	  (unsigned long long) i, (unsigned long long) first, (unsigned long long) seq, dt,
	  dt > 0 ? (double) i / dt : 0.0);
  lb_rl_shm_close (shm);
  return 0;
}

static int
cmd_write_in (const char *path, uint64_t n)
{
  lb_rl_shm_t *shm;
  double w[LB_RL_MAX_SERVERS];
  uint64_t i, seq = 0, first = 0, next;
  uint32_t S, k;
  double t0, dt;
  int rc;
  if (!open_or_die (path, LB_RL_SHM_ROLE_AGENT, &shm))
    return 1;
  S = lb_rl_shm_header (shm)->max_servers;
  t0 = mono_now ();
  for (i = 0; i < n; i++)
    {
      next = lb_rl_shm_next_seq (shm);
      k = lb_rl_shm_pattern_in (next, S, w);
      rc = lb_rl_shm_write_weights (shm, w, k, (double) next, (double) next + 0.5, &seq);
      if (rc || seq != next)
	{
	  printf ("{\"rc\": %d, \"error\": \"seq %llu != expected %llu\"}\n", rc,
		  (unsigned long long) seq, (unsigned long long) next);
	  lb_rl_shm_close (shm);
	  return 1;
	}
      if (!first)
	first = seq;
    }
  dt = mono_now () - t0;
  printf ("{\"frames\": %llu, \"first_seq\": %llu, \"last_seq\": %llu, \"seconds\": %.6f, "
	  "\"frames_per_s\": %.1f}\n",
	  (unsigned long long) n, (unsigned long long) first, (unsigned long long) seq, dt,
	  dt > 0 ? (double) n / dt : 0.0);
  lb_rl_shm_close (shm);
  return 0;
}

/* Read the latest frame in a loop until its seq reaches last_seq. */
static int
cmd_read (const char *path, int is_out, uint64_t last_seq, double timeout_s)
{
  lb_rl_shm_t *shm;
  lb_rl_shm_read_stats_t rs;
  lb_rl_shm_in_frame_t *fin;
  lb_rl_shm_out_frame_t *fout = NULL;
  uint64_t stride, in_stride, q, last = 0, reads = 0, distinct = 0, repeats = 0, torn = 0, nonmono = 0;
  uint64_t busy = 0, cs_errors = 0, no_frame = 0, first = 0;
  uint32_t S;
  double t0, dt;
  int rc, clean, timed_out = 0;
  if (!open_or_die (path, LB_RL_SHM_ROLE_READER, &shm))
    return 1;
  stride = lb_rl_shm_header (shm)->out_frame_stride;
  in_stride = lb_rl_shm_header (shm)->in_frame_stride;
  S = lb_rl_shm_header (shm)->max_servers;
  fout = malloc (stride);
  fin = malloc (in_stride);
  if (!fout || !fin)
    return 1;
  t0 = mono_now ();
  while (last < last_seq)
    {
      if ((reads & 255) == 0 && mono_now () - t0 > timeout_s)
	{
	  timed_out = 1;
	  break;
	}
      rc = is_out ? lb_rl_shm_read_out (shm, fout, stride) : lb_rl_shm_read_in (shm, fin, in_stride);
      if (rc == LB_RL_SHM_E_NO_FRAME)
	{
	  no_frame++;
	  if ((no_frame & 1023) == 0)
	    usleep (100);
	  if (mono_now () - t0 > timeout_s)
	    {
	      timed_out = 1;
	      break;
	    }
	  continue;
	}
      if (rc == LB_RL_SHM_E_BUSY)
	{
	  busy++;
	  continue;
	}
      if (rc == LB_RL_SHM_E_CHECKSUM)
	{
	  cs_errors++;
	  continue;
	}
      reads++;
      q = is_out ? fout->seq : fin->seq;
      if (is_out ? lb_rl_shm_pattern_check_out (shm, fout) : lb_rl_shm_pattern_check_in (fin, S))
	torn++;
      if (q < last)
	nonmono++;
      else if (q == last)
	repeats++;
      else
	{
	  if (!first)
	    first = q;
	  distinct++;
	  last = q;
	}
    }
  dt = mono_now () - t0;
  lb_rl_shm_read_stats (shm, &rs);
  clean = !timed_out && torn == 0 && nonmono == 0 && cs_errors == 0 && distinct > 0;
  printf ("{\"clean\": %s, \"reads\": %llu, \"distinct\": %llu, \"repeats\": %llu, "
	  "\"torn\": %llu, \"nonmonotonic\": %llu, \"checksum_errors\": %llu, \"busy\": %llu, "
	  "\"retries\": %llu, \"checksum_retries\": %llu, \"first_seq\": %llu, "
	  "\"last_seq\": %llu, \"timed_out\": %s, \"seconds\": %.6f}\n",
	  clean ? "true" : "false", (unsigned long long) reads, (unsigned long long) distinct,
	  (unsigned long long) repeats, (unsigned long long) torn, (unsigned long long) nonmono,
	  (unsigned long long) cs_errors, (unsigned long long) busy,
	  (unsigned long long) rs.retries, (unsigned long long) rs.checksum_failures,
	  (unsigned long long) first, (unsigned long long) last, timed_out ? "true" : "false",
	  dt);
  free (fout);
  free (fin);
  lb_rl_shm_close (shm);
  return clean ? 0 : 1;
}

/* Negative control: what a reader without the seqlock would see. */
static int
cmd_read_unsafe (const char *path, uint64_t last_seq, double timeout_s)
{
  lb_rl_shm_t *shm;
  lb_rl_shm_header_t *h;
  lb_rl_shm_out_frame_t *f;
  uint64_t stride, latest, reads = 0, torn_cs = 0, torn_pat = 0, zero = 0;
  const uint8_t *ring;
  double t0;
  if (!open_or_die (path, LB_RL_SHM_ROLE_READER, &shm))
    return 1;
  h = lb_rl_shm_header (shm);
  stride = h->out_frame_stride;
  ring = (const uint8_t *) h + h->out_ring_offset;
  f = malloc (stride);
  t0 = mono_now ();
  do
    {
      latest = __atomic_load_n (&h->out_seq_latest, __ATOMIC_ACQUIRE);
      if (!latest)
	continue;
      memcpy (f, ring + (latest % h->out_ring_len) * stride, stride);
      reads++;
      if (f->seq == 0)
	{
	  zero++;
	  continue;
	}
      if (lb_rl_shm_checksum (f, stride, f->seq) != f->checksum)
	torn_cs++;
      if (lb_rl_shm_pattern_check_out (shm, f))
	torn_pat++;
    }
  while (latest < last_seq && mono_now () - t0 < timeout_s);
  printf ("{\"unsafe_reads\": %llu, \"unsafe_in_progress\": %llu, "
	  "\"unsafe_checksum_torn\": %llu, \"unsafe_pattern_torn\": %llu}\n",
	  (unsigned long long) reads, (unsigned long long) zero, (unsigned long long) torn_cs,
	  (unsigned long long) torn_pat);
  free (f);
  lb_rl_shm_close (shm);
  return 0;
}

static int
selftest_dir (const char *path, int is_out, uint64_t n)
{
  lb_rl_shm_t *shm;
  uint64_t target;
  pid_t pid;
  int status, rc;
  /* the writer continues from whatever the region holds: read the target first */
  if (!open_or_die (path, LB_RL_SHM_ROLE_READER, &shm))
    return 1;
  target = (is_out >= 1 ? lb_rl_shm_header (shm)->out_seq_latest
		   : lb_rl_shm_header (shm)->in_seq_latest)
	   + n;
  lb_rl_shm_close (shm);
  fflush (stdout);
  pid = fork ();
  if (pid < 0)
    return 1;
  if (pid == 0)
    _exit (is_out >= 1 ? cmd_write_out (path, n, 0) : cmd_write_in (path, n));
  rc = is_out == 2 ? cmd_read_unsafe (path, target, 60.0) : cmd_read (path, is_out, target, 60.0);
  fflush (stdout);
  if (waitpid (pid, &status, 0) != pid || !WIFEXITED (status) || WEXITSTATUS (status) != 0)
    rc = 1;
  return rc;
}

static int
cmd_selftest (const char *path, uint64_t n, const char *servers)
{
  /* smallest ring: the writer comes back to the slot being read soonest */
  char *args[4] = { (char *) servers, "4", "2", "2" };
  int rc;
  unlink (path);
  if (cmd_create (path, args))
    return 1;
  rc = selftest_dir (path, 1, n);
  rc |= selftest_dir (path, 0, n);
  rc |= selftest_dir (path, 2, n);
  unlink (path);
  return rc;
}

static int
cmd_dataplane (const char *path, uint32_t n_present, double t1, double t2)
{
  lb_rl_shm_t *shm;
  lb_rl_config_t cfg;
  lb_rl_ctx_t *ctx;
  double w[LB_RL_MAX_SERVERS];
  uint64_t seq = 0;
  uint32_t i, S;
  int p1, p2, rc;
  if (!open_or_die (path, LB_RL_SHM_ROLE_DATAPLANE, &shm))
    return 1;
  S = lb_rl_shm_header (shm)->max_servers;
  lb_rl_config_default (&cfg);
  cfg.max_servers = S;
  cfg.table_size = 1024;
  cfg.reservoir_size = lb_rl_shm_header (shm)->reservoir_slots;
  ctx = lb_rl_create (&cfg);
  if (!ctx)
    return 1;
  for (i = 0; i < n_present && i < S; i++)
    lb_rl_server_add (ctx, i, 1.0 + i);
  p1 = lb_rl_shm_poll_in (shm, ctx, t1, t1);
  p2 = lb_rl_shm_poll_in (shm, ctx, t2, t2);
  rc = lb_rl_shm_publish (shm, ctx, t2, t2, &seq);
  lb_rl_get_weights (ctx, w);
  printf ("{\"poll1\": %d, \"poll2\": %d, \"publish\": %d, \"out_seq\": %llu, \"weights\": [",
	  p1, p2, rc, (unsigned long long) seq);
  for (i = 0; i < S; i++)
    printf ("%s%.17g", i ? ", " : "", w[i]);
  printf ("]}\n");
  lb_rl_destroy (ctx);
  lb_rl_shm_close (shm);
  return rc ? 1 : 0;
}

static int
usage (const char *prog)
{
  fprintf (stderr,
	   "usage: %s create PATH S K OUT_RING IN_RING | check PATH | write-out PATH N [MIN_S] |\n"
	   "       write-in PATH N | read-out PATH LAST_SEQ TIMEOUT_S |\n"
	   "       read-in PATH LAST_SEQ TIMEOUT_S | read-out-unsafe PATH LAST_SEQ TIMEOUT_S |\n"
	   "       dataplane PATH N_PRESENT T1 T2 | selftest PATH N [S]\n",
	   prog);
  return 2;
}

int
main (int argc, char **argv)
{
  const char *cmd, *path;
  if (argc < 3)
    return usage (argv[0]);
  cmd = argv[1];
  path = argv[2];
  if (!strcmp (cmd, "create") && argc == 7)
    return cmd_create (path, argv + 3);
  if (!strcmp (cmd, "check") && argc == 3)
    return cmd_check (path);
  if (!strcmp (cmd, "write-out") && (argc == 4 || argc == 5))
    return cmd_write_out (path, strtoull (argv[3], NULL, 10), argc == 5 ? atof (argv[4]) : 0);
  if (!strcmp (cmd, "write-in") && argc == 4)
    return cmd_write_in (path, strtoull (argv[3], NULL, 10));
  if (!strcmp (cmd, "read-out") && argc == 5)
    return cmd_read (path, 1, strtoull (argv[3], NULL, 10), atof (argv[4]));
  if (!strcmp (cmd, "read-in") && argc == 5)
    return cmd_read (path, 0, strtoull (argv[3], NULL, 10), atof (argv[4]));
  if (!strcmp (cmd, "read-out-unsafe") && argc == 5)
    return cmd_read_unsafe (path, strtoull (argv[3], NULL, 10), atof (argv[4]));
  if (!strcmp (cmd, "dataplane") && argc == 6)
    return cmd_dataplane (path, (uint32_t) strtoul (argv[3], NULL, 10), atof (argv[4]),
			  atof (argv[5]));
  if (!strcmp (cmd, "selftest") && (argc == 4 || argc == 5))
    return cmd_selftest (path, strtoull (argv[3], NULL, 10), argc == 5 ? argv[4] : "2");
  return usage (argv[0]);
}
