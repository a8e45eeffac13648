/* USDT probes of tusk's pools and server connections (provider "tusk"). With <sys/sdt.h>
 * (Debian: systemtap-sdt-dev) each is a nop plus an ELF note for bpftrace/perf; without it,
 * or built with TUSK_NO_SDT, nothing. docs/observability.md lists them with their arguments;
 * tests/integration/test_usdt.py checks the binary carries each one. */
#ifndef TUSK_POOL_PROBES_H
#define TUSK_POOL_PROBES_H

#if !defined(TUSK_NO_SDT) && defined(__has_include)
#if __has_include(<sys/sdt.h>)
#include <sys/sdt.h>
#define TUSK_HAVE_SDT 1
#endif
#endif

#ifdef TUSK_HAVE_SDT
#define TUSK_PROBE2(name, a, b) DTRACE_PROBE2(tusk, name, a, b)
#define TUSK_PROBE3(name, a, b, c) DTRACE_PROBE3(tusk, name, a, b, c)
#define TUSK_PROBE4(name, a, b, c, d) DTRACE_PROBE4(tusk, name, a, b, c, d)
#define TUSK_PROBE5(name, a, b, c, d, e) DTRACE_PROBE5(tusk, name, a, b, c, d, e)
#else
#define TUSK_PROBE2(name, a, b) do { (void)(a); (void)(b); } while (0)
#define TUSK_PROBE3(name, a, b, c) do { (void)(a); (void)(b); (void)(c); } while (0)
#define TUSK_PROBE4(name, a, b, c, d) do { (void)(a); (void)(b); (void)(c); (void)(d); } while (0)
#define TUSK_PROBE5(name, a, b, c, d, e) do { (void)(a); (void)(b); (void)(c); (void)(d); (void)(e); } while (0)
#endif

/* claim__done results */
enum tusk_probe_claim {
	TUSK_CLAIM_SERVER = 0,  /* an idle server */
	TUSK_CLAIM_CONNECT = 1, /* room for a new connection */
	TUSK_CLAIM_DOWN = -1,   /* failed fast: the backend is backed off */
	TUSK_CLAIM_GAVE_UP = -2, /* left the queue (pool_wait_timeout, or the client went away) */
};
/* backend__state states */
enum tusk_probe_backend {
	TUSK_BACKEND_UP = 0,
	TUSK_BACKEND_DOWN = 1, /* connects backed off */
	TUSK_BACKEND_FULL = 2, /* 53300: capped at the servers it has */
};

#endif
