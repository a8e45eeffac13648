/* USDT probes of the pool core (provider "tuskpool"). With <sys/sdt.h> (Debian:
 * systemtap-sdt-dev) each probe is a nop plus an ELF note that bpftrace/perf/systemtap can
 * attach to; without it, or with TUSK_NO_SDT, they compile to nothing. docs/observability.md
 * lists them with their arguments. */
#ifndef TUSK_POOL_CORE_TP_PROBES_H
#define TUSK_POOL_CORE_TP_PROBES_H

#if !defined(TUSK_NO_SDT) && defined(__has_include)
#if __has_include(<sys/sdt.h>)
#include <sys/sdt.h>
#define TP_HAVE_SDT 1
#endif
#endif

#ifdef TP_HAVE_SDT
#define TP_PROBE2(name, a, b) DTRACE_PROBE2(tuskpool, name, a, b)
#define TP_PROBE3(name, a, b, c) DTRACE_PROBE3(tuskpool, name, a, b, c)
#define TP_PROBE4(name, a, b, c, d) DTRACE_PROBE4(tuskpool, name, a, b, c, d)
#define TP_PROBE5(name, a, b, c, d, e) DTRACE_PROBE5(tuskpool, name, a, b, c, d, e)
#else
#define TP_PROBE2(name, a, b) do { (void)(a); (void)(b); } while (0)
#define TP_PROBE3(name, a, b, c) do { (void)(a); (void)(b); (void)(c); } while (0)
#define TP_PROBE4(name, a, b, c, d) do { (void)(a); (void)(b); (void)(c); (void)(d); } while (0)
#define TP_PROBE5(name, a, b, c, d, e) do { (void)(a); (void)(b); (void)(c); (void)(d); (void)(e); } while (0)
#endif

#endif
