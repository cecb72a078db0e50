/* gen_program.c — parser, packet builder and scheduler of mlb_gen, see gen_program.h. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen_program.h"

#define GEN_MAX_TOKENS 8

typedef struct
{
  const char *path;
  uint32_t line;
  char *err;
  size_t errlen;
} gen_parse_t;

static int
gen_fail (gen_parse_t *ps, uint32_t line, const char *fmt, ...)
{
  va_list ap;
  int n = line ? snprintf (ps->err, ps->errlen, "%s:%u: ", ps->path, line)
	       : snprintf (ps->err, ps->errlen, "%s: ", ps->path);
  if (n < 0 || (size_t) n >= ps->errlen)
    return -1;
  va_start (ap, fmt);
  vsnprintf (ps->err + n, ps->errlen - (size_t) n, fmt, ap);
  va_end (ap);
  for (char *c = ps->err + n; *c; c++) /* one ASCII line, whatever bytes a bad token held */
    if ((unsigned char) *c < 0x20 || (unsigned char) *c >= 0x7f)
      *c = '?';
  return -1;
}

/* ---- numbers: the whole token, decimal, in range ---- */

static int
gen_parse_u64 (const char *tok, uint64_t *v)
{
  char *end;
  if (!*tok || *tok == '-' || *tok == '+' || *tok == ' ')
    return -1;
  errno = 0;
  *v = strtoull (tok, &end, 10);
  return (errno || *end) ? -1 : 0;
}

static int
gen_parse_i64 (const char *tok, int64_t *v)
{
  char *end;
  if (!*tok)
    return -1;
  errno = 0;
  *v = strtoll (tok, &end, 10);
  return (errno || *end) ? -1 : 0;
}

static int
gen_parse_double (const char *tok, double *v)
{
  char *end;
  if (!*tok)
    return -1;
  errno = 0;
  *v = strtod (tok, &end);
  return (errno || *end || !isfinite (*v)) ? -1 : 0;
}

