/*
 * lb_rl_shm_layout — print the shm layout as the C compiler sees it, as JSON:
 * constants, sizeof of every struct, offsetof of every field, and the strides
 * and size for the parameters given on the command line. tests/shm pins
 * simulator/shm.py against this output.
 *
 *   lb_rl_shm_layout [max_servers reservoir_slots out_ring_len in_ring_len]
 */
#define _POSIX_C_SOURCE 200809L
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "lb_rl_shm.h"

#define FIELD(type, f)                                                                   \
  printf ("%s\"%s\": [%zu, %zu]", first ? "" : ", ", #f, offsetof (type, f),             \
	  sizeof (((type *) 0)->f));                                                     \
  first = 0

int
main (int argc, char **argv)
{
  lb_rl_shm_params_t p;
  int first;
  lb_rl_shm_params_default (&p);
  if (argc == 5)
    {
      p.max_servers = (uint32_t) strtoul (argv[1], NULL, 10);
      p.reservoir_slots = (uint32_t) strtoul (argv[2], NULL, 10);
      p.out_ring_len = (uint32_t) strtoul (argv[3], NULL, 10);
      p.in_ring_len = (uint32_t) strtoul (argv[4], NULL, 10);
    }
  else if (argc != 1)
    {
      fprintf (stderr, "usage: %s [max_servers reservoir_slots out_ring_len in_ring_len]\n",
	       argv[0]);
      return 2;
    }
  printf ("{\"constants\": {\"LB_RL_SHM_MAGIC\": %llu, \"LB_RL_SHM_VERSION\": %d, "
	  "\"LB_RL_SHM_HEADER_SIZE\": %d, \"LB_RL_SHM_ALIGN\": %d, "
	  "\"LB_RL_SHM_MAX_RES_SLOTS\": %d, \"LB_RL_SHM_MIN_RING\": %d, "
	  "\"LB_RL_SHM_MAX_RING\": %d, \"LB_RL_SHM_OUT_FRAME_HDR_SIZE\": %d, "
	  "\"LB_RL_SHM_SERVER_SIZE\": %d, \"LB_RL_SHM_IN_FRAME_HDR_SIZE\": %d, "
	  "\"LB_RL_SHM_OUT_ACTIVE_OFFSET\": %d, "
	  "\"LB_RL_SHM_PAYLOAD_OFFSET\": %d, \"LB_RL_MAX_SERVERS\": %d, \"LB_RL_N_RES\": %d, "
	  "\"LB_RL_DEFAULT_MAX_SERVERS\": %d, "
	  "\"LB_RL_SHM_DEFAULT_FALLBACK_MS\": %d},\n",
	  (unsigned long long) LB_RL_SHM_MAGIC, LB_RL_SHM_VERSION, LB_RL_SHM_HEADER_SIZE,
	  LB_RL_SHM_ALIGN, LB_RL_SHM_MAX_RES_SLOTS, LB_RL_SHM_MIN_RING, LB_RL_SHM_MAX_RING,
	  LB_RL_SHM_OUT_FRAME_HDR_SIZE, LB_RL_SHM_SERVER_SIZE, LB_RL_SHM_IN_FRAME_HDR_SIZE,
	  LB_RL_SHM_OUT_ACTIVE_OFFSET, LB_RL_SHM_PAYLOAD_OFFSET, LB_RL_MAX_SERVERS,
	  (int) LB_RL_N_RES, LB_RL_DEFAULT_MAX_SERVERS, LB_RL_SHM_DEFAULT_FALLBACK_MS);
  printf (" \"sizeof\": {\"header\": %zu, \"status\": %zu, \"out_frame\": %zu, \"server\": %zu, "
	  "\"in_frame\": %zu, \"sample\": %zu},\n",
	  sizeof (lb_rl_shm_header_t), sizeof (lb_rl_shm_status_t),
	  sizeof (lb_rl_shm_out_frame_t), sizeof (lb_rl_shm_server_t),
	  sizeof (lb_rl_shm_in_frame_t), sizeof (lb_rl_sample_t));

  printf (" \"header\": {");
  first = 1;
  FIELD (lb_rl_shm_header_t, magic);
  FIELD (lb_rl_shm_header_t, version);
  FIELD (lb_rl_shm_header_t, header_size);
  FIELD (lb_rl_shm_header_t, total_size);
  FIELD (lb_rl_shm_header_t, max_servers);
  FIELD (lb_rl_shm_header_t, reservoir_slots);
  FIELD (lb_rl_shm_header_t, out_ring_len);
  FIELD (lb_rl_shm_header_t, in_ring_len);
  FIELD (lb_rl_shm_header_t, out_ring_offset);
  FIELD (lb_rl_shm_header_t, out_frame_stride);
  FIELD (lb_rl_shm_header_t, in_ring_offset);
  FIELD (lb_rl_shm_header_t, in_frame_stride);
  FIELD (lb_rl_shm_header_t, out_servers_offset);
  FIELD (lb_rl_shm_header_t, out_samples_offset);
  FIELD (lb_rl_shm_header_t, writer_pid);
  FIELD (lb_rl_shm_header_t, writer_start_wall_s);
  FIELD (lb_rl_shm_header_t, agent_pid);
  FIELD (lb_rl_shm_header_t, agent_start_wall_s);
  FIELD (lb_rl_shm_header_t, out_seq_latest);
  FIELD (lb_rl_shm_header_t, in_seq_latest);
  FIELD (lb_rl_shm_header_t, status);
  printf ("},\n \"status\": {");
  first = 1;
  FIELD (lb_rl_shm_status_t, gen);
  FIELD (lb_rl_shm_status_t, in_seq_applied);
  FIELD (lb_rl_shm_status_t, in_seq_seen);
  FIELD (lb_rl_shm_status_t, weights_accepted);
  FIELD (lb_rl_shm_status_t, weights_rejected);
  FIELD (lb_rl_shm_status_t, last_verdict);
  FIELD (lb_rl_shm_status_t, fallback_active);
  FIELD (lb_rl_shm_status_t, fallback_count);
  FIELD (lb_rl_shm_status_t, last_accept_time_s);
  FIELD (lb_rl_shm_status_t, last_accept_wall_s);
  FIELD (lb_rl_shm_status_t, fallback_timeout_s);
  FIELD (lb_rl_shm_status_t, last_in_advance_time_s);
  FIELD (lb_rl_shm_status_t, reserved);
  printf ("},\n \"out_frame\": {");
  first = 1;
  FIELD (lb_rl_shm_out_frame_t, seq);
  FIELD (lb_rl_shm_out_frame_t, checksum);
  FIELD (lb_rl_shm_out_frame_t, time_s);
  FIELD (lb_rl_shm_out_frame_t, wall_s);
  FIELD (lb_rl_shm_out_frame_t, n_active);
  FIELD (lb_rl_shm_out_frame_t, active_words);
  FIELD (lb_rl_shm_out_frame_t, in_seq_applied);
  FIELD (lb_rl_shm_out_frame_t, n_servers);
  FIELD (lb_rl_shm_out_frame_t, reservoir_slots);
  FIELD (lb_rl_shm_out_frame_t, fallback_active);
  FIELD (lb_rl_shm_out_frame_t, tracked_flows);
  FIELD (lb_rl_shm_out_frame_t, packets);
  FIELD (lb_rl_shm_out_frame_t, new_flows);
  FIELD (lb_rl_shm_out_frame_t, untracked_full);
  FIELD (lb_rl_shm_out_frame_t, untracked_miss);
  FIELD (lb_rl_shm_out_frame_t, flows_lost);
  FIELD (lb_rl_shm_out_frame_t, timeouts);
  FIELD (lb_rl_shm_out_frame_t, no_server);
  FIELD (lb_rl_shm_out_frame_t, weight_updates);
  printf ("},\n \"server\": {");
  first = 1;
  FIELD (lb_rl_shm_server_t, n_flow_on);
  FIELD (lb_rl_shm_server_t, n_flow_new);
  FIELD (lb_rl_shm_server_t, n_flow_closed);
  FIELD (lb_rl_shm_server_t, n_flow_timeout);
  FIELD (lb_rl_shm_server_t, packets);
  FIELD (lb_rl_shm_server_t, bytes);
  FIELD (lb_rl_shm_server_t, n_samples);
  FIELD (lb_rl_shm_server_t, weight);
  FIELD (lb_rl_shm_server_t, fill);
  FIELD (lb_rl_shm_server_t, n_flow_pending);
  FIELD (lb_rl_shm_server_t, n_flow_untracked);
  printf ("},\n \"in_frame\": {");
  first = 1;
  FIELD (lb_rl_shm_in_frame_t, seq);
  FIELD (lb_rl_shm_in_frame_t, checksum);
  FIELD (lb_rl_shm_in_frame_t, time_s);
  FIELD (lb_rl_shm_in_frame_t, wall_s);
  FIELD (lb_rl_shm_in_frame_t, n);
  FIELD (lb_rl_shm_in_frame_t, flags);
  FIELD (lb_rl_shm_in_frame_t, reserved);
  /* flexible array: offset only (its size is S * 8) */
  printf (", \"weights\": [%zu, 8]", offsetof (lb_rl_shm_in_frame_t, weights));
  printf ("},\n \"sample\": {");
  first = 1;
  FIELD (lb_rl_sample_t, t);
  FIELD (lb_rl_sample_t, v);
  {
    /* format a region in memory and report what the header says */
    uint64_t size = lb_rl_shm_size (&p);
    void *mem = NULL;
    const lb_rl_shm_header_t *h;
    if (!size || posix_memalign (&mem, 64, size) != 0 || lb_rl_shm_format (mem, size, &p) != 0)
      {
	printf ("}}\n");
	fprintf (stderr, "bad params: %s\n", lb_rl_shm_last_error ());
	return 1;
      }
    h = mem;
    printf ("},\n \"params\": {\"max_servers\": %u, \"reservoir_slots\": %u, "
	    "\"out_ring_len\": %u, \"in_ring_len\": %u, \"out_frame_stride\": %llu, "
	    "\"out_servers_offset\": %u, \"out_samples_offset\": %u, "
	    "\"out_ring_offset\": %llu, \"in_ring_offset\": %llu, \"in_frame_stride\": %llu, "
	    "\"total_size\": %llu}}\n",
	    h->max_servers, h->reservoir_slots, h->out_ring_len, h->in_ring_len,
	    (unsigned long long) h->out_frame_stride, h->out_servers_offset,
	    h->out_samples_offset, (unsigned long long) h->out_ring_offset,
	    (unsigned long long) h->in_ring_offset, (unsigned long long) h->in_frame_stride,
	    (unsigned long long) h->total_size);
    free (mem);
  }
  return 0;
}
