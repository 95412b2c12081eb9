// The check harness of the C++ tests in tests/cpp (no test framework): a check counter, report(), printf-style
// fmt(), and finish(), the summary line and exit code of main. Each test is its own executable, so the counters are
// per test. CUDA tests include test_util_cuda.h, which adds to this.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <string>

namespace solo_test {

inline int g_checks = 0;
inline int g_failures = 0;

// Counts a check; prints the first 40 failures to stderr.
inline void report(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok && ++g_failures <= 40) std::fprintf(stderr, "FAIL: %s\n", what.c_str());
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
inline std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof(buf), f, ap);
  va_end(ap);
  return buf;
}

// Prints "<name>: N checks, F failures"; returns the exit code of main (non-zero on any failure).
inline int finish(const char* name) {
  std::printf("%s: %d checks, %d failures\n", name, g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}

}  // namespace solo_test