static int
gen_hex_nibble (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static uint32_t
gen_be16 (const uint8_t *p)
{
  return (uint32_t) p[0] << 8 | p[1];
}

/* ---- records ---- */

static int
gen_parse_stream (gen_parse_t *ps, gen_stream_t *s, char **tok, int nt)
{
  uint64_t count, latency;
  size_t hexlen, i;
  double start_s;

  if (nt != 7)
    return gen_fail (ps, ps->line,
		     "stream: expected 6 fields (NAME RATE_PPS START_S COUNT LATENCY HEX), got %d",
		     nt - 1);
  memset (s, 0, sizeof *s);
  s->line = ps->line;
  s->fix_ip = s->fix_l4_l3 = -1;
  if (strlen (tok[1]) >= GEN_NAME_MAX)
    return gen_fail (ps, ps->line, "stream: name longer than %d bytes", GEN_NAME_MAX - 1);
  strcpy (s->name, tok[1]);
  if (gen_parse_double (tok[2], &s->rate_pps) < 0 || s->rate_pps < 0)
    return gen_fail (ps, ps->line, "stream %s: bad number '%s' for RATE_PPS (a rate >= 0)",
		     s->name, tok[2]);
  if (gen_parse_double (tok[3], &start_s) < 0 || start_s < 0 || start_s > 1e9)
    return gen_fail (ps, ps->line, "stream %s: bad number '%s' for START_S (seconds >= 0)",
		     s->name, tok[3]);
  s->start_ns = (int64_t) llround (start_s * 1e9);
  if (gen_parse_u64 (tok[4], &count) < 0)
    return gen_fail (ps, ps->line, "stream %s: bad number '%s' for COUNT (an integer >= 0)",
		     s->name, tok[4]);
  s->count = count;
  if (gen_parse_u64 (tok[5], &latency) < 0 || latency > 1)
    return gen_fail (ps, ps->line, "stream %s: bad LATENCY '%s' (0 or 1)", s->name, tok[5]);
  s->latency = (int) latency;
  hexlen = strlen (tok[6]);
  if (hexlen % 2)
    return gen_fail (ps, ps->line, "stream %s: odd number of hex digits (%zu) in the packet",
		     s->name, hexlen);
  if (hexlen / 2 < GEN_MIN_FRAME || hexlen / 2 > GEN_MAX_FRAME)
    return gen_fail (ps, ps->line, "stream %s: packet of %zu bytes (expected %d..%d)", s->name,
		     hexlen / 2, GEN_MIN_FRAME, GEN_MAX_FRAME);
  s->len = (uint32_t) (hexlen / 2);
  s->packet = malloc (s->len);
  if (!s->packet)
    return gen_fail (ps, ps->line, "out of memory");
  for (i = 0; i < s->len; i++)
    {
      int hi = gen_hex_nibble (tok[6][2 * i]), lo = gen_hex_nibble (tok[6][2 * i + 1]);
      if (hi < 0 || lo < 0)
	return gen_fail (ps, ps->line, "stream %s: bad hex digit at packet byte %zu", s->name, i);
      s->packet[i] = (uint8_t) (hi << 4 | lo);
    }
  return 0;
}

static int
gen_parse_var (gen_parse_t *ps, gen_stream_t *s, char **tok, int nt)
{
  uint64_t offset, size, min, max, init, limit;
  int64_t step, span, init_off;
  gen_var_t *v;

  if (nt != 7)
    return gen_fail (ps, ps->line,
		     "var: expected 6 fields (OFFSET SIZE MIN MAX STEP INIT), got %d", nt - 1);
  if (s->n_vars == GEN_MAX_VARS)
    return gen_fail (ps, ps->line, "stream %s: more than %d vars", s->name, GEN_MAX_VARS);
  if (gen_parse_u64 (tok[1], &offset) < 0)
    return gen_fail (ps, ps->line, "var: bad number '%s' for OFFSET", tok[1]);
  if (gen_parse_u64 (tok[2], &size) < 0 || (size != 1 && size != 2 && size != 4))
    return gen_fail (ps, ps->line, "var: SIZE '%s' is not 1, 2 or 4", tok[2]);
  if (offset + size > s->len)
    return gen_fail (ps, ps->line,
		     "var: bytes %llu..%llu are outside the %u-byte packet of stream %s",
		     (unsigned long long) offset, (unsigned long long) (offset + size - 1), s->len,
		     s->name);
  limit = size == 4 ? 0xffffffffull : (1ull << (8 * size)) - 1;
  if (gen_parse_u64 (tok[3], &min) < 0)
    return gen_fail (ps, ps->line, "var: bad number '%s' for MIN", tok[3]);
  if (gen_parse_u64 (tok[4], &max) < 0)
    return gen_fail (ps, ps->line, "var: bad number '%s' for MAX", tok[4]);
  if (gen_parse_i64 (tok[5], &step) < 0)
    return gen_fail (ps, ps->line, "var: bad number '%s' for STEP", tok[5]);
  if (gen_parse_u64 (tok[6], &init) < 0)
    return gen_fail (ps, ps->line, "var: bad number '%s' for INIT", tok[6]);
  if (min > limit || max > limit || init > limit)
    return gen_fail (ps, ps->line, "var: value %llu does not fit in %llu byte%s (max %llu)",
		     (unsigned long long) (min > limit ? min : max > limit ? max : init),
		     (unsigned long long) size, size > 1 ? "s" : "", (unsigned long long) limit);
  if (min > max)
    return gen_fail (ps, ps->line, "var: MIN %llu > MAX %llu", (unsigned long long) min,
		     (unsigned long long) max);
  v = &s->vars[s->n_vars++];
  v->offset = (uint32_t) offset;
  v->size = (uint32_t) size;
  v->line = ps->line;
  v->min = min;
  v->span = max - min + 1;
  /* Python's % is a floor modulo: normalise step and init - min into 0..span-1 */
  span = (int64_t) v->span;
  v->step = (uint64_t) (((step % span) + span) % span);
  init_off = ((int64_t) init - (int64_t) min) % span;
  v->init = (uint64_t) (init_off < 0 ? init_off + span : init_off);
  return 0;
}

static int
gen_parse_fixip (gen_parse_t *ps, gen_stream_t *s, char **tok, int nt)
{
  uint64_t l3;
  uint32_t ihl;

  if (nt != 2)
    return gen_fail (ps, ps->line, "fixip: expected 1 field (L3), got %d", nt - 1);
  if (s->fix_ip >= 0)
    return gen_fail (ps, ps->line, "stream %s: a second fixip", s->name);
  if (gen_parse_u64 (tok[1], &l3) < 0)
    return gen_fail (ps, ps->line, "fixip: bad number '%s' for L3", tok[1]);
  if (l3 + 20 > s->len)
    return gen_fail (ps, ps->line, "fixip: an IPv4 header at %llu is outside the %u-byte packet",
		     (unsigned long long) l3, s->len);
  ihl = (s->packet[l3] & 0x0f) * 4u;
  if (s->packet[l3] >> 4 != 4 || ihl < 20 || l3 + ihl > s->len)
    return gen_fail (ps, ps->line, "fixip: no IPv4 header at %llu (first byte 0x%02x)",
		     (unsigned long long) l3, s->packet[l3]);
  s->fix_ip = (int) l3;
  s->fix_line = ps->line;
  return 0;
}

static int
gen_parse_fixl4 (gen_parse_t *ps, gen_stream_t *s, char **tok, int nt)
{
  uint64_t l3, l4, proto;
  uint32_t total, ck;

  if (nt != 4)
    return gen_fail (ps, ps->line, "fixl4: expected 3 fields (L3 L4 PROTO), got %d", nt - 1);
  if (s->fix_l4_l3 >= 0)
    return gen_fail (ps, ps->line, "stream %s: a second fixl4", s->name);
  if (gen_parse_u64 (tok[1], &l3) < 0)
    return gen_fail (ps, ps->line, "fixl4: bad number '%s' for L3", tok[1]);
  if (gen_parse_u64 (tok[2], &l4) < 0)
    return gen_fail (ps, ps->line, "fixl4: bad number '%s' for L4", tok[2]);
  if (gen_parse_u64 (tok[3], &proto) < 0 || (proto != 6 && proto != 17))
    return gen_fail (ps, ps->line, "fixl4: PROTO '%s' is not 6 (TCP) or 17 (UDP)", tok[3]);
  if (l3 + 20 > s->len)
    return gen_fail (ps, ps->line, "fixl4: an IPv4 header at %llu is outside the %u-byte packet",
		     (unsigned long long) l3, s->len);
  total = gen_be16 (s->packet + l3 + 2);
  ck = proto == 6 ? 16 : 6;
  if (l3 + total > s->len)
    return gen_fail (ps, ps->line, "fixl4: IPv4 total length %u at %llu runs past the %u-byte packet",
		     total, (unsigned long long) l3, s->len);
  if (l4 < l3 + 20 || l4 + ck + 2 > l3 + total)
    return gen_fail (ps, ps->line,
		     "fixl4: no %s header at %llu inside the IPv4 packet (bytes %llu..%llu)",
		     proto == 6 ? "TCP" : "UDP", (unsigned long long) l4, (unsigned long long) l3,
		     (unsigned long long) (l3 + total - 1));
  s->fix_l4_l3 = (int) l3;
  s->fix_l4_l4 = (int) l4;
  s->fix_l4_proto = (int) proto;
  s->fix_line = ps->line;
  return 0;
}

/* Checks that need the whole stream: the fixes read the IPv4 version/IHL and total
 * length bytes of the template, so no var may write them. */
static int
gen_finish_stream (gen_parse_t *ps, const gen_stream_t *s)
{
  int l3s[2] = { s->fix_ip, s->fix_l4_l3 };
  for (uint32_t i = 0; i < s->n_vars; i++)
    for (int k = 0; k < 2; k++)
      {
	const gen_var_t *v = &s->vars[i];
	if (l3s[k] < 0)
	  continue;
	if (v->offset < (uint32_t) l3s[k] + 4 && v->offset + v->size > (uint32_t) l3s[k])
	  return gen_fail (ps, v->line > s->fix_line ? v->line : s->fix_line,
			   "stream %s: var at bytes %u..%u overlaps the IPv4 version/length "
			   "bytes %d..%d that %s reads",
			   s->name, v->offset, v->offset + v->size - 1, l3s[k], l3s[k] + 3,
			   k == 0 ? "fixip" : "fixl4");
      }
  return 0;
}

static int
gen_tokenize (char *line, char **tok)
{
  int n = 0;
  char *p = line;
  for (;;)
    {
      while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
	*p++ = 0;
      if (!*p)
	return n;
      if (n < GEN_MAX_TOKENS) /* more are counted, not kept: callers report the count */
	tok[n] = p;
      n++;
      while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
	p++;
    }
}

void
gen_program_free (gen_program_t *p)
{
  for (uint32_t i = 0; i < p->n_streams; i++)
    free (p->streams[i].packet);
  free (p->streams);
  p->streams = NULL;
  p->n_streams = 0;
}

int
gen_program_load (gen_program_t *p, const char *path, char *err, size_t errlen)
{
  gen_parse_t ps = { path, 0, err, errlen };
  char *line = NULL, *tok[GEN_MAX_TOKENS];
  size_t cap = 0, n_cap = 0;
  gen_stream_t *cur = NULL;
  FILE *f;
  int rc = -1;

  memset (p, 0, sizeof *p);
  f = fopen (path, "r");
  if (!f)
    return gen_fail (&ps, 0, "cannot read the program: %s", strerror (errno));
  while (getline (&line, &cap, f) >= 0)
    {
      int nt;
      ps.line++;
      nt = gen_tokenize (line, tok);
      if (nt == 0 || tok[0][0] == '#')
	continue;
      if (!strcmp (tok[0], "stream"))
	{
	  if (cur && gen_finish_stream (&ps, cur) < 0)
	    goto done;
	  if (p->n_streams == n_cap)
	    {
	      size_t nc = n_cap ? 2 * n_cap : 8;
	      gen_stream_t *ns = realloc (p->streams, nc * sizeof *ns);
	      if (!ns)
		{
		  gen_fail (&ps, ps.line, "out of memory");
		  goto done;
		}
	      p->streams = ns;
	      n_cap = nc;
	    }
	  cur = &p->streams[p->n_streams];
	  memset (cur, 0, sizeof *cur);
	  p->n_streams++; /* counted before parsing so that free() sees its packet */
	  if (gen_parse_stream (&ps, cur, tok, nt) < 0)
	    goto done;
	  if (cur->len > p->max_len)
	    p->max_len = cur->len;
	  continue;
	}
      if (strcmp (tok[0], "var") && strcmp (tok[0], "fixip") && strcmp (tok[0], "fixl4"))
	{
	  gen_fail (&ps, ps.line, "unknown keyword '%.40s' (expected stream, var, fixip, fixl4)",
		    tok[0]);
	  goto done;
	}
      if (!cur)
	{
	  gen_fail (&ps, ps.line, "%s before the first stream", tok[0]);
	  goto done;
	}
      if ((!strcmp (tok[0], "var") && gen_parse_var (&ps, cur, tok, nt) < 0)
	  || (!strcmp (tok[0], "fixip") && gen_parse_fixip (&ps, cur, tok, nt) < 0)
	  || (!strcmp (tok[0], "fixl4") && gen_parse_fixl4 (&ps, cur, tok, nt) < 0))
	goto done;
    }
  if (ferror (f))
    {
      gen_fail (&ps, ps.line, "read error: %s", strerror (errno));
      goto done;
    }
  if (cur && gen_finish_stream (&ps, cur) < 0)
    goto done;
  if (p->n_streams == 0)
    {
      gen_fail (&ps, ps.line ? ps.line : 1, "no stream in the program");
      goto done;
    }
  rc = 0;
done:
  free (line);
  fclose (f);
  if (rc < 0)
    gen_program_free (p);
  return rc;
}

/* ---- packets ---- */

static uint32_t
gen_csum_fold (uint64_t sum)
{
  while (sum >> 16)
    sum = (sum & 0xffff) + (sum >> 16);
  return (uint32_t) (~sum & 0xffff);
}

static uint64_t
gen_csum_add (uint64_t sum, const uint8_t *d, uint32_t len)
{
  uint32_t i;
  for (i = 0; i + 1 < len; i += 2)
    sum += (uint32_t) d[i] << 8 | d[i + 1];
  if (len & 1)
    sum += (uint32_t) d[len - 1] << 8;
  return sum;
}

uint32_t
gen_build (const gen_stream_t *s, uint64_t n, uint8_t *out)
{
  memcpy (out, s->packet, s->len);
  for (uint32_t i = 0; i < s->n_vars; i++)
    {
      const gen_var_t *v = &s->vars[i];
      uint64_t val = v->min + (v->init + (n % v->span) * v->step) % v->span;
      uint8_t *p = out + v->offset;
      for (uint32_t b = v->size; b-- > 0; val >>= 8)
	p[b] = (uint8_t) val;
    }
  if (s->fix_ip >= 0)
    {
      uint8_t *ip = out + s->fix_ip;
      uint32_t c;
      ip[10] = ip[11] = 0;
      c = gen_csum_fold (gen_csum_add (0, ip, (ip[0] & 0x0fu) * 4));
      ip[10] = (uint8_t) (c >> 8);
      ip[11] = (uint8_t) c;
    }
  if (s->fix_l4_l3 >= 0)
    {
      const uint8_t *ip = out + s->fix_l4_l3;
      uint8_t *l4 = out + s->fix_l4_l4;
      uint32_t seg = (uint32_t) s->fix_l4_l3 + gen_be16 (ip + 2) - (uint32_t) s->fix_l4_l4;
      uint8_t *ck = l4 + (s->fix_l4_proto == 6 ? 16 : 6);
      uint64_t sum;
      uint32_t c;
      ck[0] = ck[1] = 0;
      sum = gen_csum_add (0, ip + 12, 8) + (uint32_t) s->fix_l4_proto + seg;
      c = gen_csum_fold (gen_csum_add (sum, l4, seg));
      if (s->fix_l4_proto == 17 && c == 0)
	c = 0xffff;
      ck[0] = (uint8_t) (c >> 8);
      ck[1] = (uint8_t) c;
    }
  return s->len;
}

/* ---- schedule ---- */

int64_t
gen_due_ns (int64_t start_ns, double rate_eff, uint64_t n)
{
  double d;
  if (!(rate_eff > 0))
    return INT64_MAX;
  d = (double) n * 1e9 / rate_eff; /* n * 1e9 first: equal exact due times stay equal */
  if (d >= 9.0e18 - (double) start_ns)
    return INT64_MAX;
  return start_ns + (int64_t) floor (d);
}

static void
gen_sched_advance (gen_sched_t *s, uint32_t k)
{
  const gen_stream_t *st = &s->prog->streams[k];
  if (st->count && s->next[k] >= st->count)
    s->next_due[k] = INT64_MAX;
  else
    s->next_due[k] = gen_due_ns (st->start_ns, s->rate_eff[k], s->next[k]);
}

int
gen_sched_init (gen_sched_t *s, const gen_program_t *p, double mult)
{
  memset (s, 0, sizeof *s);
  s->prog = p;
  s->rate_eff = calloc (p->n_streams, sizeof *s->rate_eff);
  s->next = calloc (p->n_streams, sizeof *s->next);
  s->next_due = calloc (p->n_streams, sizeof *s->next_due);
  if (!s->rate_eff || !s->next || !s->next_due)
    {
      gen_sched_free (s);
      return -1;
    }
  for (uint32_t k = 0; k < p->n_streams; k++)
    {
      s->rate_eff[k] = p->streams[k].rate_pps * mult;
      gen_sched_advance (s, k);
    }
  return 0;
}

void
gen_sched_free (gen_sched_t *s)
{
  free (s->rate_eff);
  free (s->next);
  free (s->next_due);
  s->rate_eff = NULL;
  s->next = NULL;
  s->next_due = NULL;
}

/* A linear scan per packet: programs have a handful of streams (a heap would pay
 * off only from a few dozen). */
uint32_t
gen_sched_take (gen_sched_t *s, int64_t now_ns, uint32_t max, gen_due_t *out)
{
  uint32_t n = 0, ns = s->prog->n_streams;
  while (n < max)
    {
      uint32_t best = 0;
      int64_t due = INT64_MAX;
      for (uint32_t k = 0; k < ns; k++)
	if (s->next_due[k] < due)
	  {
	    due = s->next_due[k];
	    best = k;
	  }
      if (due == INT64_MAX || due > now_ns)
	break;
      out[n].stream = best;
      out[n].seq = s->next[best]++;
      out[n].due_ns = due;
      n++;
      gen_sched_advance (s, best);
    }
  return n;
}

int64_t
gen_sched_next_due (const gen_sched_t *s)
{
  int64_t due = INT64_MAX;
  for (uint32_t k = 0; k < s->prog->n_streams; k++)
    if (s->next_due[k] < due)
      due = s->next_due[k];
  return due;
}

uint64_t
gen_sched_due_before (const gen_sched_t *s, uint32_t k, int64_t t_ns)
{
  const gen_stream_t *st = &s->prog->streams[k];
  double r = s->rate_eff[k], est;
  uint64_t n;
  if (!(r > 0) || t_ns <= st->start_ns)
    return 0;
  est = ceil ((double) (t_ns - st->start_ns) * r / 1e9);
  if (st->count && est > (double) st->count)
    est = (double) st->count;
  n = (uint64_t) est;
  /* the estimate may be one off either way: settle it on gen_due_ns itself */
  while (n > 0 && gen_due_ns (st->start_ns, r, n - 1) >= t_ns)
    n--;
  while ((!st->count || n < st->count) && gen_due_ns (st->start_ns, r, n) < t_ns)
    n++;
  return n;
}
