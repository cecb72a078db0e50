/*
 * test_shm_util.h — check macros for the shm CTest programs. A program exits
 * 0 iff every CHECK held (each failure is printed with file:line).
 */
#ifndef TEST_SHM_UTIL_H
#define TEST_SHM_UTIL_H

#include <stdio.h>

static int ts_failures = 0;
static int ts_checks = 0;

#define CHECK(cond)                                                                      \
  do                                                                                     \
    {                                                                                    \
      ts_checks++;                                                                       \
      if (!(cond))                                                                       \
	{                                                                                \
	  ts_failures++;                                                                 \
	  fprintf (stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
	}                                                                                \
    }                                                                                    \
  while (0)

#define CHECK_EQ(a, b)                                                                   \
  do                                                                                     \
    {                                                                                    \
      long long _a = (long long) (a), _b = (long long) (b);                              \
      ts_checks++;                                                                       \
      if (_a != _b)                                                                      \
	{                                                                                \
	  ts_failures++;                                                                 \
	  fprintf (stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__,   \
		   __LINE__, #a, #b, _a, _b);                                            \
	}                                                                                \
    }                                                                                    \
  while (0)

static int
ts_report (const char *name)
{
  printf ("%s: %d checks, %d failures\n", name, ts_checks, ts_failures);
  return ts_failures ? 1 : 0;
}

#endif /* TEST_SHM_UTIL_H */
