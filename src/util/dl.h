/* Libraries opened at their first use rather than linked (libldap, libpam: auth/ldapauth.c,
 * auth/pamauth.c): nothing of theirs mapped in a tusk that never needs them. */
#ifndef TUSK_UTIL_DL_H
#define TUSK_UTIL_DL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#define UTIL_DL_ERR_MAX 256

/* dlopen library (RTLD_NOW | RTLD_LOCAL; loaded until exit) and resolve each of the n names
 * into syms[i] (a function's address as dlsym gives it; POSIX guarantees it converts to a
 * function pointer, copied with memcpy). 0, or -1 with "cannot load LIBRARY: why" in err. */
__attribute__((warn_unused_result))
int util_dl_load(const char *library, const char *const *names, void **syms, size_t n, char *err, size_t cap);

/* In a .c file: `lib`, a struct of pointers to the functions FUNCS names (an X-macro over
 * names declared by the library's header: each pointer has its function's type), lib_ok,
 * lib_error and lib_load, which opens LIBRARY and fills lib. Call lib_load through
 * pthread_once(&lib_once, lib_load): written once, read-only afterwards (pthread_once orders it
 * for every thread); then lib_ok, or lib_error says why not. */
#define UTIL_DL_POINTER(f) __typeof__(&f) f;
#define UTIL_DL_NAME(f) #f,
#define UTIL_DL_SET(f) memcpy(&lib.f, &syms[i++], sizeof syms[0]);
#define UTIL_DL_LIBRARY(FUNCS, LIBRARY)                                                                  \
	static struct {                                                                                  \
		FUNCS(UTIL_DL_POINTER)                                                                   \
	} lib;                                                                                           \
	static bool lib_ok;                                                                              \
	static char lib_error[UTIL_DL_ERR_MAX];                                                          \
	static pthread_once_t lib_once = PTHREAD_ONCE_INIT;                                              \
	static void lib_load(void)                                                                       \
	{                                                                                                \
		static const char *const names[] = { FUNCS(UTIL_DL_NAME) };                              \
		void *syms[sizeof names / sizeof names[0]];                                              \
		size_t i = 0;                                                                            \
		if (util_dl_load(LIBRARY, names, syms, sizeof names / sizeof names[0], lib_error,        \
				 sizeof lib_error) < 0)                                                  \
			return;                                                                          \
		FUNCS(UTIL_DL_SET)                                                                       \
		lib_ok = true; /* loaded until exit */                                                   \
	}

#endif
