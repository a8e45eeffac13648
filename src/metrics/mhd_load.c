/* libmicrohttpd, loaded when admin.http starts. Linking it maps it and GnuTLS (with
 * p11-kit) into every tusk, most of which never serve HTTP: over 1 MB of RSS at start
 * (docs/performance.md). This file defines the MHD functions metrics.c calls, under their
 * own names (metrics.c is unchanged), and forwards them to libmicrohttpd.so.12 opened with
 * dlopen on the first call. When it cannot be opened, MHD_start_daemon logs why and
 * returns NULL, and admin.http fails to start as for any other reason. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>

#include <microhttpd.h>

#include "metrics/metrics.h"
#include "util/log.h"

#define MHD_LIBRARY "libmicrohttpd.so.12"

#define MHD_FUNCTIONS(X)                                                                                     \
	X(MHD_start_daemon_va) X(MHD_stop_daemon) X(MHD_create_response_from_buffer) X(MHD_add_response_header) \
	X(MHD_queue_response) X(MHD_destroy_response)

/* Written once under mhd_once, read-only afterwards (pthread_once orders it for every
 * thread that calls mhd_loaded, MHD's own polling thread included). */
static struct {
#define MHD_POINTER(f) __typeof__(&f) f;
	MHD_FUNCTIONS(MHD_POINTER)
#undef MHD_POINTER
} mhd;
static bool mhd_ok;
static pthread_once_t mhd_once = PTHREAD_ONCE_INIT;

static void mhd_load(void)
{
	void *lib = dlopen(MHD_LIBRARY, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		log_error(NULL, NULL, "cannot load %s: %s", MHD_LIBRARY, dlerror());
		return;
	}
	/* dlsym gives an object pointer; POSIX guarantees it converts to a function pointer. */
#define MHD_RESOLVE(f)                                                                              \
	{                                                                                           \
		void *sym = dlsym(lib, #f);                                                         \
		if (!sym) {                                                                         \
			log_error(NULL, NULL, "cannot load %s: no symbol %s", MHD_LIBRARY, #f);   \
			return;                                                                     \
		}                                                                                   \
		memcpy(&mhd.f, &sym, sizeof sym);                                                   \
	}
	MHD_FUNCTIONS(MHD_RESOLVE)
#undef MHD_RESOLVE
	mhd_ok = true; /* the library stays loaded until exit */
}

static bool mhd_loaded(void)
{
	pthread_once(&mhd_once, mhd_load);
	return mhd_ok;
}

bool metrics_load_library(void)
{
	return mhd_loaded();
}

/* Only MHD_start_daemon can be called before the library is loaded; the others need a
 * daemon, a connection or a response that only a loaded library has made. */

struct MHD_Daemon *MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc, void *apc_cls,
				    MHD_AccessHandlerCallback dh, void *dh_cls, ...)
{
	if (!mhd_loaded())
		return NULL;
	va_list ap;
	va_start(ap, dh_cls);
	struct MHD_Daemon *d = mhd.MHD_start_daemon_va(flags, port, apc, apc_cls, dh, dh_cls, ap);
	va_end(ap);
	return d;
}

void MHD_stop_daemon(struct MHD_Daemon *daemon)
{
	if (daemon && mhd_loaded())
		mhd.MHD_stop_daemon(daemon);
}

struct MHD_Response *MHD_create_response_from_buffer(size_t size, void *buffer, enum MHD_ResponseMemoryMode mode)
{
	return mhd_loaded() ? mhd.MHD_create_response_from_buffer(size, buffer, mode) : NULL;
}

enum MHD_Result MHD_add_response_header(struct MHD_Response *response, const char *header, const char *content)
{
	return mhd_loaded() ? mhd.MHD_add_response_header(response, header, content) : MHD_NO;
}

enum MHD_Result MHD_queue_response(struct MHD_Connection *connection, unsigned int status_code,
				   struct MHD_Response *response)
{
	return mhd_loaded() ? mhd.MHD_queue_response(connection, status_code, response) : MHD_NO;
}

void MHD_destroy_response(struct MHD_Response *response)
{
	if (response && mhd_loaded())
		mhd.MHD_destroy_response(response);
}
